"""Atomic file writes: a reader (or a process killed mid-write) never sees a half-written file.

The one implementation in the repo; the trainer, the metrics and the CLIs all write through it.
"""

import contextlib
import json
import os
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None, fsync=True):
    """Open a temporary file beside ``path``; on success flush it, fsync it and move it into
    place with ``os.replace``. On any exception the temporary file is removed and ``path`` is
    left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path, data):
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path, text):
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_json(path, obj, indent=2):
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")
