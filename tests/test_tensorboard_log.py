"""The TensorBoard export (training/tensorboard_log.py), read back with tensorboard's own event
reader: the same scalars as stats.jsonl (losses, NDA statistics, ADA p, timing) and every metric
result, at the host's step (whole kimg) and wall time (seconds since the start)."""

import glob
import json
import os

import pytest
import torch

from trainer_helpers import one_thread, tiny_config
from training.tensorboard_log import TensorBoardLog
from training.training_loop import training_loop

single_thread = pytest.fixture(autouse=True)(one_thread)


def read_scalars(run_dir):
    """[(tag, step, wall_time, value)] in file order, from the one event file in ``run_dir``."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    (path,) = glob.glob(os.path.join(str(run_dir), "events.out.tfevents.*"))
    rows = []
    for event in LegacyEventFileLoader(path).Load():  # the events as written, not migrated
        for value in event.summary.value:
            rows.append((value.tag, event.step, event.wall_time, value.simple_value))
    return rows


def test_a_run_writes_every_stat_and_metric_of_each_tick(tmp_path, monkeypatch):
    from metrics import registry

    real_compute = registry.compute_metric
    monkeypatch.setattr(registry, "compute_metric",  # swd on a few images, to keep the test short
                        lambda name, **kw: real_compute(name, num_images=64, patches_per_image=16, **kw))
    aug = dict(class_name="training.augment.AugmentPipe", xflip=1, rotate90=1, xint=1)
    nda = dict(class_name="nda_stylegan.loss.NDALoss", nda_inner_class_name="training.loss.StyleGAN2Loss",
               nda_spec="jigsaw,stitch", r1_gamma=0.1)
    torch.backends.cudnn.benchmark = True
    c = tiny_config(tmp_path, loss_kwargs=nda, augment_kwargs=aug, ada_target=0.0, ada_interval=1, ada_kimg=0.5,
                    metrics=["swd"])
    training_loop(**c)
    assert torch.backends.cudnn.benchmark is False  # cudnn_benchmark=False (--nobench) reaches torch

    ticks = [json.loads(line) for line in open(tmp_path / "stats.jsonl")]
    metric_lines = [json.loads(line) for line in open(tmp_path / "metric-swd.jsonl")]
    assert len(ticks) == len(metric_lines) == 3  # a snapshot, hence swd, at every tick
    rows = read_scalars(tmp_path)
    expected = []
    for tick, metric in zip(ticks, metric_lines):  # per tick: the stats in stats.jsonl's order, then metrics
        stats = [(name, value["mean"]) for name, value in tick.items() if name != "timestamp"]
        metrics = [("Metrics/" + name, value) for name, value in metric["results"].items()]
        expected += [(tag, int(tick["Progress/kimg"]["mean"]), value) for tag, value in stats + metrics]
    assert [(tag, step) for tag, step, _t, _v in rows] == [(tag, step) for tag, step, _v in expected]
    for (tag, _s, _t, value), (_tag, _step, want) in zip(rows, expected):
        assert value == pytest.approx(want, rel=1e-6, abs=1e-6), tag  # TensorBoard stores float32

    tags = {tag for tag, *_ in rows}
    for name in ("Loss/G/loss", "Loss/D/loss", "Loss/NDA/score", "Loss/NDA/loss", "Progress/augment",
                 "Timing/sec_per_kimg", "Timing/total_sec"):
        assert name in tags, sorted(tags)
    assert "Metrics/swd_avg" in tags
    ps = [v for tag, _s, _t, v in rows if tag == "Progress/augment"]
    assert max(ps) > 0  # ADA moved p, and TensorBoard saw it

    # Wall time: seconds since the start, advancing with the ticks' own timestamps.
    walls = [wall for tag, _s, wall, _v in rows if tag == "Progress/tick"]
    stamps = [tick["timestamp"] for tick in ticks]
    assert 0 < walls[0] < 600
    for i in range(1, len(walls)):
        assert walls[i] - walls[i - 1] == pytest.approx(stamps[i] - stamps[i - 1], abs=1e-3)


def test_step_is_whole_kimg_and_metrics_repeat_at_every_tick(tmp_path):
    log = TensorBoardLog(str(tmp_path), start_time=1000.0)
    log.write_tick(2500, {"Loss/G/loss": dict(num=4, mean=0.5, std=0.1)}, timestamp=1012.5)
    log.add_metric_results({"fid50k_full": 31.5})
    log.write_tick(3999, {"Loss/G/loss": dict(num=4, mean=0.25, std=0.1)}, timestamp=1020.0)
    log.write_tick(4000, {}, timestamp=1030.0)
    log.close()
    assert read_scalars(tmp_path) == [("Loss/G/loss", 2, 12.5, 0.5), ("Loss/G/loss", 3, 20.0, 0.25),
                                      ("Metrics/fid50k_full", 3, 20.0, 31.5), ("Metrics/fid50k_full", 4, 30.0, 31.5)]


def test_without_tensorboard_the_run_says_so_once_and_writes_no_events(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    lines = []
    log = TensorBoardLog(str(tmp_path), start_time=0.0, log=lines.append)
    log.add_metric_results({"swd_avg": 1.0})
    log.write_tick(1000, {"Loss/G/loss": dict(num=1, mean=1.0, std=0.0)}, timestamp=1.0)
    log.close()
    assert len(lines) == 1 and "pip install tensorboard" in lines[0]
    assert os.listdir(str(tmp_path)) == []
