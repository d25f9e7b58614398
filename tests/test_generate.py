"""generate.py: one PNG per seed from a snapshot, reproducible, clean usage errors."""

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from trainer_helpers import one_thread, RES, tiny_networks
from training import snapshot

import generate  # the root script (conftest.py puts the repository on sys.path)


single_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("snaps")
    out = {}
    for name, c_dim in (("uncond", 0), ("cond", 3)):
        G, D = tiny_networks(c_dim=c_dim)
        stem = str(folder / name)
        snapshot.save_snapshot(stem, dict(G=G, D=D, G_ema=G), {})
        out[name] = stem + ".pkl"
    return out


def run(*args):
    return CliRunner().invoke(generate.main, [str(a) for a in args])


def test_one_png_per_seed_reproducible(snapshots, tmp_path):
    result = run("--network", snapshots["uncond"], "--seeds", "0-2,5", "--outdir", tmp_path / "a")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["seed0000.png", "seed0001.png", "seed0002.png", "seed0005.png"]
    img = np.asarray(PIL.Image.open(tmp_path / "a" / "seed0001.png"))
    assert img.shape == (RES, RES, 3) and img.dtype == np.uint8
    assert not np.array_equal(img, np.asarray(PIL.Image.open(tmp_path / "a" / "seed0002.png")))
    again = run("--network", snapshots["uncond"], "--seeds", "1", "--outdir", tmp_path / "b")
    assert again.exit_code == 0
    assert np.array_equal(img, np.asarray(PIL.Image.open(tmp_path / "b" / "seed0001.png")))
    trunc = run("--network", snapshots["uncond"], "--seeds", "1", "--outdir", tmp_path / "c", "--trunc", "0")
    assert trunc.exit_code == 0
    assert not np.array_equal(img, np.asarray(PIL.Image.open(tmp_path / "c" / "seed0001.png")))


def test_conditional_networks_need_a_valid_class(snapshots, tmp_path):
    ok = run("--network", snapshots["cond"], "--seeds", "0", "--outdir", tmp_path, "--class", "2")
    assert ok.exit_code == 0, ok.output
    for extra, message in (([], "--class N"), (["--class", "3"], "out of range")):
        bad = run("--network", snapshots["cond"], "--seeds", "0", "--outdir", tmp_path, *extra)
        assert bad.exit_code == 2 and message in bad.output
    bad = run("--network", snapshots["uncond"], "--seeds", "0", "--outdir", tmp_path, "--class", "1")
    assert bad.exit_code == 2 and "unconditional" in bad.output


def test_bad_inputs_are_usage_errors(snapshots, tmp_path):
    junk = tmp_path / "junk.pkl"
    junk.write_text("not a network")
    cases = [
        (["--network", junk, "--seeds", "0"], "not a network snapshot"),
        (["--network", tmp_path / "missing.pkl", "--seeds", "0"], "does not exist"),
        (["--network", snapshots["uncond"], "--seeds", "3-1"], "--seeds"),
        (["--network", snapshots["uncond"], "--seeds", "a"], "--seeds"),
    ]
    for args, message in cases:
        result = run(*args, "--outdir", tmp_path / "out")
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output


def test_the_named_pkl_is_used_not_another_runs_pt_beside_it(tmp_path):
    G, D = tiny_networks(seed=0)
    other_G, other_D = tiny_networks(seed=5)
    snapshot.save_snapshot(str(tmp_path / "other"), dict(G=other_G, D=other_D, G_ema=other_G), {})
    stem = str(tmp_path / "network-snapshot-000004")
    snapshot.save_snapshot(stem, dict(G=G, D=D, G_ema=G), {})
    expected = run("--network", stem + ".pkl", "--seeds", "0", "--outdir", tmp_path / "expected")
    assert expected.exit_code == 0, expected.output
    (tmp_path / "other.pt").replace(stem + ".pt")  # another run's .pt under the same stem
    result = run("--network", stem + ".pkl", "--seeds", "0", "--outdir", tmp_path / "got")
    assert result.exit_code == 0, result.output
    assert "Note: ignored" in result.output and "holds other networks" in result.output
    same = [np.asarray(PIL.Image.open(tmp_path / d / "seed0000.png")) for d in ("expected", "got")]
    assert np.array_equal(*same)


def test_a_folder_as_network_says_what_to_give(snapshots, tmp_path):
    snapshot.save_snapshot(str(tmp_path / "network-snapshot-000008"), dict(zip(("G", "D"), tiny_networks()),
                                                                           G_ema=tiny_networks()[0]), {})
    result = run("--network", tmp_path, "--seeds", "0", "--outdir", tmp_path / "out")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is a folder" in result.output and "network-snapshot-000008.pkl" in result.output
    assert "does not exist" not in result.output
