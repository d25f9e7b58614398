"""calc_metrics.py with a real tiny snapshot of our networks and the built-in dataset."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import calc_metrics
from metrics import detectors, stats_cache
from standin_detectors import save_standin_detectors, save_torchscript, use_standins
from training import snapshot
from training.networks import Discriminator, Generator

RES = 16
DATA = dict(class_name="training.dataset.BuiltinDataset", size=40, resolution=RES, seed=0)

standins_only = pytest.fixture(autouse=True)(use_standins)  # metrics here read the stand-ins


def _tiny_networks():
    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=RES, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    D = Discriminator(c_dim=0, img_resolution=RES, img_channels=3, channel_base=256, channel_max=16)
    return G, D


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    G, D = _tiny_networks()
    snapshot.save_snapshot(str(folder / "network-snapshot-000000"), dict(G=G, D=D, G_ema=G), DATA)
    with open(folder / "training_options.json", "w") as f:
        json.dump(dict(loss_kwargs=dict(nda_spec="jigsaw,cutout")), f)
    return folder


@pytest.fixture(scope="module")
def detectors_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detectors")
    save_standin_detectors(str(folder), inception_features=64, vgg_features=128)
    return str(folder)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(stats_cache.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(detectors.ENV_DETECTORS, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", torch.get_num_threads)


def run(*args):
    return CliRunner().invoke(calc_metrics.calc_metrics, [str(a) for a in args])


def _rows(folder, name):
    with open(folder / ("metric-%s.jsonl" % name)) as f:
        return [json.loads(line) for line in f]


def test_fid_and_nda_auroc_on_a_snapshot_append_json_lines(run_dir, detectors_dir, tmp_path):
    pkl = run_dir / "network-snapshot-000000.pkl"
    args = ("--network", pkl, "--metrics", "fid10k,nda_auroc", "--detectors", detectors_dir,
            "--num-gen", 16, "--num-images", 16, "--verbose", "false")
    first = run(*args)
    assert first.exit_code == 0, first.output
    fid = _rows(run_dir, "fid10k")[-1]
    assert fid["metric"] == "fid10k" and fid["snapshot_pkl"] == "network-snapshot-000000.pkl" and fid["num_gpus"] == 1
    # The line names the detector file it was measured with, and that file's digest.
    standin = os.path.join(detectors_dir, "standin-inception-2015-12-05.pt")
    with open(standin, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert fid["detectors"] == {"inception": {"file": "standin-inception-2015-12-05.pt", "sha256": digest}}
    auroc_row = _rows(run_dir, "nda_auroc")[-1]
    assert auroc_row["held_out"] == {"source": "built-in faces 40-55, past the 40 the run trained on", "images": 16}
    auroc = auroc_row["results"]
    # the run's spec (jigsaw,cutout from training_options.json), not the default seven
    assert sorted(k for k in auroc if k.startswith("nda_auroc_neg_")) == ["nda_auroc_neg_cutout", "nda_auroc_neg_jigsaw"]
    assert os.listdir(tmp_path / "cache" / "stats")  # real-data stats were cached

    second = run(*args)  # same seed: same numbers, real stats from the cache
    assert second.exit_code == 0, second.output
    assert _rows(run_dir, "fid10k")[-1]["results"] == fid["results"]
    assert _rows(run_dir, "nda_auroc")[-1]["results"] == auroc
    assert len(_rows(run_dir, "fid10k")) == 2


def test_swd_runs_offline_with_the_mirror_flag(run_dir, tmp_path):
    result = run("--network", run_dir / "network-snapshot-000000.pt", "--metrics", "swd", "--num-images", 16,
                  "--mirror", "1", "--verbose", "true")
    assert result.exit_code == 0, result.output
    assert "swd real" in result.output and '"xflip": true' in result.output
    assert set(_rows(run_dir, "swd")[-1]["results"]) == {"swd_16", "swd_avg"}


def _usage_error(result, *fragments):
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output
    last = errors[0]
    for fragment in fragments:
        assert fragment in last


def test_unknown_metric_lists_the_known_ones(run_dir):
    _usage_error(run("--network", run_dir / "network-snapshot-000000.pkl", "--metrics", "fid,swd"),
                 "unknown metric 'fid'", "fid50k_full", "nda_auroc")


def test_file_that_is_not_a_network(tmp_path):
    bad = tmp_path / "notes.pkl"
    bad.write_bytes(b"hello")
    _usage_error(run("--network", bad, "--metrics", "swd"), "is not a network snapshot")
    _usage_error(run("--network", tmp_path / "missing.pkl", "--metrics", "swd"), "is not a file")
    assert sorted(os.listdir(tmp_path)) == ["notes.pkl"]  # nothing written


def test_dataset_resolution_must_match_the_network(run_dir, tmp_path):
    from PIL import Image

    data = tmp_path / "big"
    data.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(data / ("%d.png" % i))
    before = sorted(os.listdir(run_dir))
    _usage_error(run("--network", run_dir / "network-snapshot-000000.pkl", "--metrics", "swd", "--data", data),
                 "resolution 32 differs from the network's 16")
    assert sorted(os.listdir(run_dir)) == before


def test_missing_detector_names_the_file_and_where_to_put_it(run_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(detectors.ENV_STANDINS)  # the real files
    before = sorted(os.listdir(run_dir))
    _usage_error(run("--network", run_dir / "network-snapshot-000000.pkl", "--metrics", "pr50k3", "--detectors", tmp_path),
                 "vgg16.pt", detectors.VGG16.url)
    assert sorted(os.listdir(run_dir)) == before


class OtherModel(torch.nn.Module):
    """Valid TorchScript of some other network, as large as a real detector file."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weights", torch.zeros([3 * 2 ** 20]))  # 12 MiB

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().flatten(1) * self.weights[0]


def test_bad_detector_files_fail_before_any_work_naming_the_file(run_dir, detectors_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(detectors.ENV_STANDINS)  # the real files
    before = sorted(os.listdir(run_dir))
    folder = tmp_path / "detectors"
    vgg = str(folder / "vgg16.pt")
    args = ("--network", run_dir / "network-snapshot-000000.pkl", "--metrics", "pr50k3", "--detectors", folder)

    save_torchscript(OtherModel(), vgg, standin=False)
    _usage_error(run(*args), vgg, "another model", "return_features", detectors.VGG16.url)
    # A stand-in copied under the published name is refused, whatever its size.
    shutil.copyfile(os.path.join(detectors_dir, "standin-vgg16.pt"), vgg)
    _usage_error(run(*args), vgg, "test stand-in", detectors.VGG16.url)
    with open(vgg, "wb") as f:
        f.write(b"<html>Service unavailable</html>")
    _usage_error(run(*args), vgg, "not a TorchScript archive", detectors.VGG16.url)
    assert sorted(os.listdir(run_dir)) == before


def test_nda_auroc_needs_images_the_run_never_trained_on(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)

    def image_folder(name, count):  # noise images: no negative of them equals its source
        folder = tmp_path / name
        folder.mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, [RES, RES, 3], dtype=np.uint8)).save(folder / ("%d.png" % i))
        return folder

    train, test = image_folder("train", 8), image_folder("test", 8)
    G, D = _tiny_networks()
    trained_on = dict(class_name="training.dataset.ImageFolderDataset", path=str(train), max_size=8, use_labels=False,
                      xflip=False, resolution=RES)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    snapshot.save_snapshot(str(run_dir / "network-snapshot-000000"), dict(G=G, D=D, G_ema=G), trained_on)
    args = ("--network", run_dir / "network-snapshot-000000.pkl", "--metrics", "nda_auroc", "--num-images", 8,
            "--verbose", "false")
    _usage_error(run(*args), "trained on all of %s" % train, "--data")
    _usage_error(run(*args + ("--data", train)), "trained on all of %s" % train)
    assert sorted(os.listdir(run_dir)) == ["network-snapshot-000000.pkl", "network-snapshot-000000.pt"]
    result = run(*args + ("--data", test))
    assert result.exit_code == 0, result.output
    row = _rows(run_dir, "nda_auroc")[-1]
    assert row["held_out"] == {"source": "%s (not the path the run trained on)" % test, "images": 8}


def test_unwritable_output_folder(run_dir, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    for name in ("network-snapshot-000000.pkl", "network-snapshot-000000.pt"):
        (ro / name).write_bytes((run_dir / name).read_bytes())
    # A read-only folder (chmod does not stop root, who runs these tests in CI containers).
    real_access = os.access
    monkeypatch.setattr(calc_metrics.os, "access",
                        lambda path, mode: False if os.path.abspath(path) == str(ro) and mode & os.W_OK else real_access(path, mode))
    _usage_error(run("--network", ro / "network-snapshot-000000.pkl", "--metrics", "swd"), "not writable", str(ro))
    assert sorted(os.listdir(ro)) == ["network-snapshot-000000.pkl", "network-snapshot-000000.pt"]


def test_two_processes_report_once_and_agree_with_themselves(run_dir, detectors_dir, tmp_path):
    """--gpus 2 on the CPU: gloo processes split the work (all_gather, all_reduce, broadcast paths),
    for the Inception metrics, swd and the offline fdl0."""
    args = ("--network", run_dir / "network-snapshot-000000.pkl", "--metrics", "kid50k,swd,fdl0_10k_full", "--gpus", 2,
            "--detectors", detectors_dir, "--num-gen", 16, "--max-real", 24, "--num-images", 16, "--verbose", "false")
    before = len(_rows(run_dir, "swd")) if (run_dir / "metric-swd.jsonl").exists() else 0
    first = run(*args)
    assert first.exit_code == 0, first.output
    second = run(*args)
    assert second.exit_code == 0, second.output
    kid = _rows(run_dir, "kid50k")
    assert len(kid) == 2 and kid[0]["num_gpus"] == 2 and kid[0]["results"] == kid[1]["results"]
    assert len(_rows(run_dir, "swd")) == before + 2  # rank 0 alone writes
    fd = _rows(run_dir, "fdl0_10k_full")[-2:]
    assert fd[0]["num_gpus"] == 2 and fd[0]["results"] == fd[1]["results"]
    assert np.isfinite(fd[0]["results"]["fdl0_10k_full"]) and fd[0]["results"]["fdl0_10k_full"] > 0
    # The real features the two processes gathered (and cached) are those of one process, in order.
    from metrics.options import MetricOptions

    (cached,) = [p for p in (tmp_path / "cache" / "stats").iterdir() if "inception" in p.name]
    with np.load(str(cached)) as data:
        gathered = data["all"]
    single = MetricOptions(dataset=dict(DATA, use_labels=False), detectors_dir=detectors_dir, cache_dir=False)
    expected = single.real_stats("inception", dict(return_features=True), max_items=24, capture_all=True,
                                 dataset_updates=dict(max_size=None)).get_all()
    assert gathered.shape == (24, 64) and np.allclose(gathered, expected, atol=1e-5)
    # fdl0's real statistics (sums all-reduced over the ranks) equal those of one process.
    from metrics import fdl0

    (cached,) = [p for p in (tmp_path / "cache" / "stats").iterdir() if fdl0.DETECTOR_NAME in p.name]
    with np.load(str(cached)) as data:
        sums = int(data["num_items"]), data["sum"]
    expected = single.real_stats(fdl0.DETECTOR_NAME, dict(resolution=fdl0.RESOLUTION, stage=fdl0.FEATURE_STAGE),
                                 max_items=24, capture_mean_cov=True)
    one = expected.to_arrays()["sum"]  # float32 features of other batch splits: equal to ~1e-6 of the scale
    assert sums[0] == expected.num_items == 24 and np.allclose(sums[1], one, rtol=0, atol=1e-5 * np.abs(one).max())
