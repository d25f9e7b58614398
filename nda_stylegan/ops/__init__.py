"""Custom ops: C++ (CPU) and CUDA kernels built on first use, each with a pure-PyTorch reference."""
