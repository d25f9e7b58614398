"""The results file: one JSON object per line, appended whole, read tolerantly.

A line is written with one ``write()`` under an exclusive lock, after making sure the file ends
with a newline: a line cut short by a kill (no trailing newline, or not valid JSON) stays on a
line of its own and is ignored by every reader, so a half-written result is never taken as done.
Kinds of line (``type``): ``metric`` (one per run, snapshot and metric), ``diverged`` (a run
that stopped on NaN/Inf), ``promotion`` (the sweep's best setting moved into the main table).
"""

import fcntl
import json
import os


def read_results(path):
    """``(records, num_unreadable)``; a missing file is empty."""
    if not os.path.exists(path):
        return [], 0
    with open(path, "rb") as f:
        data = f.read()
    records, bad = [], 0
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # after the last newline: a line still (or forever) unfinished
    for raw in complete:
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            bad += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("type"), str):
            records.append(record)
        else:
            bad += 1
    if tail.strip():
        bad += 1
    return records, bad


def append_record(path, record):
    """Append ``record`` as one line; safe against concurrent writers and earlier cut lines."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # isolate a line cut short by an earlier kill
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def metric_key(record):
    return (record["part"], record["arm"], int(record["seed"]), int(record["kimg"]), record["metric"])


def run_key(record):
    return (record["part"], record["arm"], int(record["seed"]))


def index_results(records):
    """``(metric lines by key (first one wins), diverged runs, promotions by source part)``."""
    metrics, diverged, promotions = {}, {}, {}
    for r in records:
        try:
            if r["type"] == "metric":
                metrics.setdefault(metric_key(r), r)
            elif r["type"] == "diverged":
                diverged.setdefault(run_key(r), r)
            elif r["type"] == "promotion":
                promotions.setdefault(r["source_part"], r)
        except (KeyError, TypeError, ValueError):
            continue  # a record without the fields of its kind carries nothing we can place
    return metrics, diverged, promotions
