"""Atomic file writes: a reader (or a process killed mid-write) sees the old file or the complete
new one, never a half-written one.

The one implementation in the repo: the plugin (a patched fork's train.py and its backup, staged
op sources, images), the trainer, the metrics, the CLIs and the study all write through it. It
lives here, in the plugin, because that is the package every part may import. ``tempfile`` makes
owner-only files (0600) and folders (0700); the temporary ones made here get the mode a plain
``open()`` or ``os.mkdir()`` would give instead (0666 / 0777 less the umask), so what lands at the
final path is readable as usual, unless the caller asks for other bits (patching keeps the mode
train.py had).
"""

import contextlib
import json
import os
import tempfile


def _umask():
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def usual_mode(folder=False):
    """The permission bits a new file (or folder) gets from ``open()`` (``os.mkdir()``)."""
    return (0o777 if folder else 0o666) & ~_umask()


def temp_path_beside(path, folder=False):
    """Create an empty temporary file (or folder) in ``path``'s folder and return its path.

    Beside the target, so that ``os.replace`` onto it is one atomic rename on one file system;
    hidden (``.name.XXXX.tmp``); with :func:`usual_mode` permissions."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    prefix, suffix = "." + os.path.basename(path) + ".", ".tmp"
    if folder:
        tmp = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
        os.close(fd)
    os.chmod(tmp, usual_mode(folder))
    return tmp


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None, fsync=True, check=None, permissions=None):
    """Open a temporary file beside ``path``; on success flush it, fsync it and move it into
    place with ``os.replace``. On any exception the temporary file is removed and ``path`` is
    left as it was.

    ``check(tmp_path)``, when given, runs on the complete, closed temporary file before it
    replaces ``path``: raising there keeps the bad file out. ``permissions``: mode bits for the
    new file (default :func:`usual_mode`)."""
    path = os.fspath(path)
    tmp = temp_path_beside(path)
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        if permissions is not None:
            os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path, data, permissions=None):
    with atomic_write(path, "wb", permissions=permissions) as f:
        f.write(data)


def atomic_write_text(path, text):
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_json(path, obj, indent=2, sort_keys=False):
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")
