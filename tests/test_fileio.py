"""nda_stylegan.fileio: the repo's one atomic-write helper (old or complete new file, usual modes)."""

import contextlib
import os
import stat

import pytest

from nda_stylegan.fileio import atomic_write, atomic_write_json, temp_path_beside


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(str(path)) as f:
            f.write(b"half of the new")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]  # no temp file left behind


def test_a_failed_check_keeps_the_bad_file_out(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    seen = []

    def check(tmp):
        seen.append((os.path.dirname(tmp), open(tmp, "rb").read()))  # complete and closed by now
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        with atomic_write(path, check=check) as f:
            f.write(b"new")
    assert seen == [(str(tmp_path), b"new")]
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_files_and_folders_get_the_usual_mode_for_the_umask(tmp_path, mask):
    # tempfile alone would make 0600 files and 0700 folders whatever the umask.
    with umask(mask):
        atomic_write_json(tmp_path / "a.json", {"b": 1, "a": 2})
        folder = temp_path_beside(tmp_path / "dataset", folder=True)
        plain = tmp_path / "plain"
        plain.write_bytes(b"")
        os.mkdir(str(tmp_path / "plain_dir"))
    assert mode_of(tmp_path / "a.json") == mode_of(plain) == 0o666 & ~mask
    assert mode_of(folder) == mode_of(tmp_path / "plain_dir") == 0o777 & ~mask
    assert os.path.basename(folder).startswith(".dataset.")  # hidden, beside its target
    assert (tmp_path / "a.json").read_text() == '{\n  "b": 1,\n  "a": 2\n}\n'  # key order kept


def test_explicit_permissions_win_over_the_umask(tmp_path):
    with atomic_write(tmp_path / "x", permissions=0o640) as f:
        f.write(b"x")
    assert mode_of(tmp_path / "x") == 0o640


def test_replaces_an_existing_file_whole(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("a long old text that is longer than the new one")
    with atomic_write(str(path), "w", encoding="utf-8") as f:
        f.write("new")
    assert path.read_text() == "new"
