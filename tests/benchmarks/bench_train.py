"""Seconds per kimg of the whole training loop on the CPU, with and without NDA, as ratios.

Not collected by pytest. Each measurement runs ``train.py`` twice in a fresh process, for a
short and a longer ``--kimg``, and takes ``(T_long - T_short) / (kimg_long - kimg_short)``: the
start-up (imports, dataset, network construction, the final snapshot and image grids) cancels
out. The variants of one architecture are interleaved, repetition by repetition, so that load
from other processes on the machine hits them alike; the ratio uses the median over repetitions.

    python tests/benchmarks/bench_train.py                 # cpu preset and cifar at batch 8
    python tests/benchmarks/bench_train.py --arch cpu --reps 3

Targets (docs): NDA weighted adds <= 35% per step, mixture <= 3%.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# arch -> (train.py options, batch, (short, long) step counts, default repetitions). For `cpu` the
# difference is a multiple of D's lazy-regularisation interval (16), so R1 is amortised as in a
# real run; `cifar` costs ~13 s a step here, so its 4 measured steps hold no R1 step (R1 is the
# same in every variant, so leaving it out can only make the NDA ratios larger, not smaller).
ARCHS = {
    "cpu": (["--cfg", "cpu"], 16, (16, 48), 2),
    "cifar": (["--cfg", "cifar"], 8, (2, 6), 1),
}
VARIANTS = {
    "baseline": [],
    "nda weighted": ["--nda", "jigsaw,stitch", "--nda-mode", "weighted"],
    "nda mixture": ["--nda", "jigsaw,stitch", "--nda-mode", "mixture"],
}


def run_once(arch_args, batch, steps, extra, outdir):
    kimg = steps * batch / 1000.0
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--outdir", outdir, "--batch", str(batch),
           "--kimg", repr(kimg), "--metrics", "none", "--snap", "1000", "--seed", "0"] + arch_args + extra
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit("train.py failed (%s):\n%s" % (" ".join(cmd), proc.stderr[-3000:]))
    return elapsed, kimg


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), action="append", help="architectures (default: all)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per variant (default: 2 cpu, 1 cifar)")
    args = parser.parse_args()
    archs = args.arch or ["cpu", "cifar"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as outdir:
        for arch in archs:
            arch_args, batch, (short, long_), reps = ARCHS[arch]
            per_kimg = {name: [] for name in VARIANTS}
            for rep in range(args.reps or reps):
                for name, extra in VARIANTS.items():
                    t_short, k_short = run_once(arch_args, batch, short, extra, outdir)
                    t_long, k_long = run_once(arch_args, batch, long_, extra, outdir)
                    per_kimg[name].append((t_long - t_short) / (k_long - k_short))
                    print("  %-6s rep %d %-13s %.1f s/kimg" % (arch, rep, name, per_kimg[name][-1]), flush=True)
            base = statistics.median(per_kimg["baseline"])
            for name in VARIANTS:
                med = statistics.median(per_kimg[name])
                rows.append((arch, batch, name, med, med / base))
    print()
    print("| arch | batch | variant | s/kimg (median) | ratio to baseline |")
    print("|---|---|---|---|---|")
    for arch, batch, name, med, ratio in rows:
        print("| %s | %d | %s | %.1f | %.3f |" % (arch, batch, name, med, ratio))


if __name__ == "__main__":
    main()
