"""Bad input to the command-line tools, as a new user types it: each case runs the real command in
a subprocess and must end with exit code 2, exactly one ``Error:`` line naming the problem and the
fix, no traceback, and nothing written (no run folder, no image, no edited file)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from host_forks import copy_fork

REPO = Path(__file__).resolve().parents[1]


def _env(**extra):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["NDA_STYLEGAN_OPS"] = "reference"  # no op build inside a test's time budget
    env.update(extra)
    return env


def _run(cmd, env=None, cwd=REPO):
    proc = subprocess.run([sys.executable] + [str(a) for a in cmd], cwd=str(cwd), env=env or _env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    return proc.returncode, proc.stdout.decode(errors="replace")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A real run of 0.032 kimg (two steps of batch 16, about 10 s): its snapshot holds the run's
    progress, so resuming from it with a shorter --kimg has nothing left to do."""
    outdir = tmp_path_factory.mktemp("trained")
    code, out = _run(["train.py", "--outdir", outdir, "--kimg", "0.032", "--metrics", "none"])
    assert code == 0, out
    (run_dir,) = outdir.iterdir()
    return sorted(run_dir.glob("network-snapshot-*.pkl"))[-1]  # the last (names sort in training order)


def _fork(tmp, host="sg2ada"):
    return copy_fork(host, tmp / "fork")


def _complete_hook(tmp):
    """A fork with the hook made by hand: the patch's pieces, without the patch's marks."""
    from nda_stylegan.patching.edit import apply_hook
    from nda_stylegan.patching.hookfile import TAG, read_hook

    root = _fork(tmp)
    train = root / "train.py"
    text = apply_hook(train.read_text(), read_hook("stylegan2-ada-pytorch"), "stylegan2-ada-pytorch")
    train.write_text(text.replace(TAG, "plugins, added by hand"))
    return root


def _without_line(path, words):
    lines = path.read_text().splitlines(True)
    kept = [line for line in lines if words not in line]
    assert len(kept) == len(lines) - 1, words
    path.write_text("".join(kept))


def case_train(*args):
    def make(tmp, run):
        return ["train.py", "--outdir", tmp / "runs", "--kimg", "0.016", "--metrics", "none"] + list(args), {}
    return make


def case_resume_past_kimg(tmp, run):
    return ["train.py", "--outdir", tmp / "runs", "--metrics", "none", "--resume", run(), "--kimg", "0.016"], {}


def case_generate(*args, **env):
    def make(tmp, run):
        return ["generate.py", "--network", run(), "--outdir", tmp / "images"] + list(args), env
    return make


def case_generate_on_the_run_folder(tmp, run):
    return ["generate.py", "--network", run().parent, "--seeds", "0", "--outdir", tmp / "images"], {}


def case_offline_name(cmd):
    def make(tmp, run):  # a published name with no network and an empty cache
        return cmd(tmp), dict(NDA_STYLEGAN_NETWORKS_CACHE=str(tmp / "cache"), https_proxy="http://127.0.0.1:9",
                              HTTPS_PROXY="http://127.0.0.1:9")
    return make


def case_preview(out):
    def make(tmp, run):
        return ["-m", "nda_stylegan.cli", "preview", "--num", "2", "--out", out.format(tmp=tmp)], {}
    return make


def case_patch_partial_hand_made_hook(tmp, run):
    root = _complete_hook(tmp)
    _without_line(root / "train.py", "_trainer_plugin_values = _trainer_plugins_pop(")
    return ["-m", "nda_stylegan.cli", "patch", root], {}


def case_patch_partial_patched_hook(tmp, run):
    root = _fork(tmp, "sg3")
    code, out = _run(["-m", "nda_stylegan.cli", "patch", root])
    assert code == 0, out
    _without_line(root / "train.py", "desc += _trainer_plugins_apply(")
    return ["-m", "nda_stylegan.cli", "patch", root], {}


def case_dataset_tool(dest, *args, existing=False):
    def make(tmp, run):
        if existing:
            (tmp / dest).write_bytes(b"a dataset made earlier")
        return ["dataset_tool.py", "--source", "builtin", "--max-images", "2", "--dest", tmp / dest] + list(args), {}
    return make


def case_dataset_tool_photos(*args):
    """A folder of photos of any size, as a user has them."""
    def make(tmp, run):
        from PIL import Image

        (tmp / "photos").mkdir()
        for i in range(2):
            Image.new("RGB", (40, 30), (i * 90, 40, 200)).save(str(tmp / "photos" / ("p%d.jpg" % i)))
        return ["dataset_tool.py", "--source", tmp / "photos", "--dest", tmp / "photos.zip"] + list(args), {}
    return make


def case_train_auroc_on_all_data(tmp, run):
    """nda_auroc at snapshot time on a --data folder the run trains on whole: no held-out images."""
    from PIL import Image

    (tmp / "faces").mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (i * 60, 40, 200)).save(str(tmp / "faces" / ("f%d.png" % i)))
    return ["train.py", "--outdir", tmp / "runs", "--data", tmp / "faces", "--metrics", "nda_auroc"], {}


CASES = {
    "train nda_auroc without held-out data": (case_train_auroc_on_all_data, "--metrics=nda_auroc: nda_auroc needs real"),
    "train --seed -5": (case_train("--seed", "-5"), "--seed must be between 0 and 4294967295"),
    "train --seed 99999999999": (case_train("--seed", "99999999999"), "--seed must be between 0 and 4294967295"),
    "train jigsaw k=3 at 32 px": (case_train("--nda", "jigsaw(k=3)"), "divisible by 3, got 32x32"),
    "train weights overflow": (case_train("--nda", "jigsaw:1e308,stitch:1e308"), "add up to more than the largest"),
    "train stitch at batch 1": (case_train("--nda", "stitch", "--batch", "1"), "at least 2 images per process"),
    "train resume past --kimg": (case_resume_past_kimg, "was saved at kimg 0.032"),
    "generate --seeds unbounded": (case_generate("--seeds", "0-99999999999"), "more than the 1000000 allowed"),
    "generate --device cuda without GPU": (case_generate("--seeds", "0", "--device", "cuda", CUDA_VISIBLE_DEVICES=""),
                                           "--device cuda: torch sees no CUDA GPU"),
    "generate --network a run folder": (case_generate_on_the_run_folder, "is a folder (a run folder?)"),
    "generate --network name offline": (case_offline_name(lambda tmp: ["generate.py", "--network", "cifar10", "--seeds",
                                                                       "0", "--outdir", tmp / "images"]),
                                        "--network: cannot download cifar10"),
    "train --resume name offline": (case_offline_name(lambda tmp: ["train.py", "--outdir", tmp / "runs", "--resume",
                                                                   "ffhq256", "--freezed", "2"]),
                                    "--resume: cannot download ffhq256"),
    "preview --out unwritable": (case_preview("/proc/nda-preview.png"), "--out: cannot write in /proc"),
    "preview --out a folder": (case_preview("{tmp}/images/"), "names a folder; give a file name"),
    "patch partial hand-made hook": (case_patch_partial_hand_made_hook, "option_names()"),
    "patch partial patched hook": (case_patch_partial_patched_hook, "rewrite_config()"),
    "dataset_tool --dest x.tar": (case_dataset_tool("x.tar"), "writes a .zip or a folder, not a .tar file"),
    "dataset_tool --dest existing.zip": (case_dataset_tool("old.zip", existing=True), "already exists"),
    "dataset_tool --resolution 33x33": (case_dataset_tool_photos("--resolution", "33x33"), "power of two"),
}


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.read_bytes() if p.is_file() else None) for p in folder.rglob("*"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(name, tmp_path, request):
    make, words = CASES[name]
    cmd, env = make(tmp_path, lambda: request.getfixturevalue("trained_run"))
    before = _listing(tmp_path)
    code, out = _run(cmd, env=_env(**env))
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert code == 2 and len(errors) == 1 and words in errors[0], out
    assert "Traceback" not in out, out
    assert _listing(tmp_path) == before  # no run folder, no image, no edited train.py


def test_a_failure_after_launch_is_recorded_in_the_run_log(tmp_path, monkeypatch):
    """Whatever still fails once training has started leaves a run folder whose log.txt says why."""
    from click.testing import CliRunner

    import train
    from training import training_loop

    def failing_loop(run_dir, rank=0, **_):
        with open(os.path.join(run_dir, "log.txt"), "a") as f:
            f.write("Training set: ...\n")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(training_loop, "training_loop", failing_loop)
    result = CliRunner().invoke(train.main, ["--outdir", str(tmp_path), "--metrics", "none"])
    assert isinstance(result.exception, RuntimeError)
    (run_dir,) = tmp_path.iterdir()
    log = (run_dir / "log.txt").read_text()
    assert log.startswith("Training set: ...\nTraining failed:\nTraceback")
    assert log.rstrip().endswith("RuntimeError: disk on fire")
