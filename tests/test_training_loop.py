"""training.training_loop end to end on tiny networks: run-folder files, loss hooks, exact resume,
NaN stop, kill -9 safety, resume from another architecture."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from trainer_helpers import one_thread, REPO, tiny_config
from training import snapshot
from training.loss import StyleGAN2Loss
from training.training_loop import TrainingDiverged, training_loop


single_thread = pytest.fixture(autouse=True)(one_thread)


class HookLoss(StyleGAN2Loss):
    """A loss with the optional hooks of docs/contracts.md section 4."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def accumulate_gradients(self, phase, *args, **kwargs):
        self.calls += 1
        return super().accumulate_gradients(phase, *args, **kwargs)

    def pop_stats(self):
        calls, self.calls = self.calls, 0
        return {"Hook/calls": calls}

    def snapshot_images(self, real_img, real_c):
        return {"flipped": real_img.flip(3)}


class NaNLoss(StyleGAN2Loss):
    """Turns G's loss into NaN from the 64th image on."""

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        if cur_nimg >= 64 and phase == "Gmain":
            gain = float("nan")
        return super().accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg)


def states(path):
    data = snapshot.load_network_file(path)
    return {n: data[n].state_dict() for n in ("G", "D", "G_ema")}, data


def test_run_folder_files_and_loss_hooks(tmp_path):
    c = tiny_config(tmp_path, loss_kwargs=dict(class_name="test_training_loop.HookLoss", r1_gamma=0.1))
    result = training_loop(**c)
    files = set(os.listdir(tmp_path))
    assert {"reals.png", "fakes_init.png", "flipped.png", "log.txt", "stats.jsonl"} <= files
    assert {"fakes000000.png", "network-snapshot-000000.pkl", "network-snapshot-000000.pt"} <= files
    assert result.cur_nimg == 64 and result.snapshot == str(tmp_path / "network-snapshot-000000_064.pkl")
    # Three image grids within kimg 0 (after 8, 40 and 64 images): none overwrote another.
    assert sorted(f for f in files if f.startswith("fakes0")) == ["fakes000000.png", "fakes000000_040.png",
                                                                 "fakes000000_064.png"]
    lines = [json.loads(line) for line in open(tmp_path / "stats.jsonl")]
    assert len(lines) == 3  # tick 0 after the first batch, then one per 0.032 kimg
    # 8 batches: Gmain 2 rounds each (16), Greg every 4th (4), Dmain (16), Dreg every 4th (4).
    assert sum(line["Hook/calls"]["mean"] for line in lines) == 40
    seen = set().union(*lines)
    for name in ("Loss/G/loss", "Loss/D/loss", "Loss/r1_penalty", "Loss/pl_penalty", "Timing/sec_per_kimg"):
        assert name in seen, sorted(seen)
    log = open(tmp_path / "log.txt").read()
    assert "tick 2" in log and "kimg" in log and "s/kimg" in log and "ETA" in log


def test_snapshots_of_a_fractional_kimg_run_never_overwrite_each_other(tmp_path):
    training_loop(**tiny_config(tmp_path))  # 0.064 kimg, a snapshot every 0.032 kimg tick
    found = snapshot.list_snapshots(str(tmp_path))
    names = [os.path.basename(path) for _kimg, path in found]
    # The first keeps the host's whole-kimg name; the later ones in that kimg add their images.
    assert names == ["network-snapshot-000000.pt", "network-snapshot-000000_040.pt", "network-snapshot-000000_064.pt"]
    nimgs = [snapshot.load_network_file(path).resume_state["cur_nimg"] for _kimg, path in found]
    assert nimgs == [8, 40, 64]
    assert snapshot.latest_snapshot(str(tmp_path)).endswith("network-snapshot-000000_064.pt")


NDA_LOSSES = {
    "none": dict(class_name="training.loss.StyleGAN2Loss", r1_gamma=0.1),
    "weighted": dict(class_name="nda_stylegan.loss.NDALoss", nda_inner_class_name="training.loss.StyleGAN2Loss",
                     nda_spec="jigsaw,stitch", nda_mode="weighted", r1_gamma=0.1),
    "mixture": dict(class_name="nda_stylegan.loss.NDALoss", nda_inner_class_name="training.loss.StyleGAN2Loss",
                    nda_spec="jigsaw,stitch", nda_mode="mixture", nda_lambda=0.5, r1_gamma=0.1),
}


@pytest.mark.parametrize("nda", sorted(NDA_LOSSES))
def test_resume_continues_exactly(tmp_path, nda):
    """N ticks straight == N/2 ticks, then resume, then N/2 ticks (with ADA moving p), with and
    without NDA (whose negatives must follow the same stream after the resume)."""
    aug = dict(class_name="training.augment.AugmentPipe", xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1,
               brightness=1, contrast=1, saturation=1)
    kw = dict(augment_kwargs=aug, ada_target=0.0, ada_interval=1, ada_kimg=0.5, total_kimg=0.128,
              loss_kwargs=NDA_LOSSES[nda])
    straight = training_loop(**tiny_config(tmp_path / "straight", **kw))
    first = training_loop(**tiny_config(tmp_path / "first", **dict(kw, total_kimg=0.064)))
    second = training_loop(**tiny_config(tmp_path / "second", **dict(kw, resume=first.snapshot)))
    assert straight.cur_nimg == second.cur_nimg == 128
    a, data_a = states(straight.snapshot)
    b, data_b = states(second.snapshot)
    for name in a:
        for key in a[name]:
            torch.testing.assert_close(a[name][key], b[name][key], rtol=0, atol=0, msg=lambda m: "%s.%s %s" % (name, key, m))
    p_a, p_b = data_a.resume_state["augment_p"], data_b.resume_state["augment_p"]
    assert p_a == p_b and p_a > 0  # ADA moved p, identically
    assert data_b.resume_state["cur_tick"] == data_a.resume_state["cur_tick"]
    assert "Resumed from" in open(tmp_path / "second" / "log.txt").read()


def test_nan_loss_stops_without_overwriting_the_last_snapshot(tmp_path, capsys):
    c = tiny_config(tmp_path, loss_kwargs=dict(class_name="test_training_loop.NaNLoss", r1_gamma=0.1),
                    kimg_per_tick=0.016, total_kimg=0.128)
    with pytest.raises(TrainingDiverged):
        training_loop(**c)
    pt = snapshot.latest_snapshot(str(tmp_path))
    good = open(pt, "rb").read()
    data = snapshot.load_network_file(pt)
    assert data.resume_state["cur_nimg"] < 64 + 8
    lines = [line for line in open(tmp_path / "log.txt") if "diverged" in line]
    assert len(lines) == 1 and "NaN" in lines[0] and "Gmain" in lines[0]
    assert "diverged" in capsys.readouterr().err
    assert open(pt, "rb").read() == good


KILL_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[2])
from trainer_helpers import tiny_config
from training.training_loop import training_loop
training_loop(**tiny_config(sys.argv[1], total_kimg=100, kimg_per_tick=0.008, image_snapshot_ticks=1000,
                            loss_kwargs=json.loads(sys.argv[3])))
"""


@pytest.mark.parametrize("nda", ["none", "weighted", "mixture"])
def test_sigkill_mid_run_leaves_a_snapshot_that_resumes_exactly(tmp_path, nda):
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(run_dir), os.path.join(REPO, "tests"),
                             json.dumps(NDA_LOSSES[nda])], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300  # generous: a loaded machine starts slowly
        while time.time() < deadline and proc.poll() is None:
            if run_dir.is_dir() and len(snapshot.list_snapshots(str(run_dir))) >= 1:
                break
            time.sleep(0.05)
        time.sleep(0.3)  # land somewhere inside the following snapshots' writes
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    latest = snapshot.latest_snapshot(str(run_dir))
    data = snapshot.load_network_file(latest)
    start = data.resume_state["cur_nimg"]
    kw = dict(kimg_per_tick=0.008, image_snapshot_ticks=1000, loss_kwargs=NDA_LOSSES[nda], total_kimg=(start + 16) / 1000)
    resumed = training_loop(**tiny_config(tmp_path / "resumed", resume=latest, **kw))
    assert resumed.cur_nimg == start + 16
    # The killed-and-resumed run ends where an uninterrupted one does.
    straight = training_loop(**tiny_config(tmp_path / "straight", **kw))
    a, _ = states(straight.snapshot)
    b, _ = states(resumed.snapshot)
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), "%s.%s" % (name, key)


def test_resume_from_another_architecture_is_one_line_error(tmp_path):
    first = training_loop(**tiny_config(tmp_path / "a", total_kimg=0.008))
    other = tiny_config(tmp_path / "b", resume=first.snapshot)
    other["G_kwargs"] = dict(other["G_kwargs"], z_dim=8)
    with pytest.raises(ValueError) as info:
        training_loop(**other)
    assert "another architecture" in str(info.value) and "\n" not in str(info.value)


def test_bad_batch_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match="multiple of batch_gpu"):
        training_loop(**tiny_config(tmp_path, batch_size=8, batch_gpu=3))


def test_diverged_run_exits_1_with_one_line_and_no_traceback(tmp_path, capsys):
    from training.distributed import run_training_loop

    c = tiny_config(tmp_path, loss_kwargs=dict(class_name="test_training_loop.NaNLoss", r1_gamma=0.1),
                    kimg_per_tick=0.016, total_kimg=0.128)
    with pytest.raises(SystemExit) as exc:
        run_training_loop(0, c)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "Traceback" not in err
