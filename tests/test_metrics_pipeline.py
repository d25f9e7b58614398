"""Metrics end to end with stand-in detectors, a tiny generator and the built-in faces:
determinism, the dataset-stats cache, the JSON-lines report and anomaly detection with D."""

import json

import numpy as np
import pytest
import torch

from metrics import options as options_mod
from metrics import registry, stats_cache
from standin_detectors import save_standin_detectors, use_standins
from nda_stylegan.sample_data import make_faces

RES = 16

standins_only = pytest.fixture(autouse=True)(use_standins)  # metrics here read the stand-ins


class FacesDataset:
    """stylegan2-ada's Dataset interface over the built-in cartoon faces (uint8 CHW, one-hot labels)."""

    def __init__(self, n=48, seed=0, use_labels=False):
        images, labels = make_faces(n, resolution=RES, seed=seed)
        self.images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        self.labels = np.eye(4, dtype=np.float32)[labels] if use_labels else np.zeros([n, 0], np.float32)
        self.name, self.resolution, self.image_shape = "faces", RES, [3, RES, RES]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    def get_label(self, i):
        return self.labels[i]


class TinyG(torch.nn.Module):
    """G(z, c) -> [-1, 1] images: a linear map to 4x4, upsampled; ``shift`` moves the output away."""

    def __init__(self, z_dim=8, c_dim=0, shift=0.0):
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution, self.img_channels = z_dim, c_dim, RES, 3
        self.fc = torch.nn.Linear(z_dim + c_dim, 3 * 4 * 4)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():  # not nn.init.normal_(..., generator=g): torch 2.0 has no such keyword
            self.fc.weight.normal_(generator=g)
            self.fc.bias.normal_(generator=g)
        self.shift = shift

    def forward(self, z, c, **_kwargs):
        x = torch.tanh(self.fc(torch.cat([z, c], dim=1))).view(-1, 3, 4, 4)
        return (torch.nn.functional.interpolate(x, size=RES, mode="bilinear", align_corners=False) + self.shift).clamp(-1, 1)


class DatasetG(torch.nn.Module):
    """A "generator" that returns the dataset's own images in order (with ``only``: that one image,
    every time, a fully collapsed generator)."""

    z_dim, c_dim, img_resolution, img_channels = 1, 0, RES, 3

    def __init__(self, data, only=None):
        super().__init__()
        self.data, self.only, self.next = data, only, 0

    def forward(self, z, c):
        n = z.shape[0]
        idx = [self.only] * n if self.only is not None else [(self.next + i) % len(self.data) for i in range(n)]
        self.next += n
        return torch.from_numpy(self.data.images[idx]).float() / 127.5 - 1


@pytest.fixture(scope="module")
def detectors_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detectors")
    save_standin_detectors(str(folder), inception_features=64, vgg_features=128)  # small: sqrtm stays fast
    return str(folder)


SMALL = dict(num_gen=24, max_real=32, num_subsets=5, max_subset_size=16, batch_size=8)


def _run(name, detectors_dir, cache_dir, G=None, dataset=None, seed=0, **kw):
    overrides = dict(SMALL, **kw)
    return registry.compute_metric(name, G=G or TinyG(), dataset=dataset or FacesDataset(), device="cpu",
                                   detectors_dir=detectors_dir, cache_dir=cache_dir, seed=seed, **overrides)


def test_registry_has_the_host_names():
    for name in ("fid50k_full", "kid50k_full", "pr50k3_full", "is50k", "fid50k", "kid50k", "pr50k3", "fid10k",
                 "swd", "nda_auroc"):
        assert registry.is_valid_metric(name)
    assert not registry.is_valid_metric("fid51k")
    with pytest.raises(ValueError, match="unknown metric 'fid51k'; known metrics: fid50k_full"):
        registry.compute_metric("fid51k", G=None, dataset=None, device="cpu")


def test_fid_is_deterministic_for_a_seed_and_detects_a_worse_generator(detectors_dir, tmp_path):
    a = _run("fid50k_full", detectors_dir, str(tmp_path))
    b = _run("fid50k_full", detectors_dir, False)  # no cache: computed from scratch
    assert a["results"]["fid50k_full"] == b["results"]["fid50k_full"]
    other_seed = _run("fid50k_full", detectors_dir, str(tmp_path), seed=1)["results"]["fid50k_full"]
    assert other_seed != a["results"]["fid50k_full"]
    worse = _run("fid50k_full", detectors_dir, str(tmp_path), G=TinyG(shift=0.8))["results"]["fid50k_full"]
    assert worse > a["results"]["fid50k_full"] > 0
    assert set(a) >= {"results", "metric", "total_time", "total_time_str", "num_gpus"}
    assert a["metric"] == "fid50k_full" and a["num_gpus"] == 1 and a["overrides"]["num_gen"] == 24


def test_fid_of_the_dataset_against_itself_is_near_zero(detectors_dir):
    data = FacesDataset(n=32)
    result = registry.compute_metric("fid50k_full", G=DatasetG(data), dataset=data, device="cpu", detectors_dir=detectors_dir,
                                     cache_dir=False, num_gen=32, batch_size=8)
    assert abs(result["results"]["fid50k_full"]) < 1e-3


def test_real_stats_come_from_the_cache_on_the_second_call(detectors_dir, tmp_path, monkeypatch):
    first = _run("kid50k_full", detectors_dir, str(tmp_path))
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("faces-standin-inception-2015-12-05-") and files[0].suffix == ".npz"

    calls = []
    real_fn = options_mod.dataset_features
    monkeypatch.setattr(options_mod, "dataset_features", lambda *a, **k: calls.append(1) or real_fn(*a, **k))
    second = _run("kid50k_full", detectors_dir, str(tmp_path))
    assert calls == [] and second["results"] == first["results"]

    files[0].write_bytes(files[0].read_bytes()[:200])  # a truncated (corrupt) cache file
    third = _run("kid50k_full", detectors_dir, str(tmp_path))
    assert calls == [1] and third["results"] == first["results"]
    assert [p.name for p in tmp_path.iterdir()] == [files[0].name]  # rewritten in place, no temp files
    _run("kid50k_full", detectors_dir, str(tmp_path))
    assert calls == [1]  # the rewritten file is valid again


def test_cache_key_changes_with_data_and_options(detectors_dir, tmp_path):
    _run("fid50k_full", detectors_dir, str(tmp_path))
    _run("fid50k_full", detectors_dir, str(tmp_path), dataset=FacesDataset(seed=1))
    _run("fid50k_full", detectors_dir, str(tmp_path), max_real=16)
    assert len(list(tmp_path.iterdir())) == 3


def test_cache_file_for_another_key_is_not_trusted(tmp_path):
    from metrics.features import FeatureStats

    stats = FeatureStats(capture_all=True)
    stats.append(np.ones([3, 2]))
    path = str(tmp_path / "x.npz")
    stats_cache.save_stats(path, "key-a", stats)
    assert stats_cache.load_stats(path, "key-a").get_all().shape == (3, 2)
    assert stats_cache.load_stats(path, "key-b") is None


def test_kid_is_near_zero_for_the_data_itself_and_grows_with_the_gap(detectors_dir):
    data = FacesDataset(n=32)

    def kid(G):
        results = _run("kid50k", detectors_dir, False, G=G, dataset=data, num_gen=32, max_real=32)["results"]
        assert set(results) == {"kid50k"}
        return results["kid50k"]

    itself, near, far = kid(DatasetG(data)), kid(TinyG()), kid(TinyG(shift=0.8))
    assert abs(itself) < 0.2 * near and near < far


def test_precision_and_recall_tell_collapse_from_coverage(detectors_dir):
    data = FacesDataset(n=32)

    def pr(G):
        results = _run("pr50k3_full", detectors_dir, False, G=G, dataset=data, num_gen=32, max_real=32)["results"]
        return results["pr50k3_full_precision"], results["pr50k3_full_recall"]

    assert pr(DatasetG(data)) == (1.0, 1.0)  # the data itself: every fake is real, every real is covered
    # One real image, over and over: all fakes are real (precision 1), but they cover one real of 32.
    assert pr(DatasetG(data, only=5)) == (1.0, 1 / 32)


def test_inception_score_is_one_for_a_single_image_and_grows_with_variety(detectors_dir):
    def inception_score(G):
        results = _run("is50k", detectors_dir, False, G=G, num_gen=20, num_splits=2)["results"]
        assert set(results) == {"is50k_mean", "is50k_std"}
        return results["is50k_mean"], results["is50k_std"]

    mean, std = inception_score(DatasetG(FacesDataset(), only=0))  # one class distribution: exp(KL(p || p))
    assert mean == pytest.approx(1.0, abs=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    assert inception_score(TinyG())[0] > 1.01


def test_conditional_generator_gets_dataset_labels(detectors_dir):
    seen = []

    class CondG(TinyG):
        def forward(self, z, c, **kw):
            seen.append(c.clone())
            return super().forward(z, c)

    data = FacesDataset(use_labels=True)
    registry.compute_metric("fid10k", G=CondG(c_dim=4), dataset=data, device="cpu", detectors_dir=detectors_dir,
                            cache_dir=False, num_gen=16, batch_size=8)
    c = torch.cat(seen)
    assert c.shape == (16, 4) and torch.all(c.sum(dim=1) == 1)


def test_swd_metric_needs_no_detector_and_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("NDA_STYLEGAN_DETECTORS", str(tmp_path))  # empty: any detector use would fail
    kw = dict(num_images=32, patches_per_image=16, dirs_per_repeat=32)
    a = _run("swd", None, False, **kw)["results"]
    b = _run("swd", None, False, **kw)["results"]
    assert a == b and set(a) == {"swd_16", "swd_avg"}
    worse = _run("swd", None, False, G=TinyG(shift=0.8), **kw)["results"]
    assert worse["swd_avg"] > a["swd_avg"] > 0


def test_swd_uses_2048_images_unless_told_otherwise(tmp_path, monkeypatch):
    from metrics import swd as swd_module

    counts = []

    def fake_compute_swd(opts, num_images, **_kwargs):
        counts.append(num_images)
        return {16: 1.0}, 1.0

    monkeypatch.setattr(swd_module, "compute_swd", fake_compute_swd)
    _run("swd", None, False)
    _run("swd", None, False, num_images=64)
    assert counts == [2048, 64]
    assert "2048 images" in dict(registry.describe_metrics())["swd"]  # what calc_metrics.py lists


def test_report_metric_appends_host_format_json_lines(tmp_path, capsys):
    result = dict(results={"fid50k_full": 1.5}, metric="fid50k_full", total_time=2.0, total_time_str="2s", num_gpus=1)
    snapshot = tmp_path / "network-snapshot-000010.pkl"
    registry.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(snapshot))
    registry.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(snapshot))
    lines = (tmp_path / "metric-fid50k_full.jsonl").read_text().splitlines()
    assert len(lines) == 2
    row = json.loads(lines[0])
    assert row["results"] == {"fid50k_full": 1.5} and row["snapshot_pkl"] == "network-snapshot-000010.pkl"
    assert set(row) == {"results", "metric", "total_time", "total_time_str", "num_gpus", "snapshot_pkl", "timestamp"}
    assert capsys.readouterr().out.splitlines() == lines  # printed exactly as written


def test_progress_lines_are_printed_when_verbose(detectors_dir, capsys):
    from metrics.progress import ProgressMonitor

    registry.compute_metric("fid10k", G=TinyG(), dataset=FacesDataset(), device="cpu", detectors_dir=detectors_dir,
                            cache_dir=False, progress=ProgressMonitor(verbose=True), num_gen=16, batch_size=8)
    out = capsys.readouterr().out
    assert "dataset features" in out and "generator features" in out and "items 16/16" in out
