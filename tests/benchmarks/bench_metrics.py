"""Benchmark (not collected by pytest): feature extraction with the stand-in detectors, SWD, and
FID's final sqrtm, on the CPU.

    python tests/benchmarks/bench_metrics.py [--images 1024] [--res 32] [--threads 2]

The stand-ins are tiny (pooling + one matrix product), so their images/second measure the
pipeline (uint8 batches in, features out, float64 mean/cov accumulation), not Inception-v3.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for folder in (REPO, os.path.join(REPO, "tests")):  # the checkout's packages and the test stand-ins
    if folder not in sys.path:
        sys.path.insert(0, folder)

from metrics import detectors, swd  # noqa: E402
from metrics.features import FeatureStats  # noqa: E402
from metrics.frechet import frechet_distance  # noqa: E402
from standin_detectors import save_standin_detectors  # noqa: E402


def timed(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sqrtm-dim", type=int, default=512, help="covariance width for the sqrtm timing (FID uses 2048)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images = torch.randint(0, 256, [args.images, 3, args.res, args.res], dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    print("CPU, %d threads, %d images at %d px, batch %d" % (args.threads, args.images, args.res, args.batch))

    os.environ[detectors.ENV_STANDINS] = "1"  # read the stand-ins, never the real files
    with tempfile.TemporaryDirectory() as folder:
        save_standin_detectors(folder)
        for name, kwargs, stats_kw in (("inception", dict(return_features=True), dict(capture_mean_cov=True)),
                                       ("inception", dict(no_output_bias=True), dict(capture_all=True)),
                                       ("vgg16", dict(return_features=True), dict(capture_all=True))):
            det = detectors.load_detector(name, detectors_dir=folder)

            def extract():
                stats = FeatureStats(**stats_kw)
                with torch.no_grad():
                    for batch in images.split(args.batch):
                        stats.append(det(batch, **kwargs).numpy())
                return stats

            seconds = timed(extract)
            print("stand-in %-9s %-22s %8.0f images/s  (%s)" % (name, ",".join(kwargs), args.images / seconds,
                                                               ",".join(stats_kw)))

    n = min(args.images, 512)
    a, b = images[:n], images[n:2 * n] if args.images >= 2 * n else images[:n].flip(0)
    for patches, dirs in ((128, 128), (32, 64)):
        seconds = timed(lambda: swd.swd_between(a, b, patches_per_image=patches, dirs_per_repeat=dirs), repeats=1)
        print("swd %d vs %d images, %d patches/image, 4x%d directions: %.2f s (%.0f images/s per set)"
              % (n, n, patches, dirs, seconds, n / seconds))

    # SWD's inner step: sorting projections of 65536 descriptors onto 128 directions.
    proj = torch.randn([128, 65536], generator=torch.Generator().manual_seed(1))
    t_torch = timed(lambda: proj.sort(dim=1))
    t_swd = timed(lambda: swd.sort_rows(proj))
    print("sort 128 x 65536 projections: torch.sort %.3f s, swd.sort_rows %.3f s, ratio %.1fx"
          % (t_torch, t_swd, t_torch / t_swd))

    d = args.sqrtm_dim
    x = np.random.RandomState(0).randn(2 * d, d)
    cov = np.cov(x, rowvar=False)
    seconds = timed(lambda: frechet_distance(np.zeros(d), cov, np.ones(d), cov * 1.1), repeats=1)
    print("FID final step (sqrtm) at width %d: %.2f s" % (d, seconds))


if __name__ == "__main__":
    main()
