"""Checks the fork hook and NDALoss against real checkouts of NVlabs' stylegan2-ada-pytorch and
stylegan3, on CPU. Not part of the test suite: it needs the two repositories and their own
requirements (requests, psutil, ...), which nothing here downloads. The suite runs the same checks
on fixtures shaped like the forks (tests/test_patching.py, tests/test_nda_loss.py,
tests/test_host_pickles.py); this script is the evidence that the real files behave alike.

    pip install requests psutil "setuptools<81"     # what the forks' own train.py files import
    python tests/check_real_forks.py --sg2ada ~/stylegan2-ada-pytorch --sg3 ~/stylegan3

Every check prints PASS or FAIL with what it compared; the exit code is 1 when one failed. Each
fork is copied to a temporary folder first: the checkouts are never modified.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NDA_OPTIONS = ("--nda", "--nda-lambda", "--nda-mode", "--nda-loss", "--nda-start-kimg")

# The dry-run command line of each fork's train.py (every option it requires), without --nda.
DRY_RUN_ARGS = {
    "sg2ada": ["--gpus", "1"],
    "sg3": ["--cfg", "stylegan2", "--gpus", "1", "--batch", "8", "--gamma", "1"],
}

# Runs inside a fork's folder (its training/ and torch_utils/ on the path): NDALoss around the
# fork's own StyleGAN2Loss and networks, D's gradient in D's main phase against the paper's
# formula computed from scratch with the fork's G and D, at lambda 1 (NDA's term weighs nothing:
# the fork's own gradient) and at the paper's 0.25. Negatives: vertical flips (a fixed, seedless
# stand-in, so the expected gradient can be computed independently).
LOSS_CHECK = textwrap.dedent("""
    import json, sys
    import torch
    import torch.nn.functional as F
    from nda_stylegan.loss import NDALoss

    kind = sys.argv[1]
    torch.manual_seed(0)  # the networks' initial weights
    if kind == "sg2ada":
        from training.networks import Generator, Discriminator
        G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                      mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=8))
        host = dict(G_mapping=G.mapping, G_synthesis=G.synthesis)
        step = dict(sync=True, gain=2.0)
    else:
        from training.networks_stylegan2 import Generator, Discriminator
        G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                      mapping_kwargs=dict(num_layers=2), channel_base=64, channel_max=8)
        host = dict(G=G)
        step = dict(gain=2.0, cur_nimg=0)
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=64, channel_max=8,
                      epilogue_kwargs=dict(mbstd_group_size=2))
    G.requires_grad_(False)

    class FlipNegatives(object):
        def __call__(self, images, labels=None, generator=None):
            return images.flip(2), labels, torch.ones(images.shape[0], dtype=torch.bool)

    g = torch.Generator().manual_seed(1)
    real = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    z = torch.randn(4, 8, generator=g)
    c = torch.zeros(4, 0)

    def d_grads():
        return [p.grad.detach().clone() for p in D.parameters()]

    def zero():
        for p in D.parameters():
            p.grad = None

    def with_nda_loss(lam):
        zero()
        loss = NDALoss("training.loss.StyleGAN2Loss", nda_spec=FlipNegatives(), nda_lambda=lam,
                       device=torch.device("cpu"), D=D, r1_gamma=0, style_mixing_prob=0, pl_weight=0, **host)
        D.requires_grad_(True)
        torch.manual_seed(7)  # G's noise inputs
        loss.accumulate_gradients(phase="Dmain", real_img=real, real_c=c, gen_z=z, gen_c=c, **step)
        return d_grads()

    def from_the_formula(lam):
        zero()
        D.requires_grad_(True)
        torch.manual_seed(7)
        with torch.no_grad():
            gen = G.synthesis(G.mapping(z, c))
        l_real = F.softplus(-D(real, c)).mean()
        l_fake = F.softplus(D(gen, c)).mean()
        l_nda = F.softplus(D(real.flip(2), c)).mean()
        ((l_real + lam * l_fake + (1 - lam) * l_nda) * 2.0).backward()
        return d_grads()

    def rel(got, want):
        return max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-12)) for a, b in zip(got, want))

    out = {}
    for lam in (1.0, 0.25):
        out[str(lam)] = rel(with_nda_loss(lam), from_the_formula(lam))
    # The check can fail: the two lambdas' gradients are far apart.
    out["lambdas apart"] = rel(from_the_formula(0.25), from_the_formula(1.0))
    print(json.dumps(out))
""")


class Report(object):
    def __init__(self):
        self.failed = 0

    def check(self, ok, what):
        print("%s  %s" % ("PASS" if ok else "FAIL", what), flush=True)
        self.failed += not ok
        return ok


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def listing(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
                  if "__pycache__" not in d)


def run(args, cwd, env, merge=True):
    """``args`` to its end; stderr joins stdout unless ``merge`` is False (torch's warnings carry times)."""
    return subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if merge else subprocess.PIPE, universal_newlines=True, timeout=900)


def git_commit(path):
    try:
        return subprocess.check_output(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                                       universal_newlines=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "(not a git checkout)"


def tiny_dataset(folder):
    """Eight 32x32 RGB PNGs: enough for a fork's dry run, which opens the dataset."""
    import numpy as np
    from PIL import Image
    os.makedirs(folder)
    rng = np.random.RandomState(0)
    for i in range(8):
        Image.fromarray(rng.randint(0, 256, (32, 32, 3), dtype=np.uint8)).save(os.path.join(folder, "%d.png" % i))
    return folder


def dry_run(root, kind, data, outdir, env, extra=()):
    """The fork's --dry-run output and the training options it printed (a JSON object)."""
    args = [sys.executable, "train.py", "--outdir", outdir, "--data", data, "--dry-run"] + DRY_RUN_ARGS[kind] + list(extra)
    result = run(args, root, env, merge=False)
    text = result.stdout
    start = text.find("{")
    end = text.rfind("\n}") + 2
    try:
        options = json.loads(text[start:end]) if start >= 0 and end > start else None
    except ValueError:
        options = None
    return result.returncode, text, options


def check_fork(kind, checkout, work, report, env):
    name = {"sg2ada": "stylegan2-ada-pytorch", "sg3": "stylegan3"}[kind]
    print("\n== %s at %s (%s)" % (name, git_commit(checkout), checkout), flush=True)
    root = os.path.join(work, kind)
    shutil.copytree(checkout, root, ignore=shutil.ignore_patterns(".git"))
    original_files, original_sha = listing(root), sha256(os.path.join(root, "train.py"))
    data = os.path.join(work, "data")
    if not os.path.isdir(data):
        tiny_dataset(data)
    outdir = os.path.join(work, "runs-" + kind)

    code, before_text, before = dry_run(root, kind, data, outdir, env)
    if not report.check(code == 0 and before is not None, "%s: the unpatched fork's dry run prints its options" % kind):
        print(before_text[-2000:])
        print(run([sys.executable, "train.py", "--help"], root, env).stdout[-2000:])
        return

    patched = run([sys.executable, "-m", "nda_stylegan.cli", "patch", root], REPO, env)
    report.check(patched.returncode == 0, "%s: nda-stylegan patch applies%s" % (kind, "" if patched.returncode == 0 else ": " + patched.stdout.strip()))

    helped = run([sys.executable, "train.py", "--help"], root, env)
    missing = [opt for opt in NDA_OPTIONS if opt + " " not in helped.stdout]
    report.check(helped.returncode == 0 and not missing,
                 "%s: train.py --help lists %s%s" % (kind, ", ".join(NDA_OPTIONS), " (missing: %s)" % missing if missing else ""))

    code, text, _options = dry_run(root, kind, data, outdir, env)
    report.check(code == 0 and text == before_text,
                 "%s: without --nda the patched fork's dry run prints exactly what the unpatched one did" % kind)

    code, text, options = dry_run(root, kind, data, outdir, env, ["--nda=jigsaw,stitch"])
    loss = (options or {}).get("loss_kwargs", {})
    want = {"class_name": "nda_stylegan.loss.NDALoss", "nda_inner_class_name": "training.loss.StyleGAN2Loss",
            "nda_spec": "jigsaw,stitch"}
    rest_same = options is not None and {k: v for k, v in options.items() if k not in ("loss_kwargs", "run_dir")} == \
        {k: v for k, v in before.items() if k not in ("loss_kwargs", "run_dir")}
    host_kwargs_kept = all(loss.get(k) == v for k, v in before["loss_kwargs"].items() if k != "class_name")
    report.check(code == 0 and all(loss.get(k) == v for k, v in want.items()) and host_kwargs_kept,
                 "%s: --nda=jigsaw,stitch wraps the fork's loss: loss_kwargs %s" % (kind, json.dumps(loss, sort_keys=True)))
    report.check(rest_same, "%s: --nda changes nothing else in the training options" % kind)
    run_dir = str((options or {}).get("run_dir", ""))
    report.check(run_dir.endswith("-nda-jigsaw-stitch"), "%s: the run is named for its negatives: %s" % (kind, os.path.basename(run_dir)))

    loss_check = run([sys.executable, "-c", LOSS_CHECK, kind], root, dict(env, PYTHONPATH=os.pathsep.join(
        [root, env.get("PYTHONPATH", "")])))
    try:
        errors = json.loads(loss_check.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        errors = None
    if errors is None or loss_check.returncode != 0:
        report.check(False, "%s: NDALoss around the fork's StyleGAN2Loss ran\n%s" % (kind, loss_check.stdout[-3000:]))
    else:
        apart = errors.pop("lambdas apart")
        for lam, err in sorted(errors.items()):
            report.check(err < 1e-5, "%s: NDALoss around the fork's own StyleGAN2Loss, networks and ops, D's main "
                                     "phase at lambda %s: D's gradient equals the paper's formula (largest relative "
                                     "difference %.1e)" % (kind, lam, err))
        report.check(apart > 1e-2, "%s: the formula's gradients at lambda 0.25 and 1 differ by %.2f (relative), so "
                                   "the two checks above can fail" % (kind, apart))

    reverted = run([sys.executable, "-m", "nda_stylegan.cli", "patch", root, "--revert"], REPO, env)
    report.check(reverted.returncode == 0 and sha256(os.path.join(root, "train.py")) == original_sha
                 and listing(root) == original_files,
                 "%s: --revert gives back the identical train.py and no file of ours is left" % kind)


def check_pickles(checkout, report, env):
    print("\n== network pickles across stylegan2-ada-pytorch at %s" % git_commit(checkout), flush=True)
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_host_pickles.py"],
                 REPO, dict(env, NDA_STYLEGAN_HOST_CHECKOUT=checkout))
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    report.check(result.returncode == 0, "tests/test_host_pickles.py with NDA_STYLEGAN_HOST_CHECKOUT set "
                                         "(the fixture and the real checkout, both directions): %s" % summary)
    if result.returncode != 0:
        print(result.stdout[-3000:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sg2ada", help="a checkout of NVlabs/stylegan2-ada-pytorch")
    parser.add_argument("--sg3", help="a checkout of NVlabs/stylegan3")
    args = parser.parse_args(argv)
    if not (args.sg2ada or args.sg3):
        parser.error("give --sg2ada PATH and/or --sg3 PATH (checkouts of the forks)")
    import torch
    print("torch %s, Python %s, nda-stylegan at %s" % (torch.__version__, sys.version.split()[0], git_commit(REPO)))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", NDA_STYLEGAN_OPS="reference")
    report = Report()
    work = tempfile.mkdtemp(prefix="nda-real-forks-")
    try:
        for kind, checkout in (("sg2ada", args.sg2ada), ("sg3", args.sg3)):
            if checkout:
                check_fork(kind, os.path.abspath(os.path.expanduser(checkout)), work, report, env)
        if args.sg2ada:
            check_pickles(os.path.abspath(os.path.expanduser(args.sg2ada)), report, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n%s" % ("all checks passed" if not report.failed else "%d check(s) FAILED" % report.failed))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
