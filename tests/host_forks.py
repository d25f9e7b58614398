"""The host fixtures of tests/fixtures/hosts as forks to patch: the files both hosts have alike
(``common/``) with the host's own files (``sg2ada/`` or ``sg3/``) on top."""

import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hosts"


def copy_fork(host, dst):
    """A complete fork of fixture ``host`` ('sg2ada' or 'sg3') at the new folder ``dst``."""
    shutil.copytree(str(FIXTURES / "common"), str(dst))
    shutil.copytree(str(FIXTURES / host), str(dst), dirs_exist_ok=True)
    return dst
