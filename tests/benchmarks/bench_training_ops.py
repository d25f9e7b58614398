"""Benchmark of the trainer's custom ops: C++ (or CUDA) kernel vs pure-PyTorch reference.

Shapes are those the StyleGAN2 networks really call: the 32x32 ones of the ``cpu`` training
preset (batch 16, 32 channels at every resolution: G's up-filter after its x2 transposed
convolution, D's down-filter before its stride-2 convolution, D's 1x1 skip downsample, G's rgb
upsample), and a 256x256 network with config F's channels (128 at full resolution, batch 2).
For each op and shape it times the forward pass and forward + backward, both implementations in
the same run, alternating, and prints the median times and the speed-up (reference time /
kernel time).

    python tests/benchmarks/bench_training_ops.py [--repeats 7] [--threads N]
    python tests/benchmarks/bench_training_ops.py --device cuda [--dtype float16]   # the CUDA kernels
"""

import argparse
import math
import os
import statistics
import sys
import time

import torch

# Run from anywhere: training/ lives at the repository root, two levels up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from training.ops.bias_act import bias_act
from training.ops.kernels import kernels_ready
from training.ops.upfirdn2d import setup_filter, upfirdn2d



def cases(device, dtype):
    """(name, shape, op) where op(x, impl) -> tensor."""
    filt = setup_filter([1, 3, 3, 1], device=device).to(dtype)
    randn = lambda n: torch.randn(n, device=device, dtype=dtype)
    lrelu = lambda b: (lambda x, impl: bias_act(x, b, act="lrelu", clamp=256 * math.sqrt(2), impl=impl))
    lrelu_fc = lambda b: (lambda x, impl: bias_act(x, b, act="lrelu", impl=impl))
    # After a x2 transposed 3x3 convolution the filter crops 1 pixel per side (conv2d_resample's up path).
    up_filter = lambda x, impl: upfirdn2d(x, filt, padding=[1, 1, 1, 1], gain=4, impl=impl)
    # Before a stride-2 3x3 convolution the filter pads 2 pixels per side (down path).
    down_filter = lambda x, impl: upfirdn2d(x, filt, padding=2, impl=impl)
    upsample_rgb = lambda x, impl: upfirdn2d(x, filt, up=2, padding=[2, 1, 2, 1], gain=4, impl=impl)
    downsample_1x1 = lambda x, impl: upfirdn2d(x, filt, down=2, padding=1, impl=impl)
    return [
        ("bias_act lrelu+clamp   32px", [16, 32, 32, 32], lrelu(randn(32))),
        # impl="auto" sends inputs this small to the reference on CPU (see AUTO_MIN_CPU_NUMEL).
        ("bias_act lrelu mapping fc  ", [16, 512], lrelu_fc(randn(512))),
        ("upfirdn2d up-filter    32px", [16, 32, 33, 33], up_filter),
        ("upfirdn2d down-filter  32px", [16, 32, 32, 32], down_filter),
        ("upfirdn2d upsample rgb 32px", [16, 3, 16, 16], upsample_rgb),
        ("upfirdn2d downsample   32px", [16, 32, 32, 32], downsample_1x1),
        ("bias_act lrelu+clamp  256px", [2, 128, 256, 256], lrelu(randn(128))),
        ("upfirdn2d up-filter   256px", [2, 128, 257, 257], up_filter),
        ("upfirdn2d down-filter 256px", [2, 128, 256, 256], down_filter),
        ("upfirdn2d upsample rgb256px", [2, 3, 128, 128], upsample_rgb),
    ]


def _sync(device):
    if device.type == "cuda":  # GPU work is asynchronous: time it to its end
        torch.cuda.synchronize(device)


def timed(fn, x, impl, backward):
    xi = x.detach().requires_grad_(backward)
    _sync(x.device)
    t0 = time.perf_counter()
    y = fn(xi, impl)
    if backward:
        y.backward(torch.ones_like(y))
    _sync(x.device)
    return time.perf_counter() - t0


def measure(fn, x, backward, repeats):
    times = {"reference": [], "kernel": []}
    for impl in times:  # warm-up (and the kernel's first build)
        timed(fn, x, impl, backward)
    for _ in range(repeats):
        for impl in times:
            times[impl].append(timed(fn, x, impl, backward))
    return {impl: statistics.median(t) for impl, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                        help="float16: the CUDA kernels' half path (no CPU kernel has one)")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    if device.type == "cpu" and dtype == torch.float16:
        raise SystemExit("--dtype float16 needs --device cuda (the CPU kernels are float32/float64)")
    if args.threads:
        torch.set_num_threads(args.threads)
    for op in ("bias_act", "upfirdn2d"):
        if not kernels_ready(op):
            raise SystemExit("the %s kernel is unavailable (build failed or NDA_STYLEGAN_OPS=reference)" % op)
    torch.manual_seed(0)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "%d threads" % torch.get_num_threads()
    print("torch %s, %s, %s, median of %d" % (torch.__version__, where, args.dtype, args.repeats))
    print("%-28s %-10s %11s %11s %8s" % ("case", "pass", "ref ms", "kernel ms", "speedup"))
    ratios = []
    for name, shape, fn in cases(device, dtype):
        x = torch.randn(shape, device=device, dtype=dtype)
        for backward in (False, True):
            t = measure(fn, x, backward, args.repeats)
            ratio = t["reference"] / t["kernel"]
            ratios.append(ratio)
            print("%-28s %-10s %11.3f %11.3f %7.2fx" % (name, "fwd+bwd" if backward else "fwd",
                                                     1e3 * t["reference"], 1e3 * t["kernel"], ratio))
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print("geometric mean speed-up: %.2fx (min %.2fx)" % (geo, min(ratios)))


if __name__ == "__main__":
    main()
