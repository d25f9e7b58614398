"""Run-to-run spread of `swd` by sample count (not collected by pytest): the metric on one
snapshot with several seeds (each seed draws other latents, patches and directions) per
``--num-images``, printing mean, standard deviation and time per evaluation.

    python tests/benchmarks/swd_stability.py --network runs/.../network-snapshot-000030.pkl \\
        [--sizes 16384:2,4096:3,2048:3] [--threads 2]

``--sizes`` lists ``count:seeds`` pairs. The registry's default count is chosen from this output:
the smallest count whose spread stays small next to the differences between snapshots.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py and calc_metrics.py set it

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from metrics import registry  # noqa: E402
from training.snapshot import load_network_file  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--network", required=True)
    ap.add_argument("--sizes", default="16384:2,4096:3,2048:3")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    network = load_network_file(args.network)
    G, data = network["G_ema"], dict(network["training_set_kwargs"])
    print("swd_avg on %s, %d threads" % (os.path.basename(args.network), args.threads))
    print("| images | seeds | swd_avg mean | std | std / mean | s per evaluation |")
    print("|---|---|---|---|---|---|")
    for item in args.sizes.split(","):
        count, seeds = (int(v) for v in item.split(":"))
        values, times = [], []
        for seed in range(seeds):
            t0 = time.perf_counter()
            result = registry.compute_metric("swd", G, data, "cpu", cache_dir=False, seed=seed, num_images=count)
            times.append(time.perf_counter() - t0)
            values.append(result["results"]["swd_avg"])
        print("| %d | %d | %.2f | %.2f | %.1f%% | %.0f |" % (count, seeds, np.mean(values), np.std(values, ddof=1),
                                                          100 * np.std(values, ddof=1) / np.mean(values),
                                                          np.mean(times)), flush=True)
        print("  values: %s" % ", ".join("%.2f" % v for v in values), flush=True)


if __name__ == "__main__":
    main()
