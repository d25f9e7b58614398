"""tests/run_gpu_checks.sh on a machine without a GPU, with a budget of seconds: every step is
accounted for in summary.txt (run, stopped at its limit, or not run once the budget is spent),
each step that ran left its output file, and the budget ends the script on time."""

import os
import subprocess
import sys
import time

from trainer_helpers import REPO

STEPS = ["environment", "test_cuda_ops", "bench_training_ops_cuda_fp32", "bench_training_ops_cuda_fp16",
         "bench_negatives_cuda", "main_job_1kimg", "whole_suite"]


def test_every_step_is_accounted_for_within_the_budget(tmp_path):
    out = tmp_path / "checks"
    env = dict(os.environ, PYTHON=sys.executable, NDA_COMMIT="test")
    start = time.monotonic()
    proc = subprocess.run(["bash", os.path.join(REPO, "tests", "run_gpu_checks.sh"), str(out), "20"],
                          env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    lines = (out / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == STEPS
    assert elapsed < 20 + 15  # the budget, plus the script's own start and the last step's end
    for line in lines:
        name = line.split(":")[0]
        if "not run" in line:
            assert not (out / (name + ".txt")).exists()
        else:
            assert (out / (name + ".txt")).exists(), line
    # The GPU tests were asked for the GPU, found none, and skipped with the reason.
    assert lines[1].startswith("test_cuda_ops: exit 0")
    assert "no CUDA device visible" in (out / "test_cuda_ops.txt").read_text()
    assert "commit test" in (out / "environment.txt").read_text()
    assert "--device cuda: no CUDA device here" in (out / "bench_training_ops_cuda_fp32.txt").read_text()
    assert lines[-1].startswith("whole_suite: not run")
