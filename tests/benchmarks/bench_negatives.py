"""Benchmark: time of each negative's ``apply`` as a multiple of ``images.clone()`` (float32).

Run from the repository root::

    python tests/benchmarks/bench_negatives.py                  # both sizes, on the CPU
    python tests/benchmarks/bench_negatives.py --quick          # fewer repeats
    python tests/benchmarks/bench_negatives.py --device cuda    # the CUDA kernel (the timed calls wait for the GPU)

For each batch size and negative the parameters are sampled once, outside the timed loop;
``neg.apply(images, params)`` is then timed through the fused kernel (NDA_STYLEGAN_OPS=auto)
and through the pure-PyTorch reference (NDA_STYLEGAN_OPS=reference); the variable is set
between calls, outside the timed call. Every measurement of a row is taken
in the same rounds, interleaved with ``clone()``, and the table prints medians and ratios
measured in this one run. A script, not a test (pytest does not collect ``bench_*.py``).
"""

import argparse
import os
import statistics
import sys
import time

import torch

SIZES = [(64, 3, 32, 32), (32, 3, 256, 256)]
NEGATIVES = ["jigsaw", "stitch", "mixup", "cutout", "cutmix", "rotate", "mosaic"]
TARGETS = {(64, 3, 32, 32): 5.0, (32, 3, 256, 256): 2.0}  # kernel apply / clone


def _time_once(fn, sync=None):
    if sync:
        sync()
    start = time.perf_counter()
    fn()
    if sync:
        sync()  # GPU work is asynchronous: time it to its end
    return time.perf_counter() - start


def _set_ops_mode(mode):
    if mode is None:
        os.environ.pop("NDA_STYLEGAN_OPS", None)
    else:
        os.environ["NDA_STYLEGAN_OPS"] = mode


def measure(fns, repeats, warmup=3, sync=None):
    """Median seconds of each callable, measured in interleaved rounds.

    ``fns``: name -> (NDA_STYLEGAN_OPS value or None, callable). The mode is set before each
    timed call, outside it, so the time is the call alone (what a user's ``neg.apply`` costs).
    """
    old = os.environ.get("NDA_STYLEGAN_OPS")
    try:
        for mode, fn in fns.values():
            _set_ops_mode(mode)
            for _ in range(warmup):
                fn()
        times = {k: [] for k in fns}
        for _ in range(repeats):
            for k, (mode, fn) in fns.items():
                _set_ops_mode(mode)
                times[k].append(_time_once(fn, sync))
    finally:
        _set_ops_mode(old)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (noisier)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here")
        return 1
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    if args.threads:
        torch.set_num_threads(args.threads)

    import nda_stylegan
    from nda_stylegan.ops import tile_kernel

    reason = tile_kernel.unsupported_reason(torch.zeros(1, 1, 1, 1, device=device))
    if reason is not None:
        print("cannot benchmark the kernel: %s" % reason)
        return 1

    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else "%d threads, CPU" % torch.get_num_threads())
    print("torch %s, %s, float32; medians; ratio = apply time / clone() time" % (torch.__version__, where))
    failed = []
    for size in SIZES:
        small = size[-1] <= 64
        repeats = (60 if small else 8) if args.quick else (300 if small else 25)
        gen = torch.Generator().manual_seed(0)
        images = (torch.rand(size, generator=gen) * 2 - 1).to(device)
        print("\n%s, %d repeats" % ("x".join(map(str, size)), repeats))
        print("| negative | clone (ms) | kernel (ms) | kernel / clone | reference (ms) | reference / clone |")
        print("|---|---|---|---|---|---|")
        for name in NEGATIVES:
            neg = nda_stylegan.make_negative(name)
            params = neg.sample(images, generator=gen)  # on the images' device, outside the timing
            fns = {
                "clone": (None, lambda: images.clone()),
                "kernel": ("auto", lambda: neg.apply(images, params)),
                "reference": ("reference", lambda: neg.apply(images, params)),
            }
            t = measure(fns, repeats, sync=sync)
            ratio_k = t["kernel"] / t["clone"]
            ratio_r = t["reference"] / t["clone"]
            print("| %s | %.3f | %.3f | %.1fx | %.3f | %.1fx |" % (
                name, t["clone"] * 1e3, t["kernel"] * 1e3, ratio_k, t["reference"] * 1e3, ratio_r))
            sys.stdout.flush()
            if ratio_k > TARGETS[size]:
                failed.append("%s at %s: %.1fx > %.0fx" % (name, "x".join(map(str, size)), ratio_k, TARGETS[size]))
    print("\ntargets (kernel / clone): within 5x at 64x3x32x32, within 2x at 32x3x256x256")
    print("missed: " + ("; ".join(failed) if failed else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
