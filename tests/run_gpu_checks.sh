#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go, each step under its own time limit; every output
# goes to OUT_DIR (one file per step, plus summary.txt with each step's exit code and time).
#
#     bash tests/run_gpu_checks.sh [OUT_DIR] [SECONDS]     # defaults: gpu-checks/, 480
#
# Steps: the environment; tests/test_cuda_ops.py (CUDA kernels vs references, a training run on
# the GPU); the op and negative benchmarks on the GPU; the main job's command for 1 kimg on the
# GPU, then calc_metrics.py on its snapshot; the whole test suite (which hides the GPU, as
# everywhere: tests/conftest.py) with whatever time is left. A step that runs out of time or fails is recorded, and the next starts.
# PYTHON picks the interpreter (default python3); PYTEST_WORKERS (default 8) runs the whole suite
# with pytest-xdist when that is installed.

set -u
out=${1:-gpu-checks}
budget=${2:-480}
py=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's packages, for the scripts under tests/
end=$((SECONDS + budget))
work=$(mktemp -d)
: > "$out/summary.txt"

step() {  # step NAME MAX_SECONDS COMMAND...: run COMMAND for at most MAX_SECONDS (fewer when the budget ends first)
    local name=$1 max=$2
    shift 2
    local left=$((end - SECONDS))
    if [ "$left" -lt 10 ]; then
        echo "$name: not run (the budget of ${budget} s is spent)" | tee -a "$out/summary.txt"
        return
    fi
    [ "$max" -gt "$left" ] && max=$left
    local t0=$SECONDS
    timeout "$max" bash -c "$*" > "$out/$name.txt" 2>&1  # bash -c: the steps may be the functions below
    local rc=$?
    local verdict="exit $rc"
    [ "$rc" -eq 124 ] && verdict="stopped at its limit of ${max} s"
    echo "$name: $verdict in $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
}

environment() {
    nvidia-smi -L
    "$py" -c "import sys, torch; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'capability', torch.cuda.get_device_capability(0))"
    nvcc --version | tail -2
    echo "commit ${NDA_COMMIT:-unknown}"
}

main_job() {
    # README's main job (built-in data, default preset on a GPU), shortened to 1 kimg and no
    # metrics while training; then the default GPU metric and swd through calc_metrics.py.
    "$py" train.py --nda=jigsaw,stitch --outdir "$work/runs" --kimg 1 --snap 1 --metrics=none || return
    local snap
    snap=$(ls "$work"/runs/*/network-snapshot-*.pkl | tail -1)
    echo "snapshot: $snap"
    "$py" calc_metrics.py --metrics=fdl0_10k_full,swd --network="$snap"
}

whole_suite() {
    local xdist=()
    "$py" -c "import xdist" 2>/dev/null && xdist=(-n "${PYTEST_WORKERS:-8}")
    # -v: each test's outcome is printed as it ends, so a run stopped at its limit still names its failures.
    "$py" -m pytest -v -rfs --tb=short -p no:cacheprovider "${xdist[@]}" --maxfail=30 tests
}

export py work
export -f environment main_job whole_suite
step environment 30 environment
step test_cuda_ops 240 NDA_TESTS_USE_GPU=1 "$py" -m pytest -q -rs -p no:cacheprovider tests/test_cuda_ops.py
step bench_training_ops_cuda_fp32 60 "$py" tests/benchmarks/bench_training_ops.py --device cuda --repeats 15
step bench_training_ops_cuda_fp16 60 "$py" tests/benchmarks/bench_training_ops.py --device cuda --dtype float16 --repeats 15
step bench_negatives_cuda 60 "$py" tests/benchmarks/bench_negatives.py --device cuda --quick
step main_job_1kimg 180 main_job
step whole_suite 600 whole_suite
rm -rf "$work"
