"""One run of the study on disk: ``<workdir>/<part>/<arm>/seed<seed>/``.

train.py makes a new run folder (``00000-...``) in that outdir each time it starts, so a run that
was killed and resumed has several *segments*. This module finds their snapshots, picks the one to
resume from, and reads the trainer's own clock from their ``stats.jsonl``. Two small files of the
driver's live beside the segments, both written atomically: ``run.json`` (the options and, per
segment, the commit and resume point) and ``trained.json`` (written once train.py has exited 0).
"""

import json
import os
import re
import shlex
import statistics

from nda_stylegan.fileio import atomic_write

# The .pt is written last: its presence = complete. A later snapshot within the same kimg has the
# images past it added (network-snapshot-000030_500.pt).
SNAPSHOT_RE = re.compile(r"^network-snapshot-(\d+)(?:_(\d{3}))?\.pt$")
SEGMENT_RE = re.compile(r"^\d+-")


def run_root(workdir, part, arm, seed):
    return os.path.join(workdir, part, arm, "seed%d" % seed)


def write_json(path, obj):
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def segments(root):
    """The run folders train.py made in ``root``, oldest first."""
    if not os.path.isdir(root):
        return []
    names = [n for n in os.listdir(root) if SEGMENT_RE.match(n) and os.path.isdir(os.path.join(root, n))]
    return [os.path.join(root, n) for n in sorted(names, key=lambda n: int(n.split("-", 1)[0]))]


def snapshots(root):
    """``{kimg: path of .pt}`` over all segments: the last snapshot written within each kimg (a
    later segment's wins), as when every snapshot of a kimg had the kimg's name."""
    found = {}
    for seg in segments(root):
        named = [(m, name) for m, name in ((SNAPSHOT_RE.match(n), n) for n in os.listdir(seg)) if m]
        for m, name in sorted(named, key=lambda mn: (int(mn[0].group(1)), int(mn[0].group(2) or -1))):
            found[int(m.group(1))] = os.path.join(seg, name)
    return found


def latest_snapshot(root):
    """``(kimg, path)`` of the snapshot a killed run resumes from, or None to start afresh.

    Snapshots are named by whole kimg; within one kimg the newest by modification time wins (then
    the one with more images past the kimg)."""
    found = []
    for seg in segments(root):
        for name in os.listdir(seg):
            m = SNAPSHOT_RE.match(name)
            if m:
                path = os.path.join(seg, name)
                found.append((int(m.group(1)), os.path.getmtime(path), int(m.group(2) or -1), path))
    if not found:
        return None
    kimg, _, _, path = max(found)
    return kimg, path


def train_argv(part, arm_options, seed, root, train_options, python="python"):
    """The exact train.py command of a fresh start (paths as given)."""
    return ([python, "train.py", "--outdir", root, "--seed", str(seed), "--kimg", "%g" % part.kimg,
             "--snap", str(part.snap)] + list(train_options) + list(part.options) + list(arm_options))


def command_text(argv):
    return shlex.join(["python"] + list(argv[1:]))


def trained_kimg(root):
    """The kimg of the last tick that any segment in ``root`` logged to its stats.jsonl (0.0 before
    the first). train.py writes a tick's line after that tick's snapshot."""
    last = 0.0
    for seg in segments(root):
        try:
            with open(os.path.join(seg, "stats.jsonl")) as f:
                for line in f:
                    try:
                        last = max(last, float(json.loads(line)["Progress/kimg"]["mean"]))
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut by a kill, or one without the key
        except OSError:
            continue
    return last


def train_timing(root):
    """``(wall seconds, median s/kimg)`` from the segments' stats.jsonl.

    Wall: the sum over segments of the trainer's last ``Timing/total_sec`` (from the start of
    the loop to its last tick; work after a segment's last tick, lost to a kill, is not counted).
    s/kimg: the median over all ticks after tick 0 (tick 0 is one batch)."""
    wall, per_kimg = 0.0, []
    for seg in segments(root):
        last = None
        try:
            with open(os.path.join(seg, "stats.jsonl")) as f:
                for line in f:
                    try:
                        stats = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a kill
                    last = stats
                    tick = stats.get("Progress/tick", {}).get("mean")
                    spk = stats.get("Timing/sec_per_kimg", {}).get("mean")
                    if tick is not None and tick >= 1 and spk is not None:
                        per_kimg.append(float(spk))
        except OSError:
            continue
        if last is not None:
            wall += float(last.get("Timing/total_sec", {}).get("mean", 0.0))
    return wall, (statistics.median(per_kimg) if per_kimg else None)
