"""``nda-stylegan patch`` on small host fixtures shaped like stylegan2-ada-pytorch and stylegan3
(tests/fixtures/hosts): text edits, refusals, revert, and real training runs of patched forks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from host_forks import copy_fork
from nda_stylegan.cli import main as cli_main
from nda_stylegan.patching.files import backup_path
from nda_stylegan.patching.hookfile import BLOCK_BEGIN, BLOCK_END, TAG, read_hook

HOSTS = {"sg2ada": "stylegan2-ada-pytorch", "sg3": "stylegan3"}
# The line whose change makes each fixture's train.py unpatchable.
ANCHOR_LINES = {
    "sg2ada": ("run_desc, args = setup_training_loop_kwargs(**config_kwargs)", "run_desc, args = setup(config_kwargs)"),
    "sg3": ("launch_training(c=c, desc=desc,", "launch_training(config=c, desc=desc,"),
}


def fork(tmp_path, host, name="fork"):
    return copy_fork(host, tmp_path / name)


def patch(*args):
    result = CliRunner().invoke(cli_main, ["patch"] + [str(a) for a in args])
    return result


def listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


# ---- the hook files -----------------------------------------------------------------------

@pytest.mark.parametrize("host", sorted(HOSTS.values()))
def test_hook_files_parse(host):
    insertions = read_hook(host)
    assert len(insertions) == 3
    block = [ins for ins in insertions if any(BLOCK_BEGIN in line for line in ins.lines)]
    assert len(block) == 1 and any(BLOCK_END in line for line in block[0].lines)
    for ins in insertions:
        if ins is not block[0]:
            assert all(line.endswith("# " + TAG) for line in ins.lines)


# ---- patch, dry run, idempotence, revert ----------------------------------------------------

@pytest.mark.parametrize("host", sorted(HOSTS))
def test_dry_run_patch_again_and_revert(tmp_path, host):
    root = fork(tmp_path, host)
    train = root / "train.py"
    original = train.read_bytes()

    result = patch(root, "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("--- a/train.py\n+++ b/train.py\n") and "+_trainer_plugins = _trainer_plugins_load()" in result.stdout
    assert train.read_bytes() == original and not os.path.exists(backup_path(str(train)))

    result = patch(root)
    assert result.exit_code == 0 and "patched" in result.output and HOSTS[host] in result.output
    patched = train.read_bytes()
    assert Path(backup_path(str(train))).read_bytes() == original
    compile(patched, str(train), "exec")
    assert patched.count(b"# " + TAG.encode()) == 2 and BLOCK_BEGIN.encode() in patched
    assert patched != original

    result = patch(root)
    assert result.exit_code == 0 and "already patched" in result.output
    assert train.read_bytes() == patched

    result = patch(root, "--revert", "--dry-run")
    assert result.exit_code == 0 and "-_trainer_plugins = _trainer_plugins_load()" in result.stdout
    assert train.read_bytes() == patched

    result = patch(root, "--revert")
    assert result.exit_code == 0 and "byte for byte" in result.output
    assert train.read_bytes() == original and not os.path.exists(backup_path(str(train)))
    assert listing(root) == listing(fork(tmp_path, host, "untouched"))  # no temporary files left behind

    result = patch(root, "--revert")
    assert result.exit_code == 0 and "not patched" in result.output


def test_crlf_file_keeps_its_line_endings_and_reverts_exactly(tmp_path):
    root = fork(tmp_path, "sg3")
    train = root / "train.py"
    original = train.read_bytes().replace(b"\n", b"\r\n")
    train.write_bytes(original)
    os.chmod(str(train), 0o640)
    assert patch(root).exit_code == 0
    patched = train.read_bytes()
    assert patched.count(b"\n") == patched.count(b"\r\n") and TAG.encode() in patched
    assert os.stat(str(train)).st_mode & 0o777 == 0o640  # permissions kept by the atomic write
    assert patch(root, "--revert").exit_code == 0
    assert train.read_bytes() == original


def test_revert_after_later_edits_removes_only_the_hook(tmp_path):
    root = fork(tmp_path, "sg2ada")
    train = root / "train.py"
    original = train.read_text()
    assert patch(root).exit_code == 0
    train.write_text(train.read_text() + "# my own note\n")
    result = patch(root, "--revert")
    assert result.exit_code == 0 and "edits are kept" in result.output
    assert train.read_text() == original + "# my own note\n"


# ---- refusals: one line, exit 2, nothing modified -------------------------------------------

def _edit(path, old, new):
    """Replace the last occurrence (the code, not a mention in the docstring)."""
    head, found, tail = path.read_text().rpartition(old)
    assert found
    path.write_text(head + new + tail)


def _make_broken(tmp_path, case, host):
    if case == "missing folder":
        return tmp_path / "nowhere"
    if case == "a file":
        (tmp_path / "train.py").write_text("print(1)\n")
        return tmp_path / "train.py"
    if case == "not a fork":
        (tmp_path / "plain").mkdir()
        (tmp_path / "plain" / "train.py").write_text("print('hello')\n")
        return tmp_path / "plain"
    root = fork(tmp_path, host)
    if case == "edited too far":
        _edit(root / "train.py", *ANCHOR_LINES[host])
    elif case == "read-only":
        os.chmod(str(root / "train.py"), 0o444)
    elif case == "has --nda":
        _edit(root / "train.py", '@click.option("--seed"', '@click.option("--nda", type=str)\n@click.option("--seed"')
    elif case == "unknown host version":
        _edit(root / "training" / "loss.py", "def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c,",
              "def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, new_arg,")
    return root


@pytest.mark.parametrize("host", sorted(HOSTS))
@pytest.mark.parametrize("case, words", [
    ("missing folder", "no such folder"),
    ("a file", "is not a folder"),
    ("not a fork", "not a recognised fork"),
    ("edited too far", "edited too far"),
    ("read-only", "read-only"),
    ("has --nda", "already has an option --nda"),
    ("unknown host version", "unknown host version"),
])
def test_refusals(tmp_path, host, case, words):
    target = _make_broken(tmp_path, case, host)
    train = target / "train.py" if target.is_dir() else None
    before = train.read_bytes() if train is not None and train.exists() else None
    files_before = listing(target) if target.is_dir() else None
    result = patch(target)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], result.output
    if before is not None:
        assert train.read_bytes() == before and listing(target) == files_before


# ---- patched forks really train -----------------------------------------------------------

def _env():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["NDA_STYLEGAN_OPS"] = "reference"  # no op build inside the test's time budget
    return env


def _start(root, outdir, *args):
    cmd = [sys.executable, "train.py", "--outdir=%s" % outdir, "--cond=1", "--iters=1"] + list(args)
    return subprocess.Popen(cmd, cwd=str(root), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc):
    out = proc.communicate(timeout=240)[0].decode()
    assert proc.returncode == 0, out
    return out


def _run_dir(outdir):
    (name,) = os.listdir(str(outdir))
    run = Path(outdir) / name
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return name, run, log


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_patched_fork_trains_with_and_without_nda(tmp_path, host):
    plain, patched = fork(tmp_path, host, "plain"), fork(tmp_path, host, "patched")
    assert patch(patched).exit_code == 0
    extra = ["--blur=1"] if host == "sg3" else []
    procs = [_start(plain, tmp_path / "a", *extra), _start(patched, tmp_path / "b", *extra),
             _start(patched, tmp_path / "c", "--nda=jigsaw,stitch", *extra)]
    for proc in procs:
        _finish(proc)
    name_a, _, log_a = _run_dir(tmp_path / "a")
    name_b, _, log_b = _run_dir(tmp_path / "b")
    name_c, run_c, log_c = _run_dir(tmp_path / "c")

    # Without --nda the patched fork behaves exactly as before: same run name, same losses.
    assert name_b == name_a and log_b == log_a

    # With --nda: run name, the config's loss, and the NDA term in D's main phase only.
    assert name_c == name_a + "-nda-jigsaw-stitch"
    loss_kwargs = json.loads((run_c / "training_options.json").read_text())["loss_kwargs"]
    assert loss_kwargs["class_name"] == "nda_stylegan.loss.NDALoss"
    assert loss_kwargs["nda_inner_class_name"] == "training.loss.StyleGAN2Loss" and loss_kwargs["r1_gamma"] == 1.0
    assert [(e["iter"], e["phase"]) for e in log_c] == [(e["iter"], e["phase"]) for e in log_a]
    for a, c in zip(log_a, log_c):
        nda_stats = {k for k in c["stats"] if k.startswith("Loss/NDA/")}
        if c["phase"] == "Dmain":
            assert nda_stats == {"Loss/NDA/score", "Loss/NDA/loss", "Loss/NDA/masked"}
            assert c["augment_calls"] == a["augment_calls"] + [4, 4]  # negatives go through the augment pipe
            if host == "sg2ada":  # per round: negatives (unsynced), fakes, reals (synced last)
                assert [s for _, s in c["run_D_calls"]] == [False, False, False, False, False, True]
            else:  # negatives see the blur the reals saw
                blurs = {b for _, b in c["run_D_calls"]}
                assert len(blurs) == 1 and blurs == {b for _, b in a["run_D_calls"]} and blurs.pop() > 0
        else:
            assert not nda_stats and c["augment_calls"] == a["augment_calls"]
    assert log_c[0]["grad_norm"] == log_a[0]["grad_norm"]  # first G step: NDA never enters G's loss
    assert log_c[1]["phase"] == "Dmain" and log_c[1]["grad_norm"] != log_a[1]["grad_norm"]

    # The snapshot holds nothing of ours and unpickles where nda_stylegan cannot be imported.
    snapshot = run_c / "network-snapshot.pkl"
    assert b"nda_stylegan" not in snapshot.read_bytes()
    check = ("import sys, pickle; sys.modules['nda_stylegan'] = None; sys.path.insert(0, %r); "
             "d = pickle.load(open(%r, 'rb')); print(sorted(d))" % (str(patched), str(snapshot)))
    out = subprocess.run([sys.executable, "-c", check], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert out.returncode == 0 and b"['D', 'G', 'augment_pipe']" in out.stdout, out.stdout.decode()


def test_hook_without_plugins_and_with_pre_310_entry_points(tmp_path):
    """No plugin installed: no new options. entry_points() as a dict (Python 3.8/3.9): found."""
    root = fork(tmp_path, "sg3")
    assert patch(root).exit_code == 0
    script = r"""
import importlib, sys
import torch  # before entry_points is replaced: torch looks up its own entry points
from importlib import metadata
real = metadata.entry_points
sys.path.insert(0, '.')
metadata.entry_points = lambda: {}
train = importlib.import_module('train')
print('none', train._trainer_plugins == [], [p.name for p in train.main.params if 'nda' in p.name])
eps = real()
eps = list(eps.select(group='stylegan.trainer_plugins')) if hasattr(eps, 'select') else eps['stylegan.trainer_plugins']
metadata.entry_points = lambda: {'stylegan.trainer_plugins': eps + eps}  # the same one twice
train = importlib.reload(train)
print('dict', [p.name for p in train._trainer_plugins], [p.name for p in train.main.params if 'nda' in p.name])
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=str(root), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = out.stdout.decode()
    assert out.returncode == 0, text
    assert "none True []" in text
    assert "dict ['nda'] ['nda', 'nda_lambda', 'nda_mode', 'nda_loss', 'nda_start_kimg']" in text


def _hand_made_hook(root, host):
    """train.py with the hook's pieces added by hand (as docs/fork.md allows): no patch marks."""
    from nda_stylegan.patching.edit import apply_hook

    train = root / "train.py"
    text = apply_hook(train.read_text(), read_hook(HOSTS[host]), HOSTS[host])
    train.write_text(text.replace(TAG, "plugins, added by hand"))
    return train


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_train_py_that_loads_plugins_itself_is_left_alone(tmp_path, host):
    train = _hand_made_hook(fork(tmp_path, host), host)
    before = train.read_bytes()
    result = patch(train.parent)
    assert result.exit_code == 0 and "nothing to do" in result.output
    assert train.read_bytes() == before and not os.path.exists(backup_path(str(train)))


@pytest.mark.parametrize("host", sorted(HOSTS))
@pytest.mark.parametrize("marked", [False, True])
@pytest.mark.parametrize("piece, words", [
    ("_trainer_plugins_pop(", "option_names()"),  # the fork would fail: unexpected keyword argument 'nda'
    ("+= _trainer_plugins_apply(", "rewrite_config()"),
    ("_trainer_plugins = _trainer_plugins_load()", "click_options()"),
])
def test_a_partial_hook_is_refused_not_called_done(tmp_path, host, marked, piece, words):
    root = fork(tmp_path, host)
    if marked:
        assert patch(root).exit_code == 0
        train = root / "train.py"
    else:
        train = _hand_made_hook(root, host)
    lines = train.read_text().splitlines(True)
    kept = [line for line in lines if piece not in line or line.lstrip().startswith("def ")]
    assert len(kept) == len(lines) - 1
    train.write_text("".join(kept))
    files_before, before = listing(root), train.read_bytes()
    result = patch(root)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "partial stylegan.trainer_plugins hook" in lines[0], result.output
    assert words in lines[0] and ("--revert" in lines[0]) == marked
    assert train.read_bytes() == before and listing(root) == files_before
