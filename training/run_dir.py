"""Run folders ``<outdir>/<id:05d>-<desc>`` with the next free id."""

import os
import re

import click


def next_run_id(outdir):
    ids = []
    if os.path.isdir(outdir):
        for entry in os.listdir(outdir):
            m = re.match(r"^(\d+)", entry)
            if m and os.path.isdir(os.path.join(outdir, entry)):
                ids.append(int(m.group(1)))
    return max(ids, default=-1) + 1


def create_run_dir(outdir, desc):
    """Create and return a fresh run folder; a concurrent run taking the same id moves us on."""
    try:
        os.makedirs(outdir, exist_ok=True)
        for _ in range(100):
            path = os.path.join(outdir, "%05d-%s" % (next_run_id(outdir), desc))
            try:
                os.makedirs(path)
                return path
            except FileExistsError:
                continue
    except OSError as exc:
        raise click.UsageError("--outdir: cannot create a run folder in %s (%s); choose a writable --outdir"
                               % (outdir, exc.strerror or exc))
    raise click.UsageError("--outdir: no free run id in %s after 100 tries" % outdir)

