"""The nda-stylegan command: list and preview (the patch subcommand has its own tests)."""

import os
import zipfile

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from nda_stylegan import available_negatives
from nda_stylegan.cli import SUBCOMMANDS, add_subcommands, main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_list_shows_every_negative_with_its_parameters():
    result = run("list")
    assert result.exit_code == 0
    for name in available_negatives():
        assert ("\n%s:" % name) in "\n" + result.output
    assert "k=2" in result.output  # jigsaw's and mosaic's default
    assert "alpha=25.0" in result.output  # mixup's Beta(25, 25)


def test_every_subcommand_is_there_and_a_missing_module_is_an_error():
    assert sorted(main.commands) == ["list", "patch", "preview"] and len(SUBCOMMANDS) == 3
    with pytest.raises(ImportError, match="cannot import nda_stylegan.cli_gone, the module of a subcommand"):
        add_subcommands(click.Group(), SUBCOMMANDS + (("nda_stylegan.cli_gone", "gone_command"),))


def read_png(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_preview_of_builtin_images(tmp_path):
    out = tmp_path / "grid.png"
    result = run("preview", "--nda", "jigsaw,stitch", "--num", "4", "--resolution", "16",
                 "--scale", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    grid = read_png(out)
    # 3 rows (sources + 2 negatives) x 4 columns of 16 px with 2 px padding.
    assert grid.shape == (3 * 18 + 2, 4 * 18 + 2, 3)
    sources, jigsaw = grid[2:18, 2:18], grid[20:36, 2:18]
    assert not np.array_equal(sources, jigsaw)
    # A jigsaw keeps the pixels, only moves them.
    assert sorted(map(tuple, sources.reshape(-1, 3))) == sorted(map(tuple, jigsaw.reshape(-1, 3)))


def test_preview_frames_in_red_only_the_negatives_equal_to_their_source():
    from nda_stylegan.cli_preview import MASKED_COLOUR, preview_rows

    rng = np.random.default_rng(1)
    sources = rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    sources[1] = 128  # a flat image: its jigsaw is itself, so it is masked out in training
    rows = preview_rows(sources, "jigsaw", seed=0)
    assert len(rows) == 2
    jigsaw = rows[1]
    for i in range(3):
        border = np.concatenate([jigsaw[i, 0], jigsaw[i, -1], jigsaw[i, :, 0], jigsaw[i, :, -1]])
        framed = bool((border == MASKED_COLOUR).all())
        assert framed == (i == 1), i
    assert (jigsaw[1, 1:-1, 1:-1] == 128).all()  # the frame covers the border only


def write_images(folder, count, size=20):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)).save(folder / ("%d.png" % i))


def test_preview_from_a_folder_and_a_zip(tmp_path):
    write_images(tmp_path / "imgs", 3)
    out = tmp_path / "a.png"
    assert run("preview", "--data", str(tmp_path / "imgs"), "--nda", "rotate", "--resolution", "8",
               "--scale", "2", "--out", str(out)).exit_code == 0
    # 2 rows (sources + rotate) x 3 columns of 8 px, 2 px padding, enlarged twice.
    assert read_png(out).shape == ((2 * 10 + 2) * 2, (3 * 10 + 2) * 2, 3)
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in sorted(os.listdir(tmp_path / "imgs")):
            z.write(tmp_path / "imgs" / name, "00000/" + name)
    out2 = tmp_path / "b.png"
    assert run("preview", "--data", str(archive), "--nda", "rotate", "--resolution", "8",
               "--scale", "2", "--out", str(out2)).exit_code == 0
    assert np.array_equal(read_png(out), read_png(out2))


@pytest.mark.parametrize("args, message", [
    (["--nda", "bogus"], "unknown negative 'bogus'"),
    (["--nda", "jigsaw(k=0)"], "k=0"),
    (["--data", "/nonexistent/folder"], "does not exist"),
    (["--out", "/nonexistent/folder/x.png"], "/nonexistent/folder does not exist; create it first"),
])
def test_preview_bad_input_is_one_line_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(main, ["preview"] + args)
    assert result.exit_code == 2
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and message in error_lines[0]
    assert "Traceback" not in result.output


def test_preview_refuses_a_single_image(tmp_path):
    write_images(tmp_path / "one", 1)
    result = CliRunner().invoke(main, ["preview", "--data", str(tmp_path / "one"), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "at least 2" in result.output
    assert not (tmp_path / "x.png").exists()
