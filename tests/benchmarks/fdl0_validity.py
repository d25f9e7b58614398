"""Validity table of fdl0_10k_full (not collected by pytest): the metric between disjoint halves of
the built-in data (the floor), against jigsaw/stitch negatives, blur and noise at three strengths,
and against the main job's first, middle and last snapshot; plus its Spearman rank correlation
with `swd` over all of that run's snapshots.

    python tests/benchmarks/fdl0_validity.py                 # trains the README's main job first
    python tests/benchmarks/fdl0_validity.py --run runs/00000-builtin-cpu-nda-jigsaw-stitch
    python tests/benchmarks/fdl0_validity.py --layers        # the layer/resolution comparison

Every row is the registered metric itself (``registry.compute_metric("fdl0_10k_full", ...)``) with
the first half of the built-in faces (items 0..24999) as "the dataset"; image sets that are not a
generator's (held-out faces, their negatives and corruptions, items 25000..) go through a generator
that replays them. ``--layers`` repeats the degradation and snapshot rows for other network stages
and input sizes on smaller sets (2000 vs 2000), to show why the protocol reads stage 5 at 32 px.
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py and calc_metrics.py set it

import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
import torch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from metrics import corruptions, fdl0, registry  # noqa: E402
from metrics.features import FeatureStats, generate_images  # noqa: E402
from metrics.frechet import frechet_distance_psd  # noqa: E402
from nda_stylegan import make_negative, sample_data  # noqa: E402
from training.snapshot import load_network_file  # noqa: E402

HALF = 25000
REFERENCE = dict(class_name="training.dataset.BuiltinDataset", size=HALF, resolution=32)  # items 0..24999
BLUR_SIGMAS = (0.5, 1.0, 2.0)  # px
NOISE_SIGMAS = (0.02, 0.05, 0.1)  # of the [0, 1] range


class Replay(torch.nn.Module):
    """A "generator" that hands out a fixed uint8 image set in order (as [-1, 1] floats that the
    metric quantises back to exactly these bytes)."""

    def __init__(self, images):
        super().__init__()
        self.images, self.next = images, 0
        self.z_dim, self.c_dim, self.img_resolution = 1, 0, images.shape[-1]

    def forward(self, z, c, **kwargs):
        out = self.images[self.next:self.next + z.shape[0]].float() / 127.5 - 1
        self.next += z.shape[0]
        return out


def held_out_faces(n):
    images, _ = sample_data.render_faces(np.arange(HALF, HALF + n))
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def degraded_sets(images, seed=0):
    """name -> uint8 images: the held-out faces, their negatives, blurred and noisy copies."""
    g = torch.Generator().manual_seed(seed)
    x = images.float() / 127.5 - 1

    def to_uint8(y):
        return ((y + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)

    sets = {"held-out half (the floor)": images}
    for name in ("jigsaw", "stitch"):
        negative = make_negative(name)
        sets["%s negatives" % name] = to_uint8(negative.apply(x, negative.sample(x, g)))
    for sigma in BLUR_SIGMAS:
        blur = corruptions.GaussianBlur(sigma=sigma)
        sets["Gaussian blur, sigma %.1f px" % sigma] = to_uint8(blur.apply(x, blur.sample(x, g)))
    for sigma in NOISE_SIGMAS:
        noise = corruptions.GaussianNoise(sigma=sigma)
        sets["Gaussian noise, sigma %.2f" % sigma] = to_uint8(noise.apply(x, noise.sample(x, g)))
    return sets


def snapshots_of(run_dir):
    paths = sorted(glob.glob(os.path.join(run_dir, "network-snapshot-*.pkl")))
    if not paths:
        raise SystemExit("no network-snapshot-*.pkl in %s" % run_dir)
    return paths


def kimg_of(path):
    return int(os.path.basename(path)[len("network-snapshot-"):-len(".pkl")])


def train_main_job(outdir):
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--nda=jigsaw,stitch", "--outdir", outdir, "--metrics", "none"]
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return sorted(glob.glob(os.path.join(outdir, "*-builtin-cpu-nda-jigsaw-stitch")))[-1]


def monotone(values):
    return all(a < b for a, b in zip(values, values[1:]))


def validity_table(run_dir, num, swd_images, cache):
    def fdl0_of(G, n=num):
        return registry.compute_metric("fdl0_10k_full", G, REFERENCE, "cpu", cache_dir=cache, num_gen=n)["results"][
            "fdl0_10k_full"]

    rows = [(name, fdl0_of(Replay(images))) for name, images in degraded_sets(held_out_faces(num)).items()]
    floor = rows[0][1]
    paths = snapshots_of(run_dir)
    per_snapshot = []
    for path in paths:
        G = load_network_file(path)["G_ema"]
        swd = registry.compute_metric("swd", G, REFERENCE, "cpu", cache_dir=False, num_images=swd_images)
        per_snapshot.append((kimg_of(path), fdl0_of(G), swd["results"]["swd_avg"]))
        print("  snapshot kimg %d: fdl0 %.1f, swd_avg %.2f" % per_snapshot[-1], flush=True)
    for i in (0, len(per_snapshot) // 2, len(per_snapshot) - 1):
        rows.append(("main job, snapshot at %d kimg" % per_snapshot[i][0], per_snapshot[i][1]))

    print()
    print("fdl0_10k_full against the first half of the built-in faces (%d images), %d images per row" % (HALF, num))
    print()
    print("| images compared with the reference half | fdl0 | x floor |")
    print("|---|---|---|")
    for name, value in rows:
        print("| %s | %.1f | %.0f |" % (name, value, value / floor))
    values = dict(rows)
    blur = [values["Gaussian blur, sigma %.1f px" % s] for s in BLUR_SIGMAS]
    noise = [values["Gaussian noise, sigma %.2f" % s] for s in NOISE_SIGMAS]
    print()
    print("monotone in blur strength: %s; in noise strength: %s" % (monotone(blur), monotone(noise)))
    rho, p = scipy.stats.spearmanr([s[1] for s in per_snapshot], [s[2] for s in per_snapshot])
    print("Spearman rank correlation with swd_avg (%d images) over the %d snapshots: %.2f (p = %.3f)"
          % (swd_images, len(per_snapshot), rho, p))
    print("| kimg | " + " | ".join(str(s[0]) for s in per_snapshot) + " |")
    print("|---|" + "---|" * len(per_snapshot))
    print("| fdl0 | " + " | ".join("%.0f" % s[1] for s in per_snapshot) + " |")
    print("| swd_avg | " + " | ".join("%.1f" % s[2] for s in per_snapshot) + " |")


def layer_table(run_dir, num, resolutions=(32, 64)):
    """The same rows for each stage (and the head) at each input size, 2000 vs 2000 images."""
    detector = fdl0.load_detector("cpu")
    stages = [2, 3, 4, 5, 6, 7, None]
    reference = torch.from_numpy(sample_data.make_faces(num)[0]).permute(0, 3, 1, 2).contiguous()
    sets = degraded_sets(held_out_faces(num))
    paths = snapshots_of(run_dir)
    for i in (0, len(paths) // 4, len(paths) // 2, 3 * len(paths) // 4, len(paths) - 1):
        G = load_network_file(paths[i])["G_ema"].eval()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            sets["snapshot at %d kimg" % kimg_of(paths[i])] = torch.cat(
                [generate_images(G, None, 250, "cpu", g) for _ in range(num // 250)])
    for resolution in resolutions:
        def stats(images):
            out = {stage: FeatureStats(capture_mean_cov=True) for stage in stages}
            with torch.no_grad():
                for batch in images.split(250):
                    x = fdl0.preprocess(batch, resolution).contiguous(memory_format=torch.channels_last)
                    for stage in stages:
                        out[stage].append(detector.net.features(x, stage).numpy())
            return {stage: s.get_mean_cov() for stage, s in out.items()}

        ref = stats(reference)
        print()
        print("%d px input, %d vs %d images; columns: the output of stage 2..7 and the head, averaged over space"
              % (resolution, num, num))
        print()
        print("| set | " + " | ".join("stage %d" % s if s else "head" for s in stages) + " |")
        print("|---|" + "---|" * len(stages))
        for name, images in sets.items():
            st = stats(images)
            print("| %s | " % name + " | ".join("%.3g" % frechet_distance_psd(*st[s], *ref[s]) for s in stages) + " |",
                  flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="a main-job run folder [default: train one into --outdir]")
    ap.add_argument("--outdir", default="runs", help="where to train the main job when --run is not given")
    ap.add_argument("--num", type=int, default=10000, help="images per row (generated or held-out)")
    ap.add_argument("--swd-images", type=int, default=None, help="swd sample count [default: the registry's]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", action="store_true", help="compare stages and input sizes instead (2000 images)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run_dir = args.run or train_main_job(args.outdir)
    print("run: %s" % run_dir, flush=True)
    if args.layers:
        layer_table(run_dir, 2000)
        return
    swd_images = args.swd_images or registry.SWD_NUM_IMAGES
    with tempfile.TemporaryDirectory() as cache:
        validity_table(run_dir, args.num, swd_images, cache)


if __name__ == "__main__":
    main()
