"""Runs a benchmark command and keeps what it printed, for the README's "Measured" figures:

    python tests/benchmarks/record.py docs/results/measured/bench_train.txt -- python tests/benchmarks/bench_train.py --arch cpu

The file starts with the command, the date (UTC), the commit (and whether the tree had
uncommitted changes), the cores and the load average before and after, then holds the command's
output (stdout and stderr). It is written only when the command succeeded, in one atomic step.
"""

import datetime
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from experiments.study_runner import git_state  # noqa: E402
from nda_stylegan.fileio import atomic_write_text  # noqa: E402


def commit_line():
    commit, dirty = git_state()  # the study's own check: a growing results file is not a change
    return commit[:7] + (" (with uncommitted changes)" if dirty else "")


def load():
    return "%.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else "unknown"


def main(argv):
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: python tests/benchmarks/record.py OUT_FILE -- COMMAND [ARGS...]")
    out, command = argv[0], argv[2:]
    started, load_before = datetime.datetime.utcnow(), load()
    result = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    sys.stdout.write(result.stdout)
    if result.returncode != 0:
        sys.exit("the command failed (exit code %d); %s not written" % (result.returncode, out))
    header = ["command: " + " ".join(command),
              "date: %s UTC, %d s" % (started.strftime("%Y-%m-%d %H:%M"), (datetime.datetime.utcnow() - started).total_seconds()),
              "commit: " + commit_line(),
              "machine: %d CPU cores; load average %s before, %s after" % (os.cpu_count() or 0, load_before, load()),
              ""]
    atomic_write_text(out, "\n".join(header) + "\n" + result.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
