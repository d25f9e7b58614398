"""File side of patching: permission checks, the backup's name, a file's mode (the writes go
through ``nda_stylegan.fileio``)."""

import os
import stat

from . import PatchError

BACKUP_SUFFIX = ".nda-stylegan.orig"


def backup_path(train_py):
    return train_py + BACKUP_SUFFIX


def check_writable(path):
    """PatchError unless ``path`` can be replaced: the file is writable (mode bits too, since
    root passes os.access) and its folder takes the temporary file and the backup."""
    mode = os.stat(path).st_mode
    if not os.access(path, os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise PatchError("%s is read-only (no write permission); make it writable (chmod u+w %s) and run again"
                         % (path, path))
    folder = os.path.dirname(os.path.abspath(path))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PatchError("cannot write in %s (no write permission), which the backup and the atomic replace need; "
                         "make the folder writable and run again" % folder)


def file_mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)
