"""training.snapshot: .pkl + .pt snapshots, loading without executing pickled code, refusals."""

import os
import pickle
import subprocess
import sys

import pytest
import torch

from trainer_helpers import one_thread, REPO, tiny_networks
from training import snapshot


single_thread = pytest.fixture(autouse=True)(one_thread)


def write_tiny_snapshot(folder, kimg=0, augment_pipe=None, resume_state=None):
    G, D = tiny_networks()
    G_ema = tiny_networks(seed=1)[0]
    stem = snapshot.snapshot_stem(str(folder), kimg * 1000)
    ts = dict(class_name="training.dataset.BuiltinDataset", resolution=16)
    snapshot.save_snapshot(stem, dict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe), ts, resume_state=resume_state)
    return stem, G, D, G_ema


def outputs(G, seed=0):
    z = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G(z, torch.zeros([2, G.c_dim]), noise_mode="const")


def test_round_trip_through_pt_and_pkl(tmp_path):
    stem, G, D, G_ema = write_tiny_snapshot(tmp_path, resume_state=dict(cur_nimg=64, note="x"))
    raw = torch.load(stem + ".pt", weights_only=True)  # plain data: no code runs
    assert raw["format"] == snapshot.FORMAT and raw["resume_state"]["cur_nimg"] == 64
    for path in (stem + ".pkl", stem + ".pt"):
        data = snapshot.load_network_file(path)
        assert data.path == path and data.notes == []  # the named file, with its twin's resume state
        assert data.resume_state["cur_nimg"] == 64
        torch.testing.assert_close(outputs(data.G_ema), outputs(G_ema))
        for key, value in D.state_dict().items():
            torch.testing.assert_close(data.D.state_dict()[key], value)
        assert data.training_set_kwargs.resolution == 16
        assert not any(p.requires_grad for p in data.G.parameters())


def test_pkl_alone_loads_with_plain_pickle_without_nda_stylegan(tmp_path):
    stem, _, _, G_ema = write_tiny_snapshot(tmp_path)
    expected = outputs(G_ema)
    torch.save(expected, tmp_path / "expected.pt")
    script = (
        "import pickle, sys, torch\n"
        "sys.modules['nda_stylegan'] = None  # any import of it would fail\n"
        "data = pickle.load(open(sys.argv[1], 'rb'))\n"
        "G = data['G_ema']\n"
        "z = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(0))\n"
        "with torch.no_grad(): out = G(z, torch.zeros([2, G.c_dim]), noise_mode='const')\n"
        "torch.testing.assert_close(out, torch.load(sys.argv[2]))\n"
        "assert not any(m.startswith('nda_stylegan') for m in sys.modules if sys.modules[m] is not None)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, stem + ".pkl", str(tmp_path / "expected.pt")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Without its .pt, load_network_file falls back to the pickle.
    os.remove(stem + ".pt")
    data = snapshot.load_network_file(stem + ".pkl")
    assert data.resume_state is None
    torch.testing.assert_close(outputs(data.G_ema), expected)


class ForeignPipe(torch.nn.Module):
    """Defined outside training.*: must never end up in a snapshot pickle."""


def test_foreign_classes_are_refused_before_any_file_is_written(tmp_path):
    with pytest.raises(ValueError, match="augment_pipe: it is a .*ForeignPipe"):
        write_tiny_snapshot(tmp_path, augment_pipe=ForeignPipe())
    assert os.listdir(tmp_path) == []


def test_nan_weights_are_refused(tmp_path):
    G, D = tiny_networks()
    with torch.no_grad():
        next(D.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        snapshot.save_snapshot(str(tmp_path / "s"), dict(G=G, D=D, G_ema=G), {})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("content", [b"hello world\n", b"\x80\x04K\x01.", b"PK\x03\x04garbage"])
def test_non_snapshots_give_one_line_value_errors(tmp_path, content):
    for ext in (".pkl", ".pt", ".bin"):
        path = tmp_path / ("thing" + ext)
        path.write_bytes(content)
        with pytest.raises(ValueError) as info:
            snapshot.load_network_file(str(path))
        assert "not a network snapshot" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="does not exist"):
        snapshot.load_network_file(str(tmp_path / "missing.pkl"))
    torch.save({"state": 1}, tmp_path / "other.pt")  # a torch file, but not ours
    with pytest.raises(ValueError, match="not a network snapshot"):
        snapshot.load_network_file(str(tmp_path / "other.pt"))


def test_pt_snapshots_on_torch_without_weights_only_say_what_to_do(tmp_path, monkeypatch):
    stem, *_ = write_tiny_snapshot(tmp_path)
    real_load = torch.load

    def old_torch_load(f, map_location=None, pickle_module=pickle, **pickle_load_args):  # torch < 1.13's signature
        return real_load(f, map_location=map_location, weights_only=True)

    monkeypatch.setattr(torch, "load", old_torch_load)
    with pytest.raises(ValueError, match="needs torch >= 1.13.*load the .pkl snapshot beside it"):
        snapshot.read_weights_file(stem + ".pt")


def test_pickle_globals_sees_every_import():
    payload = pickle.dumps(dict(a=ForeignPipe, b=torch.nn.Linear(1, 1), c=[1, "x"]), protocol=pickle.HIGHEST_PROTOCOL)
    found = snapshot.pickle_globals(payload)
    assert (ForeignPipe.__module__, "ForeignPipe") in found
    assert ("torch.nn.modules.linear", "Linear") in found
    old = pickle.dumps(ForeignPipe, protocol=2)  # GLOBAL opcode instead of STACK_GLOBAL
    assert (ForeignPipe.__module__, "ForeignPipe") in snapshot.pickle_globals(old)


def test_latest_snapshot_ignores_incomplete_pairs(tmp_path):
    write_tiny_snapshot(tmp_path, kimg=1)
    stem2, *_ = write_tiny_snapshot(tmp_path, kimg=2)
    os.remove(stem2 + ".pt")  # as if killed between the .pkl and the .pt
    assert snapshot.latest_snapshot(str(tmp_path)).endswith("network-snapshot-000001.pt")


# ---------------------------------------------------------------- which file of a pair is loaded
def test_a_pkl_is_loaded_even_beside_another_runs_pt(tmp_path):
    stem, _, _, G_ema = write_tiny_snapshot(tmp_path, resume_state=dict(cur_nimg=64))
    other = tmp_path / "other"
    other.mkdir()
    other_stem, _, _, other_G_ema = write_tiny_snapshot(other, resume_state=dict(cur_nimg=999))
    torch.manual_seed(7)
    with torch.no_grad():  # make the other run's networks really differ
        for p in other_G_ema.parameters():
            p.add_(torch.randn_like(p))
    snapshot.save_snapshot(other_stem, dict(G=other_G_ema, D=tiny_networks()[1], G_ema=other_G_ema), {},
                           resume_state=dict(cur_nimg=999))
    os.replace(other_stem + ".pt", stem + ".pt")  # a same-named .pt from another run lands beside ours
    data = snapshot.load_network_file(stem + ".pkl")
    torch.testing.assert_close(outputs(data.G_ema), outputs(G_ema))
    assert data.resume_state is None  # the other run's counters are not taken either
    assert len(data.notes) == 1 and "holds other networks" in data.notes[0]
    assert snapshot.load_network_file(stem + ".pt").resume_state["cur_nimg"] == 999  # named: loaded


def test_a_damaged_twin_never_blocks_the_intact_file(tmp_path):
    stem, _, _, G_ema = write_tiny_snapshot(tmp_path, resume_state=dict(cur_nimg=64))
    with open(stem + ".pt", "r+b") as f:
        f.truncate(os.path.getsize(stem + ".pt") // 2)
    data = snapshot.load_network_file(stem + ".pkl")
    torch.testing.assert_close(outputs(data.G_ema), outputs(G_ema))
    assert data.resume_state is None and "ignored" in data.notes[0] and "is not a network snapshot" in data.notes[0]
    with pytest.raises(ValueError, match=r"\.pt is not a network snapshot .*the .pkl beside it holds the networks too: "
                                         r"give .*network-snapshot-000000\.pkl$"):
        snapshot.load_network_file(stem + ".pt")
    # The other way round: a damaged .pkl names the intact .pt.
    stem2, *_ = write_tiny_snapshot(tmp_path, kimg=1)
    with open(stem2 + ".pkl", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match=r"the .pt beside it may hold the networks: give .*000001\.pt$"):
        snapshot.load_network_file(stem2 + ".pkl")
    assert snapshot.load_network_file(stem2 + ".pt").G_ema is not None


def test_a_folder_is_named_as_a_folder_with_a_file_to_give(tmp_path):
    with pytest.raises(ValueError, match="is a folder, not a network snapshot, and holds no network-snapshot"):
        snapshot.load_network_file(str(tmp_path))
    write_tiny_snapshot(tmp_path, kimg=2)
    write_tiny_snapshot(tmp_path, kimg=10)
    with pytest.raises(ValueError, match=r"is a folder \(a run folder\?\).*e\.g\. .*network-snapshot-000010\.pkl$"):
        snapshot.load_network_file(str(tmp_path))


def test_snapshots_of_the_earlier_pickle_format_still_load(tmp_path):
    # Before the recipe format, a .pkl was the plain object graph of our classes.
    G, D = tiny_networks()
    with open(tmp_path / "old.pkl", "wb") as f:
        pickle.dump(dict(G=G.eval(), D=D.eval(), G_ema=G, augment_pipe=None, training_set_kwargs={}), f,
                    protocol=pickle.HIGHEST_PROTOCOL)
    data = snapshot.load_network_file(str(tmp_path / "old.pkl"))
    torch.testing.assert_close(outputs(data.G_ema), outputs(G))


def test_pkl_snapshots_load_safely_on_torch_without_weights_only(tmp_path, monkeypatch):
    stem, _, _, G_ema = write_tiny_snapshot(tmp_path)
    real_load = torch.load

    def old_torch_load(f, map_location=None, pickle_module=pickle, **pickle_load_args):  # torch < 1.13's signature
        assert pickle_module is not pickle  # the tensors' bytes go through a restricted unpickler
        return real_load(f, map_location=map_location, pickle_module=pickle_module, weights_only=False)

    monkeypatch.setattr(torch, "load", old_torch_load)
    data = snapshot.load_network_file(stem + ".pkl")  # its .pt cannot be read here: noted, then passed over
    torch.testing.assert_close(outputs(data.G_ema), outputs(G_ema))
    assert "needs torch >= 1.13" in data.notes[0]


def test_records_can_only_build_network_classes(tmp_path):
    stem, *_ = write_tiny_snapshot(tmp_path)
    raw = torch.load(stem + ".pt", weights_only=True)
    marker = tmp_path / "ran"
    # A record naming a helper that would build anything it is told to, here a file write.
    raw["networks"]["G"] = dict(class_name="training.util.construct_class_by_name",
                                init_kwargs=dict(class_name="pathlib.Path.touch", self=str(marker)), state_dict={})
    torch.save(raw, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="names 'training.util.construct_class_by_name', which is not a network class"):
        snapshot.load_network_file(str(tmp_path / "evil.pt"))
    assert not marker.exists()


def test_a_record_asking_for_more_weights_than_it_holds_is_refused_before_any_allocation(tmp_path):
    stem, *_ = write_tiny_snapshot(tmp_path)
    raw = torch.load(stem + ".pt", weights_only=True)
    # 2**20 channels per layer: terabytes of weights if built, from a file of a few hundred kB.
    raw["networks"]["G"]["init_kwargs"]["synthesis_kwargs"].update(channel_base=2 ** 40, channel_max=2 ** 20)
    torch.save(raw, tmp_path / "huge.pt")
    # Built for real, this would fail to allocate (another message) or exhaust the memory.
    with pytest.raises(ValueError, match=r"G's constructor arguments describe \d+ weights but the file holds \d+"):
        snapshot.load_network_file(str(tmp_path / "huge.pt"))
    # The tiny snapshot itself still loads (its weights are exactly what its arguments describe).
    data = snapshot.load_network_file(stem + ".pt")
    assert sum(p.numel() for p in data.G.parameters()) > 0


def test_snapshot_names_keep_whole_kimg_and_never_collide(tmp_path):
    G, D = tiny_networks()
    names = []
    for nimg in (8, 500, 1032, 1500, 1999, 2000):
        stem = snapshot.snapshot_stem(str(tmp_path), nimg)
        snapshot.save_snapshot(stem, dict(G=G, D=D, G_ema=G), {}, resume_state=dict(cur_nimg=nimg))
        names.append(os.path.basename(stem))
    assert names == ["network-snapshot-000000", "network-snapshot-000000_500", "network-snapshot-000001",
                     "network-snapshot-000001_500", "network-snapshot-000001_999", "network-snapshot-000002"]
    found = snapshot.list_snapshots(str(tmp_path))
    assert [kimg for kimg, _ in found] == [0, 0, 1, 1, 1, 2]
    assert [snapshot.load_network_file(p).resume_state["cur_nimg"] for _, p in found] == [8, 500, 1032, 1500, 1999, 2000]
    assert [os.path.basename(p) for _, p in found] == sorted(n + ".pt" for n in names)  # names sort in training order
