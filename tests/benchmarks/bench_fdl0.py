"""Benchmark (not collected by pytest): one fdl0_10k_full evaluation on the CPU, as calc_metrics.py
runs it: 10k images from a `cpu`-preset generator vs up to 10k real images of the built-in data
(32 px), first with the real statistics computed, then with them cached (the target: at most 90 s
on 2 cores).

    python tests/benchmarks/bench_fdl0.py [--network SNAPSHOT] [--threads 2] [--max-real 10000]

Without --network the generator is a freshly built `cpu`-preset network (the same cost per image as
a trained one).
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py and calc_metrics.py set it

import torch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from metrics import fdl0, registry  # noqa: E402
from metrics.features import generate_images  # noqa: E402

DATA = dict(class_name="training.dataset.BuiltinDataset", resolution=32)


def cpu_preset_generator():
    from training import options
    from training.util import construct_class_by_name

    _, c, info = options.build_config(cfg="cpu", metrics=[])
    torch.manual_seed(0)
    return construct_class_by_name(**c["G_kwargs"], c_dim=0, img_resolution=info.resolution,
                                   img_channels=info.num_channels).eval().requires_grad_(False)


def per_image_ms(fn, n, batch):
    fn(batch)  # warm-up (op builds, allocations)
    t0 = time.perf_counter()
    for _ in range(n // batch):
        fn(batch)
    return (time.perf_counter() - t0) / (n // batch * batch) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--network", help="a snapshot (.pkl/.pt) to take G from [default: a fresh cpu-preset G]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-gen", type=int, default=10000)
    ap.add_argument("--max-real", type=int, default=10000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.network:
        from training.snapshot import load_network_file

        G = load_network_file(args.network)["G_ema"]
    else:
        G = cpu_preset_generator()
    print("CPU, %d threads; fdl0 protocol: %d px, stage %d (%d features); %d generated vs %d real"
          % (args.threads, fdl0.RESOLUTION, fdl0.FEATURE_STAGE, fdl0.FEATURE_DIM, args.num_gen, args.max_real))

    generator = torch.Generator().manual_seed(0)
    detector = fdl0.load_detector("cpu")
    sample = generate_images(G, None, 64, "cpu", generator)
    g_ms = per_image_ms(lambda b: generate_images(G, None, b, "cpu", generator), 1024, 64)
    d_ms = per_image_ms(lambda b: detector(sample[:b]), 1024, 64)
    print("per image: generator %.2f ms, detector %.2f ms (batches of 64)" % (g_ms, d_ms))

    with tempfile.TemporaryDirectory() as cache:
        times = []
        for label in ("real statistics computed", "real statistics cached"):
            t0 = time.perf_counter()
            result = registry.compute_metric("fdl0_10k_full", G, DATA, "cpu", cache_dir=cache, num_gen=args.num_gen,
                                             max_real=args.max_real)
            times.append(time.perf_counter() - t0)
            print("%-26s %6.1f s   %s" % (label, times[-1], registry.summary_line(result)), flush=True)
    print("target: <= 90 s with cached statistics: %s (%.1f s)" % ("met" if times[1] <= 90 else "MISSED", times[1]))


if __name__ == "__main__":
    main()
