"""training/distributed.py: spawning gloo processes, torchrun's environment, and that a 2-process
run of the real training loop matches a 1-process run with the same global batch and seed."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from training import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sum_ranks_worker(rank, out_dir):
    """Spawned child: all-reduce (rank + 1) and record what this process saw."""
    t = torch.tensor([float(rank + 1)])
    torch.distributed.all_reduce(t)
    shared = distributed.broadcast_object({"from": rank}, src=0)
    record = dict(rank=rank, world=torch.distributed.get_world_size(), backend=torch.distributed.get_backend(),
                  total=t.item(), shared=shared, threads=torch.get_num_threads())
    with open(os.path.join(out_dir, "rank%d.json" % rank), "w") as f:
        json.dump(record, f)


def test_launch_two_cpu_processes_use_gloo_and_all_reduce(tmp_path):
    distributed.launch(_sum_ranks_worker, 2, device="cpu", args=(str(tmp_path),))
    records = [json.load(open(tmp_path / ("rank%d.json" % r))) for r in range(2)]
    assert [r["rank"] for r in records] == [0, 1]
    for r in records:
        assert r["world"] == 2 and r["backend"] == "gloo"
        assert r["total"] == 3.0  # 1 + 2: both processes took part
        assert r["shared"] == {"from": 0}  # rank 0's object reached rank 1
        assert r["threads"] == max(1, (os.cpu_count() or 1) // 2)


def _stop_with_code_worker(rank, code):
    if rank == 1:
        raise SystemExit(code)


def _stop_with_message_worker(rank, out_dir):
    sys.stderr = open(os.path.join(out_dir, "stderr%d.txt" % rank), "w")
    raise SystemExit("rank %d: stopping on purpose" % rank)


def _atexit_worker(rank, out_dir):
    import atexit

    atexit.register(lambda: open(os.path.join(out_dir, "atexit%d.txt" % rank), "w").close())


def test_children_end_without_interpreter_teardown_but_run_their_atexit_hooks(tmp_path):
    distributed.launch(_atexit_worker, 2, device="cpu", args=(str(tmp_path),))
    assert sorted(os.listdir(tmp_path)) == ["atexit0.txt", "atexit1.txt"]


def _raise_worker(rank):
    raise ValueError("rank %d failed on purpose" % rank)


def test_a_child_that_stops_on_purpose_ends_launch_with_its_exit_code():
    # Rank 1 stops with code 3 (as diverged training stops with 1): the parent exits with that
    # code, with no traceback (SystemExit), and rank 0 is not left waiting at the final barrier.
    try:
        distributed.launch(_stop_with_code_worker, 2, device="cpu", args=(3,))
    except SystemExit as exc:
        assert exc.code == 3
    else:
        raise AssertionError("launch returned although a child exited with code 3")


def test_a_child_stopping_with_a_message_prints_it_and_exits_with_1(tmp_path):
    try:
        distributed.launch(_stop_with_message_worker, 2, device="cpu", args=(str(tmp_path),))
    except SystemExit as exc:
        assert exc.code == 1
    else:
        raise AssertionError("launch returned although the children exited with a message")
    # whichever child exited first said why (the other may have been stopped by then)
    said = [(tmp_path / ("stderr%d.txt" % r)).read_text() for r in range(2) if (tmp_path / ("stderr%d.txt" % r)).exists()]
    assert any("stopping on purpose" in text for text in said)


def test_a_child_exception_reaches_the_parent_with_its_message():
    try:
        distributed.launch(_raise_worker, 2, device="cpu")
    except torch.multiprocessing.ProcessRaisedException as exc:
        assert "failed on purpose" in str(exc)
    else:
        raise AssertionError("launch returned although every child raised")


def test_launch_one_process_runs_in_place_without_process_group():
    seen = []
    distributed.launch(lambda rank, x: seen.append((rank, x, torch.distributed.is_initialized())), 1, args=("a",))
    assert seen == [(0, "a", False)]
    assert distributed.broadcast_object(5) == 5


def test_torchrun_env_is_read_from_torch_variables(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.torchrun_env() is None
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.torchrun_env() == (5, 8, 1)
    assert distributed.backend_for("cuda") == "nccl" and distributed.backend_for("cpu") == "gloo"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_train_py_runs_under_torchrun(tmp_path):
    """The same train.py under torchrun: 2 processes, one run folder (made by rank 0, its name
    broadcast to rank 1), one final snapshot."""
    outdir = tmp_path / "runs"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), os.path.join(REPO, "train.py"),
           "--outdir", str(outdir), "--kimg", "0.016", "--batch", "8", "--metrics", "none", "--aug", "noaug"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (run,) = os.listdir(outdir)
    assert run == "00000-builtin-cpu-kimg0.016-batch8-noaug"
    options = json.load(open(outdir / run / "training_options.json"))
    assert options["num_gpus"] == 2 and options["batch_gpu"] == 4
    assert "(2 process(es)" in open(outdir / run / "log.txt").read()
    assert [f for f in os.listdir(outdir / run) if f.endswith(".pkl")]


def _tiny_config(run_dir, num_gpus):
    """The CLI's own config for a tiny run: cpu preset, global batch 8 in rounds of 4 per process."""
    from training import options

    _, c, _ = options.build_config(gpus=num_gpus, cfg="cpu", batch=8, kimg=0.032, aug="noaug", metrics=[], seed=3)
    c["batch_gpu"] = 4  # one process accumulates 2 rounds of 4 = what 2 processes do in one round
    c["run_dir"] = str(run_dir)
    c["image_snapshot_ticks"] = c["network_snapshot_ticks"] = 1000  # only the final snapshot
    os.makedirs(run_dir)
    return c


def _final_networks(run_dir):
    from training import snapshot

    return snapshot.load_network_file(snapshot.latest_snapshot(str(run_dir)))


def test_two_gloo_processes_match_one_process_with_same_global_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # as train.py sets it; spawned children read it
    one = _tiny_config(tmp_path / "one", 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the 1-process run happens in this process: keep it light, like each of the two
    try:
        distributed.launch(distributed.run_training_loop, 1, "cpu", args=(one,))
    finally:
        torch.set_num_threads(threads)
    two = _tiny_config(tmp_path / "two", 2)
    distributed.launch(distributed.run_training_loop, 2, "cpu", args=(two,))
    a, b = _final_networks(tmp_path / "one"), _final_networks(tmp_path / "two")
    for name in ("G", "D", "G_ema"):
        sa, sb = a[name].state_dict(), b[name].state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-3, atol=1e-4, msg=lambda m: "%s.%s: %s" % (name, key, m))
    # G_ema starts as a copy of G and lags behind it: a difference proves that steps were taken,
    # so the equality above is not that of two untouched initialisations.
    g, g_ema = a["G"].state_dict(), a["G_ema"].state_dict()
    assert any(not torch.equal(g[k], g_ema[k]) for k in g if g[k].is_floating_point())


def _nda_config(run_dir, num_gpus, mode):
    from nda_stylegan.plugin import plugin

    c = _tiny_config(run_dir, num_gpus)
    plugin.rewrite_config(c, {"nda": "jigsaw,stitch", "nda_mode": mode})
    return c


@pytest.mark.parametrize("mode", ["weighted", "mixture"])
def test_with_nda_two_gloo_processes_match_one_process(tmp_path, monkeypatch, mode):
    """Negatives are a function of (seed, step, global round): the same for 1 or 2 processes."""
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    one = _nda_config(tmp_path / "one", 1, mode)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        distributed.launch(distributed.run_training_loop, 1, "cpu", args=(one,))
    finally:
        torch.set_num_threads(threads)
    distributed.launch(distributed.run_training_loop, 2, "cpu", args=(_nda_config(tmp_path / "two", 2, mode),))
    a, b = _final_networks(tmp_path / "one"), _final_networks(tmp_path / "two")
    for name in ("G", "D", "G_ema"):
        sa, sb = a[name].state_dict(), b[name].state_dict()
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-3, atol=1e-4, msg=lambda m: "%s.%s: %s" % (name, key, m))


FIXTURE_STATS = os.path.join(REPO, "tests", "fixtures", "nvidia_stats")


def _mixture_stats_worker(rank, out_dir):
    """Spawned child: NDALoss in mixture mode inside a 'fork' whose training_stats all-reduces by
    position; D steps with per-rank seeds, so in some steps one rank replaces nothing."""
    sys.path.insert(0, FIXTURE_STATS)
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from torch_utils import training_stats

    import test_nda_loss as host
    from nda_stylegan.loss import NDALoss

    G, D, aug, inner, kwargs = host.make_host("cur_nimg", group_size=4, augment=False)
    loss = NDALoss(nda_inner_class_name=inner, nda_spec=host.FlipPipe([True] * 4), nda_lambda=0.5,
                   nda_mode="mixture", **kwargs)
    assert loss._training_stats is training_stats
    batch = host.make_batch()
    replaced = []
    for step in range(8):
        torch.manual_seed(1000 * step + rank)
        before = len(D.inputs)
        host.run_phase(loss, "Dmain", D, batch, "cur_nimg")
        gen = G.synthesis(G.mapping(batch[2], batch[3])).detach()
        replaced.append(not torch.equal(D.inputs[before][0], gen))
        training_stats.sync()  # raises if the ranks' names disagree
    with open(os.path.join(out_dir, "rank%d.json" % rank), "w") as f:
        json.dump(replaced, f)


def test_mixture_statistics_agree_across_ranks_when_one_replaces_nothing(tmp_path):
    distributed.launch(_mixture_stats_worker, 2, "cpu", args=(str(tmp_path),))
    ranks = [json.load(open(tmp_path / ("rank%d.json" % r))) for r in (0, 1)]
    assert any(a != b for a, b in zip(*ranks))  # some step had one rank replacing and the other not


def _metric_scenario_worker(rank, config, scenario, out_dir):
    """Spawned child: the real training loop with metrics replaced by stand-ins. ``fails_midway``:
    rank 1's metric raises while rank 0's waits in a collective, as a real metric's would.
    ``missing_on_one``: only rank 1 lacks the metric's detector."""
    from metrics import detectors, registry

    def compute_metric(name, **kwargs):
        with open(os.path.join(out_dir, "computed%d.txt" % rank), "a") as f:
            f.write(name + "\n")
        if scenario == "fails_midway" and rank == 1:
            raise RuntimeError("disk full")
        torch.distributed.all_reduce(torch.ones(1))
        return dict(metric=name, results={name: 1.0})

    def check_metric_needs(names, detectors_dir=None, download=True):
        if scenario == "missing_on_one" and rank == 1:
            raise detectors.DetectorUnavailableError("detector file gone")

    registry.compute_metric, registry.check_metric_needs = compute_metric, check_metric_needs
    registry.report_metric = lambda result, run_dir=None, snapshot_pkl=None: None
    distributed.run_training_loop(rank, config)


def _launch_metric_scenario(run_dir, scenario, out_dir):
    c = _tiny_config(run_dir, 2)
    c["metrics"] = ["swd"]
    distributed.launch(_metric_scenario_worker, 2, "cpu", args=(c, scenario, out_dir))


def _run_metric_scenario(tmp_path, scenario):
    code = ("import sys; sys.path[:0] = [%r, %r]; import test_distributed as t; t._launch_metric_scenario(%r, %r, %r)"
            % (REPO, os.path.join(REPO, "tests"), str(tmp_path / "run"), scenario, str(tmp_path)))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))


def test_a_metric_failing_in_one_process_stops_the_run_with_one_line_instead_of_hanging(tmp_path):
    proc = _run_metric_scenario(tmp_path, "fails_midway")
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = "Error: metric swd failed in process 1 of 2 (disk full); the others cannot go on in step with it"
    assert line in proc.stderr and line in (tmp_path / "run" / "log.txt").read_text()
    assert list((tmp_path / "run").glob("network-snapshot-*.pkl"))  # written before the metrics ran


def test_a_metric_one_process_cannot_run_is_skipped_by_all_and_training_goes_on(tmp_path):
    proc = _run_metric_scenario(tmp_path, "missing_on_one")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(tmp_path.glob("computed*.txt"))  # neither process started it
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "Warning: metric swd skipped: another process cannot run it" in log and "Exiting..." in log
