"""The trainer's custom ops: ``bias_act`` and ``upfirdn2d`` (C++ CPU and CUDA kernels built on
first use through ``nda_stylegan.ops.build``, each with a pure-PyTorch reference), and
``conv2d_resample`` built on top of them."""
