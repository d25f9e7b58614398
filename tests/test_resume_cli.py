"""Exact continuation through train.py: a run stopped at some kimg and resumed from its own
snapshot ends bit-identical to the same run made in one go (networks, optimisers' effect, ADA p,
tick count), with and without NDA; a bare network still gets the host's fine-tuning settings."""

import glob
import os

import pytest
import torch
from click.testing import CliRunner

import train
from training import snapshot

from trainer_helpers import one_thread

single_thread = pytest.fixture(autouse=True)(one_thread)


def train_cli(outdir, *args):
    result = CliRunner().invoke(train.main, ["--outdir", str(outdir), "--metrics", "none", "--seed", "3",
                                             "--subset", "256", "--snap", "1"] + list(args),
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    runs = sorted(glob.glob(os.path.join(str(outdir), "0*")))
    return runs[-1], result.output


def last_snapshot(run_dir):
    return snapshot.load_network_file(snapshot.latest_snapshot(run_dir))


NDA_ARGS = {"none": [], "weighted": ["--nda=jigsaw,stitch"], "mixture": ["--nda=jigsaw,stitch", "--nda-mode=mixture"]}


@pytest.mark.parametrize("nda", sorted(NDA_ARGS))
def test_resume_from_a_runs_own_snapshot_continues_exactly(tmp_path, nda):
    extra = NDA_ARGS[nda]
    straight, _ = train_cli(tmp_path / "straight", "--kimg", "0.096", *extra)
    first, _ = train_cli(tmp_path / "first", "--kimg", "0.048", *extra)
    pt = sorted(glob.glob(os.path.join(first, "network-snapshot-*.pt")))[-1]
    second, out = train_cli(tmp_path / "second", "--kimg", "0.096", "--resume", pt, *extra)
    assert "Resumed from" in out
    a, b = last_snapshot(straight), last_snapshot(second)
    for name in ("G", "D", "G_ema"):
        sa, sb = a[name].state_dict(), b[name].state_dict()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), "%s.%s differs after resume (%s)" % (name, key, nda)
    ra, rb = a["resume_state"], b["resume_state"]
    for key in ("cur_nimg", "cur_tick", "batch_idx", "tick_start_nimg", "augment_p"):
        assert ra[key] == rb[key], (key, ra[key], rb[key])
    if nda != "none":
        assert ra["loss"]["nda"] == rb["loss"]["nda"]


def test_a_bare_network_gets_the_hosts_fine_tuning_settings(tmp_path, monkeypatch):
    from training import distributed

    first, _ = train_cli(tmp_path / "first", "--kimg", "0.016")
    pt = sorted(glob.glob(os.path.join(first, "network-snapshot-*.pt")))[-1]
    data = snapshot.load_network_file(pt)
    bare = str(tmp_path / "bare.pt")
    snapshot.save_snapshot(bare[:-3], {k: data[k] for k in ("G", "D", "G_ema")}, data["training_set_kwargs"])
    captured = {}
    monkeypatch.setattr(distributed, "launch", lambda fn, n, device="cpu", args=(): captured.setdefault("c", []).append(args[0]))
    train_cli(tmp_path / "own", "--resume", pt)
    train_cli(tmp_path / "bare", "--resume", bare)
    own, fine = captured["c"]
    assert (own["ada_kimg"], own["ema_rampup"]) == (500, 0.05)  # the run's own settings
    assert (fine["ada_kimg"], fine["ema_rampup"]) == (100, None)  # the host's fine-tuning ones
