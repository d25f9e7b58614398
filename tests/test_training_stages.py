"""The training loop's stages on their own: the tick decision and the counters a snapshot records,
the G_ema and ADA steps, the resume state a snapshot records and its restoring, and set-up, one
training batch and the end of a tick on tiny networks."""

import inspect
import json
import os

import pytest
import torch

from trainer_helpers import one_thread, tiny_config, tiny_networks
from training import snapshot
from training.training_loop import (_Progress, _RunLog, _ada_step, _ema_beta, _end_tick, _make_phases,
                                    _restore_training_state, _resume_state, _set_up, _snapshot_due,
                                    _train_one_batch, training_loop)
from training.util import EasyDict


single_thread = pytest.fixture(autouse=True)(one_thread)


def walk(progress, total_nimg, batch_size=8, kimg_per_tick=0.032):
    """Run the loop's tick bookkeeping alone; returns the (tick, nimg) of every tick end and the
    counters the last snapshot would record."""
    ends, counters = [], None
    while not progress.done(total_nimg / 1000):
        progress.end_batch(batch_size)
        done, due = progress.done(total_nimg / 1000), progress.tick_due(kimg_per_tick)
        if done or due:
            ends.append((progress.cur_tick, progress.cur_nimg))
            counters = progress.counters_to_resume(due)
            progress.end_tick()
    return ends, counters


def test_tick_zero_ends_after_the_first_batch_then_every_kimg_per_tick():
    ends, _ = walk(_Progress(), 160)
    assert ends == [(0, 8), (1, 40), (2, 72), (3, 104), (4, 136), (5, 160)]  # the last one cut short by the end


@pytest.mark.parametrize("stop", [56, 72, 8, 16])
def test_a_run_stopped_anywhere_resumes_into_the_ticks_of_an_uninterrupted_run(stop):
    straight, _ = walk(_Progress(), 160)
    first, counters = walk(_Progress(), stop)
    assert counters["cur_nimg"] == stop
    second, _ = walk(_Progress.from_resume_state(counters), 160)
    cut_short = first[-1] not in straight  # the first run's last tick ended only because the run did
    assert (first[:-1] if cut_short else first) + second == straight


def test_snapshots_come_every_n_ticks_and_at_the_end_never_for_zero():
    assert [t for t in range(7) if _snapshot_due(3, t, done=False)] == [0, 3, 6]
    assert _snapshot_due(3, 4, done=True)
    assert not _snapshot_due(0, 0, done=True) and not _snapshot_due(None, 3, done=True)


def test_G_ema_half_life_is_ema_kimg_after_the_ramp_up():
    beta = _ema_beta(ema_kimg=10, ema_rampup=0.05, batch_size=32, cur_nimg=10 ** 6)
    assert beta ** (10_000 / 32) == pytest.approx(0.5)
    # Early on the ramp-up shortens the half-life to cur_nimg * ema_rampup images ...
    assert _ema_beta(10, 0.05, 32, cur_nimg=6400) ** (320 / 32) == pytest.approx(0.5)
    # ... and at the very start G_ema simply takes G's weights; without a ramp-up it does not.
    assert _ema_beta(10, 0.05, 32, cur_nimg=0) == 0
    assert _ema_beta(10, None, 32, cur_nimg=0) == beta


def test_ada_moves_p_towards_the_target_by_one_in_ada_kimg():
    step = _ada_step(signs=0.9, ada_target=0.6, batch_size=64, ada_interval=4, ada_kimg=500)
    assert step > 0 and step * 500_000 / (64 * 4) == pytest.approx(1)
    assert _ada_step(0.2, 0.6, 64, 4, 500) == -step
    assert _ada_step(0.6, 0.6, 64, 4, 500) == 0


def adam_phases(seed):
    G, D = tiny_networks(seed=seed)
    adam = dict(class_name="torch.optim.Adam", lr=0.01, betas=[0.0, 0.99], eps=1e-8)
    return _make_phases(G, D, adam, adam, G_reg_interval=4, D_reg_interval=None)


def take_a_step(phases):
    for phase in phases:
        for p in phase.module.parameters():
            p.grad = torch.ones_like(p)
        phase.opt.step()


class StatefulLoss:
    loaded = None

    def load_state_dict(self, state):
        self.loaded = state


def test_the_resume_state_records_counters_main_optimisers_and_rng_and_restores_them():
    phases = adam_phases(seed=0)
    assert [ph.name for ph in phases] == ["Gmain", "Greg", "Dboth"]
    take_a_step(phases)
    progress = _Progress(cur_nimg=96, cur_tick=3, batch_idx=12, tick_start_nimg=64)
    state = _resume_state(progress, tick_due=False, batch_size=8, random_seed=5, augment_p=0.25, phases=phases,
                          loss_state={"k": 1}, ada_state=None)
    draws_after_snapshot = torch.rand(4)
    assert state["cur_tick"] == 3 and state["tick_start_nimg"] == 64 and state["batch_idx"] == 12
    assert (state["batch_size"], state["random_seed"], state["augment_p"], state["loss"]) == (8, 5, 0.25, {"k": 1})
    assert set(state["optimizers"]) == {"G", "D"}  # one optimiser per network; Greg shares Gmain's

    fresh = adam_phases(seed=1)
    loss = StatefulLoss()
    restored = _restore_training_state(state, fresh, loss, None, rank=0)
    assert restored == progress and loss.loaded == {"k": 1}
    for old, new in zip(phases, fresh):
        assert len(new.opt.state) == len(old.opt.state) > 0
        for a, b in zip(old.opt.state.values(), new.opt.state.values()):
            assert torch.equal(a["exp_avg"], b["exp_avg"])
    assert torch.equal(torch.rand(4), draws_after_snapshot)  # the RNG continues where the snapshot was taken
    assert _restore_training_state(None, fresh, loss, None, rank=0) == _Progress()


def loop_options(run_dir, **overrides):
    """training_loop's options with its defaults, as the loop hands them to the phases."""
    defaults = {name: p.default for name, p in inspect.signature(training_loop).parameters.items()
                if p.kind is p.POSITIONAL_OR_KEYWORD}
    return EasyDict(defaults, **tiny_config(run_dir, **overrides))


def test_set_up_then_one_batch_then_the_end_of_a_tick(tmp_path):
    opts = loop_options(tmp_path)
    run = _set_up(opts, _RunLog(str(tmp_path), rank=0))
    assert run.progress == _Progress() and run.rounds == 2
    assert {"reals.png", "fakes_init.png"} <= set(os.listdir(tmp_path))
    G_before = [p.clone() for p in run.nets.G.parameters()]

    _train_one_batch(run)
    assert (run.progress.cur_nimg, run.progress.batch_idx) == (8, 1)
    assert all(not torch.equal(a, b) for a, b in zip(G_before, run.nets.G.parameters()))
    # The ramp-up makes G_ema a copy of G after the first batch.
    assert all(torch.equal(a, b) for a, b in zip(run.nets.G_ema.parameters(), run.nets.G.parameters()))
    assert run.progress.tick_due(opts.kimg_per_tick)

    _end_tick(run, tick_due=True, done=False)
    (line,) = [json.loads(s) for s in open(tmp_path / "stats.jsonl")]
    assert line["Progress/tick"]["mean"] == 0 and line["Progress/kimg"]["mean"] == pytest.approx(0.008)
    assert "tick 0 " in open(tmp_path / "log.txt").read()
    data = snapshot.load_network_file(run.last_snapshot)
    # Tick 0 is finished: a run resumed from it starts tick 1 at image 8.
    assert (data.resume_state["cur_tick"], data.resume_state["tick_start_nimg"]) == (1, 8)
    assert (run.progress.cur_tick, run.progress.tick_start_nimg) == (1, 8)
    assert os.path.exists(tmp_path / "fakes000000.png")

    _train_one_batch(run)
    assert not run.progress.tick_due(opts.kimg_per_tick)  # 16 of tick 1's 32 images
