"""experiments/nda_study.py, the NDA study driver: a tiny study run end to end through the CLI
(killed with SIGKILL mid-training, resumed, not rerun once finished), `rerun` reproducing its
resumed run bit for bit and catching a tampered value, the results file's tolerance of cut lines, the run-folder logic, the plan table, the promotion step, the statistics
against known values and a report that is the same to the byte when made twice."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import stats

from experiments import nda_study, study_plan, study_promote, study_report, study_runner, study_runs
from experiments import study_rerun, study_stats
from experiments.study_results import append_record, index_results, read_results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DRIVER = os.path.join(REPO, "experiments", "nda_study.py")
# 2 arms, 1 seed, a fraction of a kimg at batch 8, SWD on 64 images: the same driver and scripts
# as the real study, on a budget of seconds.
TINY_PLAN = {
    "train_options": ["--cfg=cpu", "--metrics=none", "--batch=8"],
    "metrics": [{"name": "swd", "options": ["--num-images=64"]}],
    "parts": {"tiny": {"kimg": 0.128, "snap": 1, "eval_kimg": [0], "seeds": [0],
                       "arms": [["baseline", []], ["nda", ["--nda=jigsaw"]]]}},
}


def driver_env():
    # The reference ops: no kernel build (or wait on another process's build) inside this test.
    return dict(os.environ, NDA_STYLEGAN_OPS="reference")


def driver_cmd(tmp_path, *args):
    return [sys.executable, DRIVER] + list(args) + ["--plan", str(tmp_path / "plan.json"),
                                                    "--results", str(tmp_path / "results.jsonl"),
                                                    "--workdir", str(tmp_path / "runs")]


def processes_mentioning(text):
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                continue
    return found


# ------------------------------------------------------------------------------ end to end
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds orphaned trainers through /proc (Linux)")


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The tiny plan's study, killed with SIGKILL mid-training and then run to its end: ``(folder,
    the finishing driver's CompletedProcess)``."""
    tmp_path = tmp_path_factory.mktemp("tiny-study")
    (tmp_path / "plan.json").write_text(json.dumps(TINY_PLAN))
    root = tmp_path / "runs" / "tiny" / "baseline" / "seed0"
    first = subprocess.Popen(driver_cmd(tmp_path, "run", "--workers", "2"), cwd=str(tmp_path), env=driver_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not list(root.glob("0*/network-snapshot-000000.pt")):  # the tick-0 snapshot; 15 steps still to go
        assert first.poll() is None and time.time() < deadline, first.stdout.read().decode()[-3000:]
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    first.stdout.close()
    deadline = time.time() + 20
    while processes_mentioning(str(tmp_path / "runs")):  # the trainers die with the driver
        assert time.time() < deadline, "a trainer outlived its killed driver"
        time.sleep(0.1)
    assert not (root / "trained.json").exists()
    assert read_results(str(tmp_path / "results.jsonl")) == ([], 0)
    second = subprocess.run(driver_cmd(tmp_path, "run", "--workers", "2"), cwd=str(tmp_path), env=driver_env(),
                            capture_output=True, text=True, timeout=300)
    return tmp_path, second


@needs_proc
def test_tiny_study_killed_mid_training_resumes_then_is_not_rerun(tiny_study):
    tmp_path, second = tiny_study
    root = tmp_path / "runs" / "tiny" / "baseline" / "seed0"
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resume tiny/baseline seed 0 from kimg 0" in second.stdout
    assert "study: 0 runs left" in second.stdout  # the progress line of the last run
    info = json.loads((root / "run.json").read_text())
    assert [s["resume"] is None for s in info["segments"]] == [True, False]
    assert info["segments"][1]["resume"].endswith("network-snapshot-000000.pt")
    assert len(study_runs.segments(str(root))) == 2

    records, bad = read_results(str(tmp_path / "results.jsonl"))
    assert bad == 0 and len(records) == 2
    by_arm = {r["arm"]: r for r in records}
    assert sorted(by_arm) == ["baseline", "nda"]
    base = by_arm["baseline"]
    assert (base["part"], base["seed"], base["kimg"], base["metric"], base["type"]) == ("tiny", 0, 0, "swd", "metric")
    assert base["segments"] == 2 and by_arm["nda"]["segments"] in (1, 2)
    assert base["train_command"] == ("python train.py --outdir %s --seed 0 --kimg 0.128 --snap 1 --cfg=cpu "
                                     "--metrics=none --batch=8" % root)
    assert by_arm["nda"]["train_command"].endswith("--batch=8 --nda=jigsaw")
    assert base["metric_options"] == ["--num-images=64"] and "--num-images=64" in base["eval_command"]
    assert base["train_cpu_s"] is None and base["cpu_s_per_kimg"] is None  # its first segment died with its driver
    nda = by_arm["nda"]
    if nda["segments"] == 1:  # trained by one driver from start to end: its CPU time is known
        assert nda["train_cpu_s"] > 0 and nda["cpu_s_per_kimg"] == pytest.approx(nda["train_cpu_s"] / 0.128)
    for r in records:
        assert np.isfinite(r["results"]["swd_avg"]) and r["train_wall_s"] > 0 and r["s_per_kimg"] > 0
        assert r["eval_wall_s"] > 0 and len(r["commit"]) == 40 and isinstance(r["dirty"], bool)
        assert os.path.isfile(r["snapshot"])

    before = (tmp_path / "results.jsonl").read_bytes()
    third = subprocess.run(driver_cmd(tmp_path, "run", "--workers", "2"), cwd=str(tmp_path), env=driver_env(),
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr[-2000:]
    assert "2 runs planned, 2 already finished, 0 to do" in third.stdout
    assert (tmp_path / "results.jsonl").read_bytes() == before
    assert len(study_runs.segments(str(root))) == 2  # no train.py started

    status = subprocess.run(driver_cmd(tmp_path, "status"), env=driver_env(), capture_output=True, text=True)
    assert "done: seed 0" in status.stdout and "2 of 2 runs finished, 0 left" in status.stdout


def rerun_table(stdout):
    """The rerun's table as ``{key: {column: cell}}`` (the rows below its ``kimg  metric`` header)."""
    lines = stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("kimg  metric"))
    columns = ["kimg", "metric", "key", "recorded", "rerun", "difference", "sd", "tolerance", "verdict"]
    rows = [dict(zip(columns, line.split())) for line in lines[at + 1:] if line.split()[:2] == ["0", "swd"]]
    return {row["key"]: row for row in rows}


@needs_proc
def test_rerun_of_a_killed_and_resumed_run_reproduces_it_and_catches_a_tampered_value(tiny_study):
    tmp_path, _ = tiny_study
    results = tmp_path / "results.jsonl"
    recorded = {r["arm"]: r for r in read_results(str(results))[0]}["baseline"]
    assert recorded["segments"] == 2  # killed after its first snapshot, then resumed
    before = results.read_bytes()

    def rerun(path):
        return subprocess.run([sys.executable, DRIVER, "rerun", str(path), "--part", "tiny", "--arm", "baseline",
                               "--seed", "0", "--workdir", str(tmp_path / "rerun")],
                              env=driver_env(), capture_output=True, text=True, timeout=300)

    clean = rerun(results)
    assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr[-3000:]
    folder = tmp_path / "rerun" / "tiny" / "baseline" / "seed0" / "rerun-001"
    assert "rerun:    %s" % recorded["train_command"].replace(
        str(tmp_path / "runs" / "tiny" / "baseline" / "seed0"), str(folder)) in clean.stdout
    assert len(study_runs.segments(str(folder))) == 1  # trained in one go
    # One torch thread, same seed, exact resume: the uninterrupted rerun has the resumed run's networks.
    assert "kimg 0: networks identical to the recorded snapshot, bit for bit" in clean.stdout
    table = rerun_table(clean.stdout)
    assert sorted(table) == ["swd_16", "swd_32", "swd_avg"]
    for key, row in table.items():
        assert float(row["rerun"]) == pytest.approx(recorded["results"][key], rel=1e-5) and row["difference"] == "+0"
        assert row["verdict"] == "ok" and float(row["tolerance"]) > 0  # the seeds' spread: not zero
    assert "reproduced: all 3 values within the metric's own noise" in clean.stdout
    assert results.read_bytes() == before  # a rerun records nothing

    # A copy of the results with swd_avg moved by 3 tolerances and swd_16 by half of one.
    tolerance = {key: float(row["tolerance"]) for key, row in table.items()}
    lines = [json.loads(line) for line in before.decode().splitlines()]
    for line in lines:
        if line["arm"] == "baseline":
            line["results"]["swd_avg"] += 3 * tolerance["swd_avg"]
            line["results"]["swd_16"] -= 0.5 * tolerance["swd_16"]
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("".join(json.dumps(line) + "\n" for line in lines))
    caught = rerun(tampered)
    assert caught.returncode == 1, caught.stdout[-3000:] + caught.stderr[-3000:]
    assert "NOT reproduced: 1 of 3 values outside the metric's own noise" in caught.stderr
    table = rerun_table(caught.stdout)
    assert {key: row["verdict"] for key, row in table.items()} == {"swd_16": "ok", "swd_32": "ok",
                                                                  "swd_avg": "OUTSIDE"}
    assert float(table["swd_avg"]["difference"]) == pytest.approx(-3 * tolerance["swd_avg"], rel=1e-3)
    assert (tmp_path / "rerun" / "tiny" / "baseline" / "seed0" / "rerun-002").is_dir()  # its own fresh folder


# A stand-in train.py: a tick every 2 kimg after the first batch (as the cpu preset at batch 16),
# a snapshot every 5 ticks whose file holds its kimg, the tick's stats line after the snapshot.
FAKE_TRAIN = """
import json, os, sys, time
seg = os.path.join(sys.argv[sys.argv.index("--outdir") + 1], "00000-fake")
os.makedirs(seg)
for tick in range(26):
    kimg = min(0.016 + 2 * tick, 50.0)
    if tick % 5 == 0 or kimg == 50.0:
        with open(os.path.join(seg, "network-snapshot-%06d.pt" % int(kimg)), "w") as f:
            f.write(str(int(kimg)))
    with open(os.path.join(seg, "stats.jsonl"), "a") as f:
        f.write(json.dumps({"Progress/tick": {"mean": tick}, "Progress/kimg": {"mean": kimg},
                            "Timing/sec_per_kimg": {"mean": 0.1}, "Timing/total_sec": {"mean": 0.2 * tick}}) + "\\n")
    time.sleep(0.2)
"""
# A stand-in calc_metrics.py: 10 x the snapshot's kimg plus the evaluation seed (SD 1 over seeds 0, 1, 2).
FAKE_METRIC = """
import json, sys
net, seed = sys.argv[sys.argv.index("--network") + 1], int(sys.argv[sys.argv.index("--seed") + 1])
print(json.dumps({"metric": "fake", "results": {"fake_value": 10 * int(open(net).read()) + seed}}))
"""


def test_rerun_up_to_a_kimg_ends_the_trainer_once_those_snapshots_are_final(tmp_path):
    (tmp_path / "train.py").write_text(FAKE_TRAIN)
    (tmp_path / "metric.py").write_text(FAKE_METRIC)
    results = tmp_path / "results.jsonl"
    for kimg, value in [(0, 0.0), (10, 100.0), (20, 200.0), (50, 500.0)]:
        append_record(str(results), dict(
            type="metric", part="p", arm="a", arm_index=0, baseline_arm="a", seed=0, kimg=kimg, metric="fake",
            results={"fake_value": value}, snapshot="runs/gone-%d.pt" % kimg, s_per_kimg=0.1,
            train_command="python %s --outdir %s --seed 0 --kimg 50" % (tmp_path / "train.py", tmp_path / "runs"),
            eval_command="python %s --network runs/gone.pt --metrics fake --seed 0" % (tmp_path / "metric.py")))
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text(results.read_text().replace('"fake_value": 100.0', '"fake_value": 103.0'))

    def rerun(path):
        return subprocess.run([sys.executable, DRIVER, "rerun", str(path), "--part", "p", "--arm", "a", "--seed", "0",
                               "--kimg", "15", "--workdir", str(tmp_path / "rerun")],
                              env=driver_env(), capture_output=True, text=True, timeout=120)

    clean = rerun(results)
    assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr[-3000:]
    folder = tmp_path / "rerun" / "p" / "a" / "seed0" / "rerun-001"
    # Snapshot 10 (at 10.016 kimg) is final once a tick reaches kimg 11: the trainer is ended soon after.
    assert 11 <= study_runs.trained_kimg(str(folder)) <= 20
    assert "ended train.py after its tick at kimg" in clean.stdout
    assert sorted(study_runs.snapshots(str(folder))) in ([0, 10], [0, 10, 20])
    assert "snapshot(s) at kimg 0, 10; 2 metric line(s)" in clean.stdout and "not on this machine" in clean.stdout
    rows = [line.split() for line in clean.stdout.splitlines() if line.split()[1:3] == ["fake", "fake_value"]]
    assert [(r[0], r[4], r[5], r[6], r[7], r[8]) for r in rows] == [("0", "0", "+0", "1", "2.828", "ok"),
                                                                    ("10", "100", "+0", "1", "2.828", "ok")]
    caught = rerun(tampered)
    assert caught.returncode == 1 and "NOT reproduced: 1 of 2 values outside the metric's own noise" in caught.stderr
    assert "10    fake    fake_value  103       100    -3          1         2.828      OUTSIDE" in caught.stdout


def test_rerun_commands_change_only_the_output_folder_or_the_network():
    command = ("python train.py --outdir runs/main/baseline/seed0 --seed 3 --kimg 50 --snap 5 --cfg=cpu "
               "--nda-lambda=0.25")
    assert study_rerun.rerun_train_argv(command, "elsewhere") == shlex.split(command.replace(
        "runs/main/baseline/seed0", "elsewhere"))
    argv = ["python", "calc_metrics.py", "--network=a b.pt", "--seed", "0"]
    assert study_rerun.with_option(argv, "--network", "c.pt") == ["python", "calc_metrics.py", "--network=c.pt",
                                                                    "--seed", "0"]
    assert study_rerun.option_value(argv, "--seed") == "0" and study_rerun.option_value(argv, "--kimg") is None
    with pytest.raises(ValueError, match="has no --outdir option"):
        study_rerun.with_option(["python", "train.py"], "--outdir", "x")


def test_the_noise_tolerance_is_two_root_two_standard_deviations():
    assert study_rerun.noise_tolerance([1.0, 2.0, 3.0]) == pytest.approx(2 * np.sqrt(2))  # sd 1
    assert study_rerun.noise_tolerance([5.0, 5.0]) == 0.0
    assert study_rerun.within_noise(10.0, 12.8, 2.83) and not study_rerun.within_noise(10.0, 12.9, 2.83)
    assert study_rerun.within_noise(float("nan"), float("nan"), 0.0)
    assert study_rerun.within_noise(float("inf"), float("inf"), 0.0)
    assert not study_rerun.within_noise(1.0, float("nan"), 1.0)


def test_networks_are_compared_tensor_for_tensor(tmp_path):
    import torch
    from trainer_helpers import tiny_networks
    from training import snapshot

    G, D = tiny_networks()
    snapshot.save_snapshot(str(tmp_path / "a"), dict(G=G, D=D, G_ema=G), {})
    assert "networks identical to the recorded snapshot, bit for bit" in study_rerun.network_sentence(
        10, str(tmp_path / "a.pt"), str(tmp_path / "a.pt"))
    with torch.no_grad():
        next(D.parameters()).add_(0.25)
    snapshot.save_snapshot(str(tmp_path / "b"), dict(G=G, D=D, G_ema=G), {})
    sentence = study_rerun.network_sentence(10, str(tmp_path / "a.pt"), str(tmp_path / "b.pt"))
    assert "networks differ from the recorded snapshot: 1 of" in sentence and "largest difference 0.25" in sentence
    assert "not on this machine" in study_rerun.network_sentence(10, str(tmp_path / "gone.pt"), str(tmp_path / "a.pt"))


def test_rerun_refuses_bad_requests_in_one_line_before_training(tmp_path):
    results = tmp_path / "r.jsonl"
    line = dict(type="metric", part="main", arm="baseline", arm_index=0, baseline_arm="baseline", seed=0, kimg=10,
                metric="swd", results={"swd_avg": 1.0}, snapshot="runs/x.pt",
                eval_command="python calc_metrics.py --network runs/x.pt --metrics swd --seed 0",
                train_command="python train.py --outdir %s --seed 0 --kimg 50" % (tmp_path / "runs" / "main" /
                                                                                   "baseline" / "seed0"))
    append_record(str(results), line)
    base = ["rerun", str(results), "--part", "main", "--arm", "baseline", "--seed", "0",
            "--workdir", str(tmp_path / "rerun")]
    cases = [
        (["rerun", str(tmp_path / "missing.jsonl"), "--part", "main", "--arm", "baseline", "--seed", "0"],
         "is not a file"),
        (base[:6] + ["--seed", "1"], "no metric line of main/baseline seed 1 in the results file; it has main/baseline "
                                     "seed 0"),
        (base + ["--kimg", "5"], "has recorded snapshots at kimg 10; give a K at or above the first of them"),
        (base + ["--noise-seeds", "0"], "--noise-seeds must be at least 1"),
        (base[:-1] + [str(tmp_path / "runs")], "would share the recorded run's folder"),
    ]
    for args, expect in cases:
        result = CliRunner().invoke(nda_study.cli, args)
        assert result.exit_code == 2 and expect in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "rerun").exists()
    append_record(str(results), dict(line, kimg=20, train_command=line["train_command"] + " --nda=jigsaw"))
    result = CliRunner().invoke(nda_study.cli, base)
    assert result.exit_code == 2 and "do not share one recorded train_command" in result.output


# ------------------------------------------------------------------------------ results file
def test_a_cut_last_line_is_ignored_and_the_next_append_stays_whole(tmp_path):
    path = str(tmp_path / "r.jsonl")
    append_record(path, dict(type="metric", part="p", arm="a", seed=0, kimg=10, metric="swd", results={"x": 1.0}))
    with open(path, "ab") as f:
        f.write(b'{"type": "metric", "part": "p", "arm": "a", "seed": 1, "kimg": 10, "met')  # killed mid-line
    records, bad = read_results(path)
    assert len(records) == 1 and bad == 1
    append_record(path, dict(type="metric", part="p", arm="a", seed=2, kimg=10, metric="swd", results={"x": 3.0}))
    records, bad = read_results(path)
    assert [r["seed"] for r in records] == [0, 2] and bad == 1
    metrics, _, _ = index_results(records)
    assert ("p", "a", 1, 10, "swd") not in metrics and ("p", "a", 2, 10, "swd") in metrics


def test_unreadable_lines_are_counted_and_the_first_of_a_key_wins(tmp_path):
    path = tmp_path / "r.jsonl"
    line = dict(type="metric", part="p", arm="a", seed=0, kimg=10, metric="swd")
    path.write_text("\n".join([json.dumps(dict(line, results={"v": 1})), "not json", "[1, 2]",
                               json.dumps(dict(line, results={"v": 2})), ""]))
    records, bad = read_results(str(path))
    assert bad == 2 and len(records) == 2
    metrics, _, _ = index_results(records)
    assert metrics[("p", "a", 0, 10, "swd")]["results"] == {"v": 1}
    assert read_results(str(tmp_path / "missing.jsonl")) == ([], 0)


# ------------------------------------------------------------------------------ run folders
def write_segment(root, name, kimgs, ticks):
    seg = root / name
    seg.mkdir(parents=True)
    for k in kimgs:
        (seg / ("network-snapshot-%06d.pt" % k)).write_bytes(b"x")
        (seg / ("network-snapshot-%06d.pkl" % k)).write_bytes(b"x")
    lines = [json.dumps({"Progress/tick": {"mean": t}, "Timing/sec_per_kimg": {"mean": s},
                         "Timing/total_sec": {"mean": total}}) for t, s, total in ticks]
    (seg / "stats.jsonl").write_text("\n".join(lines) + "\n" + '{"Progress/tick": {"me')  # cut last line
    return seg


def test_resume_point_and_timing_span_all_segments(tmp_path):
    root = tmp_path / "seed0"
    assert study_runs.latest_snapshot(str(root)) is None
    write_segment(root, "00000-a", [0, 10, 20], [(0, 90.0, 5.0), (1, 12.0, 30.0), (2, 14.0, 60.0)])
    (root / "00000-a" / "network-snapshot-000030.pkl").write_bytes(b"x")  # .pkl without .pt: incomplete
    seg = write_segment(root, "00002-a-resumecustom", [30], [(11, 13.0, 20.0), (12, 100.0, 45.0)])
    (root / "00001-a-resumecustom").mkdir()  # a start killed before its first snapshot
    (root / "run.json").write_text("{}")
    assert [os.path.basename(s) for s in study_runs.segments(str(root))] == [
        "00000-a", "00001-a-resumecustom", "00002-a-resumecustom"]
    assert study_runs.latest_snapshot(str(root)) == (30, str(seg / "network-snapshot-000030.pt"))
    assert sorted(study_runs.snapshots(str(root))) == [0, 10, 20, 30]
    later = seg / "network-snapshot-000030_500.pt"  # a later snapshot within kimg 30
    later.write_bytes(b"x")
    os.utime(str(later), (os.path.getmtime(str(later)) + 1,) * 2)
    assert study_runs.latest_snapshot(str(root)) == (30, str(later))
    assert study_runs.snapshots(str(root))[30] == str(later)  # the last one written within the kimg
    wall, per_kimg = study_runs.train_timing(str(root))
    assert wall == pytest.approx(60.0 + 45.0)
    assert per_kimg == pytest.approx(np.median([12.0, 14.0, 13.0, 100.0]))  # tick 0 left out


def test_a_run_started_with_other_options_is_refused_not_mixed(tmp_path):
    study = study_plan.study_from_dict(TINY_PLAN)
    driver = study_runner.Driver(study, str(tmp_path / "r.jsonl"), str(tmp_path / "runs"), 1, out=open(os.devnull, "w"))
    task = study_runner.plan_tasks(study, ["tiny"], str(tmp_path / "runs"), {})[0]
    os.makedirs(task.root)
    study_runs.write_json(os.path.join(task.root, "run.json"),
                          dict(command="python train.py --outdir x --nda-lambda=0.5", segments=[]))
    assert driver.run_task(task) == "failed"
    assert "plan now gives" in driver.failures[0] and not study_runs.segments(task.root)


def test_a_diverged_run_is_never_retrained_but_its_written_snapshots_are_scored(tmp_path):
    study = study_plan.study_from_dict(TINY_PLAN)
    results = str(tmp_path / "r.jsonl")
    append_record(results, dict(type="diverged", part="tiny", arm="baseline", arm_index=0, baseline_arm="baseline",
                                seed=0, message="Error: training diverged at kimg 0.1"))
    out = open(os.devnull, "w")
    driver = study_runner.Driver(study, results, str(tmp_path / "runs"), 1, out=out, env=driver_env())
    task = study_runner.plan_tasks(study, ["tiny"], str(tmp_path / "runs"), {})[0]
    assert driver.is_complete(task)  # it wrote no snapshot: nothing to score
    write_segment(tmp_path / "runs" / "tiny" / "baseline" / "seed0", "00000-x", [0], [(1, 12.0, 30.0)])
    assert not driver.is_complete(task)
    assert driver.run_task(task) == "failed"  # the stand-in snapshot is no network: calc_metrics says so
    assert "calc_metrics.py swd" in driver.failures[0]
    assert len(study_runs.segments(task.root)) == 1 and not os.path.exists(os.path.join(task.root, "run.json"))


def test_the_eta_comes_from_whole_runs_in_the_results_file_not_from_this_drivers_clock(tmp_path):
    plan = dict(TINY_PLAN, parts={"tiny": dict(TINY_PLAN["parts"]["tiny"], seeds=[0, 1, 2])})
    study = study_plan.study_from_dict(plan)
    results = str(tmp_path / "r.jsonl")
    for seed, train in ((0, 600.0), (1, 900.0)):  # two whole runs of the baseline, one evaluation each
        append_record(results, dict(type="metric", part="tiny", arm="baseline", arm_index=0, baseline_arm="baseline",
                                    seed=seed, kimg=0, metric="swd", results={"swd_avg": 1.0}, train_wall_s=train,
                                    eval_wall_s=60.0 + seed))
    driver = study_runner.Driver(study, results, str(tmp_path / "runs"), 2, out=open(os.devnull, "w"))
    tasks = study_runner.plan_tasks(study, ["tiny"], str(tmp_path / "runs"), {})
    assert driver.run_cost(tasks) == pytest.approx((660.0 + 961.0) / 2)
    # Just finished by this driver in 5 s (a restart that only had one evaluation left): 4 runs are
    # left, at the recorded median cost over 2 workers.
    line = driver._progress_line(tasks[0], 5.0, tasks)
    assert line == "done tiny/baseline seed 0 in 5s; study: 4 runs left, ETA 27m 01s at 2 worker(s)"
    empty = study_runner.Driver(study, str(tmp_path / "none.jsonl"), str(tmp_path / "runs"), 2, out=open(os.devnull, "w"))
    assert empty.run_cost(tasks) is None and "ETA unknown" in empty._progress_line(tasks[0], 5.0, tasks)


def test_a_childs_cpu_time_is_measured_apart_from_its_waiting(tmp_path):
    study = study_plan.study_from_dict(TINY_PLAN)
    driver = study_runner.Driver(study, str(tmp_path / "r.jsonl"), str(tmp_path / "runs"), 1, out=open(os.devnull, "w"))
    burn_then_sleep = ("import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
                       "time.sleep(0.6)\n")
    usage = {}
    start = time.time()
    rc, _ = driver.spawn(["python", "-c", burn_then_sleep], usage=usage)
    wall = time.time() - start
    assert rc == 0 and 0.3 <= usage["cpu_s"] < wall - 0.5  # the sleep is wall time, not CPU time
    rc, _ = driver.spawn(["python", "-c", "import sys; sys.exit(3)"], usage=usage)
    assert rc == 3 and usage["cpu_s"] > 0


def test_cpu_time_per_kimg_needs_every_segments_cpu_time(tmp_path):
    task = study_runner.plan_tasks(study_plan.study_from_dict(TINY_PLAN), ["tiny"], str(tmp_path), {})[0]
    known = study_runner.Driver._timing(task, dict(segments=[dict(cpu_s=10.0), dict(cpu_s=22.0)]))
    assert known["train_cpu_s"] == 32.0 and known["cpu_s_per_kimg"] == pytest.approx(32.0 / 0.128)
    unknown = study_runner.Driver._timing(task, dict(segments=[dict(cpu_s=10.0), dict(resume="x")]))
    assert unknown["train_cpu_s"] is None and unknown["cpu_s_per_kimg"] is None


# ------------------------------------------------------------------------------ the plan
def test_the_declared_plan_matches_the_study_design():
    main, limited, sweep = (study_plan.STUDY.part(p) for p in ("main", "limited", "sweep"))
    assert main.arm_names() == ["baseline", "nda-weighted", "reweight-only", "nda-mixture", "nda-jigsaw"]
    assert len(main.seeds) >= 5 and main.kimg >= 50 and limited.seeds == main.seeds
    assert dict(main.arms)["reweight-only"] == ("--nda-mode=reweight", "--nda-lambda=0.25")
    assert limited.options == ("--subset=2000",) and limited.arm_names() == ["baseline", "nda-weighted", "nda-mixture",
                                                                                      "nda-jigsaw"]
    grid = [a for a in sweep.arm_names() if a != "baseline"]
    assert len(grid) == 8 and len(sweep.seeds) == 3 and not set(sweep.seeds) & set(main.seeds)
    assert {m.name for m in study_plan.METRICS} == {study_plan.FD_METRIC, "swd", "nda_auroc"}
    from training import presets

    per_snapshot = presets.PRESETS["cpu"]["kimg_per_tick"] * study_plan.SNAP_TICKS
    for part in study_plan.PARTS:
        assert all(k % per_snapshot == 0 for k in part.eval_kimg), "a planned kimg falls between snapshots"
        assert part.eval_kimg == (10, 20, 30, 40, 50)


def test_every_arm_of_the_plan_is_accepted_by_train_py(tmp_path):
    import train

    options = {tuple(study_plan.TRAIN_OPTIONS) + p.options + arm for p in study_plan.PARTS for _, arm in p.arms}
    for opts in sorted(options):
        result = CliRunner().invoke(train.main, ["--outdir", str(tmp_path), "--dry-run"] + list(opts))
        assert result.exit_code == 0, (opts, result.output[-1500:])


def test_bad_plans_and_arguments_are_one_line_errors(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.json"
    for text, expect in [("{", "not valid JSON"), ('{"parts": {}}', "at least one part"),
                         (json.dumps({"parts": {"p": {"arms": [["x", []]], "seeds": [0], "kimg": 1, "snap": 1,
                                                      "eval_kimg": [0]}}}), "baseline arm")]:
        bad.write_text(text)
        result = runner.invoke(nda_study.cli, ["status", "--plan", str(bad)])
        assert result.exit_code == 2 and expect in result.output and "Traceback" not in result.output
    bad.write_text(json.dumps(dict(TINY_PLAN, metrics=[{"name": "fd_not_here"}])))
    result = runner.invoke(nda_study.cli, ["run", "--plan", str(bad), "--results", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 2 and "metric 'fd_not_here' is not in this checkout" in result.output
    assert not (tmp_path / "r.jsonl").exists()
    for args, expect in [(["run", "--part", "nope"], "unknown part"), (["run", "--workers", "0"], "at least 1"),
                         (["report", str(tmp_path / "missing.jsonl")], "is not a file")]:
        result = runner.invoke(nda_study.cli, args)
        assert result.exit_code == 2 and expect in result.output, result.output


# ------------------------------------------------------------------------------ statistics
def test_t_interval_of_a_known_sample():
    mean, low, high = study_stats.t_interval([1, 2, 3, 4, 5])
    half = 2.7764451051977987 * np.sqrt(2.5) / np.sqrt(5)  # t(0.975, 4) * s / sqrt(n)
    assert (mean, low, high) == pytest.approx((3.0, 3.0 - half, 3.0 + half))
    assert study_stats.t_interval([7.0]) == (7.0, None, None)


def test_paired_bootstrap_on_known_shifts():
    assert study_stats.paired_bootstrap([2.0, 2.0, 2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    rng = np.random.default_rng(0)
    d = 1.0 + rng.standard_normal(400)
    mean, low, high = study_stats.paired_bootstrap(d)
    half = stats.norm.ppf(0.975) * d.std(ddof=1) / np.sqrt(d.size)
    assert mean == pytest.approx(d.mean())
    assert low == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert high == pytest.approx(d.mean() + half, abs=0.15 * half)
    assert study_stats.paired_bootstrap(d) == (mean, low, high)  # fixed seed: reproducible
    no_shift = [-1.0, 1.0, -0.5, 0.5, 0.0]
    _, low, high = study_stats.paired_bootstrap(no_shift)
    assert low < 0 < high


def test_the_sentences_say_whether_a_difference_is_noise():
    worse = study_stats.verdict("nda", "baseline", "FD", "%.2f", True, [1.0, 2.0, 1.5, 0.5, 3.0])
    assert "1.60 higher (worse)" in worse and "both intervals exclude zero: distinguishable from noise" in worse
    noise = study_stats.verdict("nda", "baseline", "AUROC", "%.4f", False, [0.01, -0.02, 0.0, 0.01, -0.01])
    assert "not distinguishable from noise" in noise and "(worse)" in noise
    better = study_stats.verdict("nda", "baseline", "AUROC", "%.4f", False, [0.02, 0.03, 0.025])
    assert "higher (better)" in better and "both intervals exclude zero: distinguishable from noise" in better
    assert "too few paired seeds" in study_stats.verdict("nda", "baseline", "FD", "%.2f", True, [1.0])
    # Two seeds of one sign: the bootstrap interval is their range and excludes zero; no verdict.
    two = study_stats.verdict("nda", "baseline", "FD", "%.2f", True, [111.47, 411.87])
    assert study_stats.paired_bootstrap([111.47, 411.87])[1] > 0 and "too few paired seeds" in two
    # One large seed: the bootstrap excludes zero (every resample is positive), the t-interval does not.
    skewed = [0.1, 0.1, 5.0]
    assert study_stats.paired_bootstrap(skewed)[1] > 0 and study_stats.t_interval(skewed)[1] < 0
    assert "an interval includes zero: not distinguishable from noise" in study_stats.verdict(
        "nda", "baseline", "FD", "%.2f", True, skewed)


# ------------------------------------------------------------------------------ report
def synthetic_results(path, arms=("baseline", "nda-weighted", "reweight-only"), seeds=range(5), part="main",
                      shift=(0.0, 2.0, 0.0), kimgs=(10, 20, 30, 40, 50), seed_base=0):
    rng = np.random.default_rng(seed_base)
    for i, arm in enumerate(arms):
        for seed in seeds:
            for k in kimgs:
                fd = 60 - 0.6 * k + shift[i] + rng.normal(0, 0.3)
                common = dict(type="metric", part=part, arm=arm, arm_index=i, baseline_arm="baseline", seed=seed,
                              kimg=k, s_per_kimg=12.0 + i + rng.random(), train_wall_s=600.0 + seed, segments=1,
                              train_commits=["0" * 40], commit="0" * 40, dirty=False)
                append_record(path, dict(common, metric=study_plan.FD_METRIC, results={study_plan.FD_METRIC: fd}))
                append_record(path, dict(common, metric="nda_auroc", results={
                    "nda_auroc_neg_jigsaw": 0.8 + 0.01 * i + rng.normal(0, 0.01),
                    "nda_auroc_corrupt_gaussian_blur": 0.7, "nda_auroc_corrupt_jpeg": 0.6, "nda_auroc_mean": 0.7}))


def test_report_is_the_same_to_the_byte_and_shows_every_run(tmp_path):
    path = str(tmp_path / "results.jsonl")
    synthetic_results(path)
    append_record(path, dict(type="diverged", part="main", arm="nda-mixture", arm_index=3, baseline_arm="baseline",
                             seed=4, message="Error: training diverged at kimg 12.000"))
    with open(path, "a") as f:
        f.write('{"type": "metric", "part": "main", "ar')  # a cut line
    runner = CliRunner()
    outputs = []
    for out in ("a", "b"):
        result = runner.invoke(nda_study.cli, ["report", path, "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        outputs.append({name: (tmp_path / out / name).read_bytes() for name in sorted(os.listdir(tmp_path / out))})
    assert outputs[0] == outputs[1]
    text = outputs[0]["nda-study.md"].decode()
    assert "1 unreadable line ignored" in text and "(16 runs)" in text
    every_run = text.split("### Every run")[1]
    rows = [line for line in every_run.splitlines() if line.startswith("| `")]
    assert len(rows) == 16 and "diverged: Error: training diverged at kimg 12.000" in every_run
    # nda-weighted was made 2.0 worse on every seed (noise sd 0.3); reweight-only is the baseline plus noise.
    sentences = {s.split(",")[0]: s for s in text.splitlines() if s.startswith("- `") and "Frechet" in s}
    worse = sentences["- `nda-weighted` vs `baseline`"]
    assert 1.5 < float(worse.split(": ")[1].split()[0]) < 2.5
    assert "higher (worse)" in worse and "both intervals exclude zero: distinguishable from noise" in worse
    assert "includes zero: not distinguishable from noise" in sentences["- `reweight-only` vs `baseline`"]
    pngs = [n for n in outputs[0] if n.endswith(".png")]
    assert sorted(pngs) == ["nda-study-main-fdl0_10k_full.png", "nda-study-main-mean-nda_auroc_corrupt.png",
                            "nda-study-main-nda_auroc_neg_jigsaw.png"]
    for name in pngs:
        assert "](%s)" % name in text
        image = Image.open(tmp_path / "a" / name)
        assert image.size == (760, 440) and len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 10


def test_report_rewrites_only_the_readme_block_and_the_same_file_gives_the_same_bytes(tmp_path):
    from experiments import study_readme

    path = str(tmp_path / "results" / "results.jsonl")
    synthetic_results(path)  # main: baseline, nda-weighted, reweight-only, seeds 0-4, FD and nda_auroc
    plan = dict(TINY_PLAN, metrics=[{"name": study_plan.FD_METRIC}, {"name": "nda_auroc"}],
                parts={"main": {"kimg": 50, "snap": 5, "eval_kimg": [10, 20, 30, 40, 50], "seeds": [0, 1, 2, 3, 4],
                                "arms": [["baseline", []], ["nda-weighted", ["--nda=jigsaw"]],
                                         ["reweight-only", ["--nda-mode=reweight"]], ["nda-mixture", ["--nda=jigsaw"]]]},
                       "limited": {"kimg": 50, "snap": 5, "eval_kimg": [50], "seeds": [0, 1],
                                   "arms": [["baseline", []]]}})
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    readme = tmp_path / "README.md"
    before, after = "# Title\n\nWritten by people.\n\n", "\n## Next section\n\nAlso kept.\n"
    readme.write_text(before + study_readme.BEGIN + "\nold text\n" + study_readme.END + after)
    args = ["report", path, "--readme", str(readme), "--plan", str(tmp_path / "plan.json")]
    texts = []
    for _ in range(2):
        result = CliRunner().invoke(nda_study.cli, args)
        assert result.exit_code == 0, result.output
        texts.append(readme.read_text())
    assert texts[0] == texts[1] and "unchanged: " in result.output
    text = texts[0]
    assert text.startswith(before + study_readme.BEGIN) and text.endswith(study_readme.END + after)
    assert "old text" not in text
    assert "Finished so far: `main` 15 of 20 runs, `limited` 0 of 2 runs." in text
    assert "[`results/nda-study.md`](results/nda-study.md)" in text
    assert "](results/nda-study-main-fdl0_10k_full.png)" in text and (tmp_path / "results" /
                                                                      "nda-study-main-fdl0_10k_full.png").exists()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == ["baseline", "nda-weighted", "reweight-only"]
    sentences = [line for line in text.splitlines() if line.startswith("- `")]
    assert len(sentences) == 2 and all("Frechet distance" in line for line in sentences)
    # The rule's section: nda-weighted is 2.0 worse, so no NDA arm wins and nothing is recommended.
    assert "**Provisional**: 7 planned runs are not finished yet" in text
    assert "NDA arms that beat the baseline with both intervals excluding zero: none." in text
    assert "- Recommendation: none; the paper's defaults stay" in text
    # No markers: one error line, exit 2, and nothing is written (not even the report).
    bare = tmp_path / "bare.md"
    bare.write_text("# No block here\n")
    out = tmp_path / "elsewhere"
    result = CliRunner().invoke(nda_study.cli, ["report", path, "--readme", str(bare), "--out", str(out)])
    assert result.exit_code == 2 and "needs the marker lines" in result.output and not out.exists()
    assert bare.read_text() == "# No block here\n"


def test_mean_of_prefix_averages_the_corruption_sets():
    record = dict(results={"nda_auroc_corrupt_a": 0.5, "nda_auroc_corrupt_b": 0.7, "nda_auroc_neg_jigsaw": 0.9})
    assert study_report.value_of(record, "mean_of:nda_auroc_corrupt_") == pytest.approx(0.6)
    assert study_report.value_of(record, "nda_auroc_neg_jigsaw") == 0.9
    assert study_report.value_of(record, "missing") is None


# ------------------------------------------------------------------------------ promotion
def sweep_lines(path, best="lambda0.5-start10", skip=None):
    part = study_plan.STUDY.part("sweep")
    for i, (arm, _) in enumerate(part.arms):
        for seed in part.seeds:
            if (arm, seed) == skip:
                continue
            fd = 30.0 - (5.0 if arm == best else 0.0) + 0.1 * i + 0.01 * seed
            append_record(path, dict(type="metric", part="sweep", arm=arm, arm_index=i, baseline_arm="baseline",
                                     seed=seed, kimg=50, metric=study_plan.FD_METRIC,
                                     results={study_plan.FD_METRIC: fd}))


def test_promotion_waits_for_the_whole_sweep_then_records_the_rule_once(tmp_path):
    path = str(tmp_path / "results.jsonl")
    sweep_lines(path, skip=("lambda0.1-start0", 101))
    with pytest.raises(study_promote.NotReady, match="1 run"):
        study_promote.promote(study_plan.STUDY, path, "c" * 40, False)
    sweep_lines(str(tmp_path / "full.jsonl"))
    record = study_promote.promote(study_plan.STUDY, str(tmp_path / "full.jsonl"), "c" * 40, False)
    assert record["chosen_arm"] == "lambda0.5-start10"
    assert record["options"] == ["--nda=jigsaw,stitch", "--nda-mode=weighted", "--nda-lambda=0.5",
                                 "--nda-start-kimg=10"]
    assert record["means"]["lambda0.5-start10"] == pytest.approx(25.0 + 0.1 * 7 + 0.01 * 101)  # mean over seeds 100-102
    assert "baseline" not in record["means"]
    with pytest.raises(ValueError, match="already promoted"):
        study_promote.promote(study_plan.STUDY, str(tmp_path / "full.jsonl"), "c" * 40, False)
    records, _ = read_results(str(tmp_path / "full.jsonl"))
    _, _, promotions = index_results(records)
    # Both target parts get the arm on their own seeds, after their planned arms; the limited
    # part adds its own --subset, the sweep part (no options of its own) adds none.
    assert record["target_parts"] == ["main", "limited"]
    for part, index in (("main", 5), ("limited", 4)):
        tasks = study_runner.plan_tasks(study_plan.STUDY, [part], str(tmp_path / "runs"), promotions)
        promoted = [t for t in tasks if t.arm == "sweep-best"]
        assert [t.seed for t in promoted] == list(study_plan.MAIN_SEEDS)
        assert promoted[0].options == tuple(record["options"]) and promoted[0].arm_index == index
    sweep_tasks = study_runner.plan_tasks(study_plan.STUDY, ["sweep"], str(tmp_path / "runs"), promotions)
    assert all(t.arm != "sweep-best" for t in sweep_tasks)
    text, _ = study_report.build_report(str(tmp_path / "full.jsonl"))
    assert "Chosen from part `sweep`: `lambda0.5-start10` (options `--nda=jigsaw,stitch --nda-mode=weighted " \
           "--nda-lambda=0.5 --nda-start-kimg=10`), entering parts `main` and `limited` as `sweep-best`." in text


def test_a_plan_file_promotes_into_several_parts_and_says_so_while_waiting(tmp_path):
    from experiments import study_readme, study_status

    part = {"kimg": 1, "snap": 1, "eval_kimg": [1], "seeds": [0, 1], "arms": [["baseline", []]]}
    plan = dict(TINY_PLAN, parts={"main": part, "limited": dict(part, seeds=[5]), "sweep": part},
                promotion={"source_part": "sweep", "target_parts": ["main", "limited"], "target_arm": "best",
                           "metric": "swd", "key": "swd_avg", "kimg": 1})
    study = study_plan.study_from_dict(plan)
    assert study.promotion.target_parts == ("main", "limited")
    line = study_readme.progress_line(study, {}, {}, {})
    assert line.endswith("(`main` and `limited` get the arm `best` once part `sweep` is finished and promoted: "
                         "3 more runs).")
    lines = study_status.status_lines(study, study.part_names(), str(tmp_path), {}, {}, {})
    waiting = [l for l in lines if "waits for `nda_study.py promote`" in l]
    assert len(waiting) == 2 and "2 more runs" in waiting[0] and "1 more runs" in waiting[1]
    for promotion, expect in [(dict(plan["promotion"], target_parts=["main", "nope"]), "not found: nope"),
                              (dict(plan["promotion"], target_parts=[]), "no target part"),
                              (dict(plan["promotion"], target_arm="baseline"), "already exists in part main"),
                              (dict(plan["promotion"], target_part="main"), "unexpected keyword")]:
        with pytest.raises(ValueError, match=expect):
            study_plan.study_from_dict(dict(plan, promotion=promotion))
