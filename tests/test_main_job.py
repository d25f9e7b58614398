"""The README's main job (``python train.py --nda=jigsaw,stitch --outdir runs/``), shortened: the
same script and defaults (built-in data, the `auto` -> `cpu` preset) with a tiny --kimg. Checks
the run folder's files and that the NDA loss was active only when --nda was given."""

import json
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 8 steps of 8 images. No metric: the default's final fdl0_10k_full would take longer than these
# runs (tests/test_metrics_fdl0.py covers the final-snapshot metric and its last log line).
SHORT = ["--kimg", "0.064", "--batch", "8", "--metrics", "none"]


def run_train(outdir, *args):
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--outdir", str(outdir)] + SHORT + list(args)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (run,) = os.listdir(outdir)
    return os.path.join(outdir, run)


def stat_names(run_dir):
    names = set()
    with open(os.path.join(run_dir, "stats.jsonl")) as f:
        for line in f:
            names.update(json.loads(line))
    return names


def check_common_files(run_dir):
    files = os.listdir(run_dir)
    for name in ("training_options.json", "reals.png", "fakes_init.png", "stats.jsonl"):
        assert name in files, (name, files)
    assert any(re.match(r"^fakes\d{6}\.png$", f) for f in files), files
    assert any(re.match(r"^network-snapshot-\d{6}\.pkl$", f) for f in files), files
    return files


def test_main_job_with_nda_writes_grids_snapshots_and_nda_stats(tmp_path):
    run_dir = run_train(tmp_path, "--nda=jigsaw,stitch")
    assert os.path.basename(run_dir) == "00000-builtin-cpu-kimg0.064-batch8-nda-jigsaw-stitch"
    files = check_common_files(run_dir)
    assert "negatives.png" in files
    options = json.load(open(os.path.join(run_dir, "training_options.json")))
    assert options["loss_kwargs"]["class_name"] == "nda_stylegan.loss.NDALoss"
    nda_stats = [n for n in stat_names(run_dir) if "nda" in n.lower()]
    assert nda_stats, sorted(stat_names(run_dir))


def test_main_job_without_nda_has_no_nda_stats(tmp_path):
    run_dir = run_train(tmp_path)
    assert os.path.basename(run_dir) == "00000-builtin-cpu-kimg0.064-batch8"
    files = check_common_files(run_dir)
    assert "negatives.png" not in files
    assert not [n for n in stat_names(run_dir) if "nda" in n.lower()]
