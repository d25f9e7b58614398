"""tests/benchmarks/record.py: keeps a command's output with its provenance, only when it succeeded."""

import os
import subprocess
import sys

RECORD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmarks", "record.py")


def record(out, *command):
    return subprocess.run([sys.executable, RECORD, str(out), "--"] + list(command),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def test_a_successful_command_is_kept_with_command_date_commit_and_load(tmp_path):
    out = tmp_path / "bench.txt"
    result = record(out, sys.executable, "-c", "print('median 1.5 ms')")
    assert result.returncode == 0 and "median 1.5 ms" in result.stdout
    lines = out.read_text().splitlines()
    assert lines[0].startswith("command: ") and "print('median 1.5 ms')" in lines[0]
    assert lines[1].startswith("date: ") and " UTC" in lines[1]
    assert lines[2].startswith("commit: ") and lines[3].startswith("machine: ") and "load average" in lines[3]
    assert lines[4:] == ["", "median 1.5 ms"]


def test_a_failed_command_leaves_no_file(tmp_path):
    out = tmp_path / "bench.txt"
    result = record(out, sys.executable, "-c", "import sys; print('half'); sys.exit(3)")
    assert result.returncode != 0 and "exit code 3" in result.stderr and not out.exists()
    assert record(out).returncode != 0 and "usage" in record(out).stderr  # no command: usage line
