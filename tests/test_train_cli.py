"""train.py's command line: presets, plugin discovery through entry points, the config it builds,
and one clear exit-code-2 error for each kind of bad input (all before any training starts)."""

import json
import os
import sys
import textwrap
import zipfile

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import train
from nda_stylegan.fileio import atomic_write_json
from training import distributed, plugins, presets, run_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def invoke(*args):
    return CliRunner().invoke(train.main, list(args), catch_exceptions=False)


def error_line(result):
    lines = [l for l in result.output.splitlines() if l.startswith("Error:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def write_images(folder, shapes, labels=None):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(0)
    for i, shape in enumerate(shapes):
        arr = rng.randint(0, 255, size=shape, dtype=np.uint8)
        Image.fromarray(arr).save(os.path.join(folder, "img%03d.png" % i))
    if labels is not None:
        with open(os.path.join(folder, "dataset.json"), "w") as f:
            json.dump({"labels": [["img%03d.png" % i, l] for i, l in enumerate(labels)]}, f)
    return str(folder)


# ---------------------------------------------------------------- presets


def test_gpu_presets_keep_the_ada_papers_numbers():
    name, spec = presets.resolve_preset("cifar", 32, 1, has_gpu=True)
    assert name == "cifar"
    assert (spec["ref_gpus"], spec["kimg"], spec["mb"], spec["mbstd"], spec["fmaps"]) == (2, 100000, 64, 32, 1)
    assert (spec["lrate"], spec["gamma"], spec["ema"], spec["ramp"], spec["map"]) == (0.0025, 0.01, 500, 0.05, 2)
    _, p256 = presets.resolve_preset("paper256", 256, 1, has_gpu=True)
    assert (p256["mb"], p256["mbstd"], p256["fmaps"], p256["gamma"], p256["ema"], p256["map"]) == (64, 8, 0.5, 1, 20, 8)


def test_auto_preset_follows_resolution_on_gpu_and_is_cpu_without():
    name, spec = presets.resolve_preset("auto", 256, 2, has_gpu=True)
    assert name == "auto2"
    assert spec["mb"] == 32 and spec["mbstd"] == 4 and spec["fmaps"] == 0.5 and spec["lrate"] == 0.0025
    assert spec["gamma"] == pytest.approx(0.0002 * 256 ** 2 / 32) and spec["ema"] == pytest.approx(10)
    name, spec = presets.resolve_preset("auto", 1024, 1, has_gpu=True)
    assert spec["mb"] == 4 and spec["fmaps"] == 1 and spec["lrate"] == 0.002
    name, spec = presets.resolve_preset("auto", 32, 1, has_gpu=False)
    assert name == "cpu" and spec["channel_max"] <= 64 and 8 <= spec["mb"] <= 16
    with pytest.raises(ValueError, match="unknown preset"):
        presets.resolve_preset("huge", 32, 1, has_gpu=False)


def test_cpu_preset_trains_a_noise_free_generator_and_other_presets_keep_noise():
    # Per-pixel noise printed the same speckle on every fake of a short CPU run: the cpu preset's
    # synthesis_kwargs switch it off, and only there.
    from training import options
    from training.util import construct_class_by_name

    _, cpu, info = options.build_config(cfg="cpu", metrics=[])
    assert cpu["G_kwargs"]["synthesis_kwargs"]["use_noise"] is False
    assert cpu["G_opt_kwargs"]["lr"] == presets.PRESETS["cpu"]["lrate"]
    assert cpu["total_kimg"] == presets.PRESETS["cpu"]["kimg"] <= 30  # minutes on two cores, not hours
    G = construct_class_by_name(**cpu["G_kwargs"], c_dim=0, img_resolution=info.resolution,
                                img_channels=info.num_channels)
    assert not [n for n, _ in G.named_parameters() if "noise" in n]
    assert not [n for n, _ in G.named_buffers() if "noise" in n]
    _, cifar, _ = options.build_config(cfg="cifar", metrics=[])
    assert "use_noise" not in cifar["G_kwargs"]["synthesis_kwargs"]


def test_cpu_preset_upsamples_with_a_box_filter_in_G_only():
    # The smooth [1, 3, 3, 1] filter kept every fake of a short CPU run on one shared shape; the
    # cpu preset's G uses [1, 1], its D and the other presets keep StyleGAN2's filter.
    from training import options
    from training.util import construct_class_by_name

    _, cpu, info = options.build_config(cfg="cpu", metrics=[])
    common = dict(c_dim=0, img_resolution=info.resolution, img_channels=info.num_channels)
    G = construct_class_by_name(**cpu["G_kwargs"], **common)
    D = construct_class_by_name(**cpu["D_kwargs"], **common)
    assert G.synthesis.b8.resample_filter.shape == (2, 2)
    assert G.synthesis.b8.conv0.resample_filter.shape == (2, 2)
    assert D.b32.resample_filter.shape == (4, 4)
    _, cifar, _ = options.build_config(cfg="cifar", metrics=[])
    assert "resample_filter" not in cifar["G_kwargs"]["synthesis_kwargs"]


def test_cpu_preset_caps_torch_threads_unless_the_user_set_them(monkeypatch):
    import torch

    from training import options
    from training.training_loop import _limit_cpu_threads

    _, cpu, _ = options.build_config(cfg="cpu", metrics=[])
    assert cpu["cpu_threads"] == 1
    _, cifar, _ = options.build_config(cfg="cifar", metrics=[])
    assert "cpu_threads" not in cifar
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        _limit_cpu_threads(torch.device("cpu"), 1)
        assert torch.get_num_threads() == 2  # the user's explicit setting wins
        monkeypatch.delenv("OMP_NUM_THREADS")
        _limit_cpu_threads(torch.device("cpu"), None)
        assert torch.get_num_threads() == 2
        _limit_cpu_threads(torch.device("cpu"), 1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- plugins


class FakePlugin:
    name = "fake"

    def click_options(self):
        return [click.Option(["--fake-level"], type=int, default=None, help="fake plugin level")]

    def option_names(self):
        return ["fake_level"]

    def rewrite_config(self, config, options):
        if options.get("fake_level") is None:
            return None
        if options["fake_level"] < 0:
            raise ValueError("--fake-level must be >= 0")
        config["loss_kwargs"] = dict(config["loss_kwargs"], class_name="fake.Loss", inner=config["loss_kwargs"]["class_name"])
        return "fake%d" % options["fake_level"]


def test_plugins_are_discovered_through_entry_points(tmp_path, monkeypatch):
    # A real (fake) distribution on sys.path: importlib.metadata must find its entry point.
    (tmp_path / "fakeplug_mod.py").write_text(textwrap.dedent("""
        import click
        class P:
            name = "fakeplug"
            def click_options(self): return [click.Option(["--fakeplug-x"], type=int)]
            def option_names(self): return ["fakeplug_x"]
            def rewrite_config(self, config, options): return None
        plugin = P()
    """))
    info = tmp_path / "fakeplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[stylegan.trainer_plugins]\nfakeplug = fakeplug_mod:plugin\n"
                                           "broken = fakeplug_missing_module:plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match="broken"):
        found = plugins.discover_plugins()
    names = [p.name for p in found]
    assert "fakeplug" in names and "broken" not in names


def test_plugin_options_are_added_popped_and_rewrite_the_config():
    cmd = click.Command("t", params=[click.Option(["--outdir"])])
    plugins.add_plugin_options(cmd, [FakePlugin()])
    assert [p.name for p in cmd.params] == ["outdir", "fake_level"]
    kwargs = dict(outdir="x", fake_level=3)
    values = plugins.pop_plugin_options(kwargs, [FakePlugin()])
    assert kwargs == dict(outdir="x") and values == {"fake": {"fake_level": 3}}
    config = dict(loss_kwargs=dict(class_name="training.loss.StyleGAN2Loss", r1_gamma=1.0))
    assert plugins.apply_plugins(config, [FakePlugin()], values) == ["fake3"]
    assert config["loss_kwargs"] == dict(class_name="fake.Loss", inner="training.loss.StyleGAN2Loss", r1_gamma=1.0)
    untouched = dict(loss_kwargs=dict(class_name="training.loss.StyleGAN2Loss"))
    assert plugins.apply_plugins(untouched, [FakePlugin()], {"fake": {"fake_level": None}}) == []
    assert untouched == dict(loss_kwargs=dict(class_name="training.loss.StyleGAN2Loss"))
    with pytest.raises(click.UsageError, match="fake-level"):
        plugins.apply_plugins(config, [FakePlugin()], {"fake": {"fake_level": -1}})
    with pytest.raises(RuntimeError, match="already has"):
        plugins.add_plugin_options(cmd, [FakePlugin()])


def test_help_lists_host_and_nda_plugin_options():
    result = invoke("--help")
    assert result.exit_code == 0
    for flag in ("--outdir", "--gpus", "--snap", "--metrics", "--seed", "--dry-run", "--data", "--cond", "--subset",
                 "--mirror", "--cfg", "--gamma", "--kimg", "--batch", "--aug", "--p", "--target", "--augpipe",
                 "--resume", "--freezed", "--fp32", "--nhwc", "--allow-tf32", "--nobench", "--workers",
                 "--nda", "--nda-lambda", "--nda-mode", "--nda-loss"):
        assert flag in result.output, flag


# ---------------------------------------------------------------- the config


def test_dry_run_prints_options_and_creates_nothing(tmp_path):
    out = tmp_path / "runs"
    result = invoke("--outdir", str(out), "--dry-run", "--nda", "jigsaw,stitch")
    assert result.exit_code == 0, result.output
    assert "Dry run; exiting." in result.output
    assert "builtin-cpu-nda-jigsaw-stitch" in result.output
    assert "nda_stylegan.loss.NDALoss" in result.output
    assert not out.exists()


def test_dry_run_announces_a_detector_download_instead_of_fetching_it(tmp_path, monkeypatch):
    from metrics import detectors

    cache = tmp_path / "detector-cache"
    monkeypatch.setenv("NDA_STYLEGAN_METRICS_CACHE", str(cache))
    monkeypatch.delenv("NDA_STYLEGAN_DETECTORS", raising=False)
    fetched = []

    def no_network(url, path, spec):
        fetched.append(url)
        raise OSError("network unreachable")

    monkeypatch.setattr(detectors, "download_file", no_network)
    result = invoke("--outdir", str(tmp_path / "runs"), "--dry-run", "--metrics", "fid50k_full")
    assert result.exit_code == 0, result.output
    assert "note: --metrics fid50k_full will download inception-2015-12-05.pt from https://" in result.output
    assert fetched == [] and not (tmp_path / "runs").exists()
    assert not cache.exists() or not any(cache.rglob("*.pt"))
    # The real run fetches it before training starts (here the fetch fails: one error line, exit 2).
    result = invoke("--outdir", str(tmp_path / "runs"), "--metrics", "fid50k_full")
    assert result.exit_code == 2 and "cannot download detector file inception-2015-12-05.pt" in error_line(result)
    assert len(fetched) == 1 and not (tmp_path / "runs").exists()


def test_options_json_is_written_before_the_processes_start(tmp_path, monkeypatch):
    seen = {}

    def fake_launch(fn, world_size, device="cpu", args=()):
        c = args[0]
        seen["world"], seen["device"], seen["fn"] = world_size, device, fn
        seen["json"] = json.load(open(os.path.join(c["run_dir"], "training_options.json")))
        seen["c"] = c

    monkeypatch.setattr(distributed, "launch", fake_launch)
    os.makedirs(tmp_path / "00007-old")
    result = invoke("--outdir", str(tmp_path), "--kimg", "1", "--batch", "8", "--metrics", "none", "--gpus", "2")
    assert result.exit_code == 0, result.output
    c = seen["c"]
    assert os.path.basename(c["run_dir"]) == "00008-builtin-cpu-kimg1-batch8"
    assert seen["json"] == json.loads(json.dumps(c))
    assert seen["world"] == 2 and seen["device"] == "cpu" and seen["fn"] is distributed.run_training_loop
    assert c["batch_size"] == 8 and c["batch_gpu"] == 4 and c["num_gpus"] == 2 and c["total_kimg"] == 1
    assert c["metrics"] == [] and c["loss_kwargs"]["class_name"] == "training.loss.StyleGAN2Loss"
    assert c["G_kwargs"]["synthesis_kwargs"]["num_fp16_res"] == 0  # never mixed precision on the CPU
    keys = ("run_dir training_set_kwargs data_loader_kwargs G_kwargs D_kwargs G_opt_kwargs D_opt_kwargs augment_kwargs "
            "loss_kwargs metrics random_seed num_gpus batch_size batch_gpu ema_kimg ema_rampup G_reg_interval "
            "D_reg_interval augment_p ada_target ada_interval ada_kimg total_kimg kimg_per_tick image_snapshot_ticks "
            "network_snapshot_ticks resume cudnn_benchmark allow_tf32 device").split()
    assert set(keys) <= set(c)


def test_cifar_architecture_options(tmp_path, monkeypatch):
    captured = {}
    monkeypatch.setattr(distributed, "launch", lambda fn, n, device="cpu", args=(): captured.update(c=args[0]))
    result = invoke("--outdir", str(tmp_path), "--cfg", "cifar", "--batch", "8", "--aug", "noaug", "--metrics", "none")
    assert result.exit_code == 0, result.output
    c = captured["c"]
    assert c["D_kwargs"]["architecture"] == "orig" and c["loss_kwargs"]["pl_weight"] == 0
    assert c["D_kwargs"]["epilogue_kwargs"]["mbstd_group_size"] == 32 and c["batch_gpu"] == 8
    assert c["G_kwargs"]["synthesis_kwargs"]["channel_base"] == 32768 and c["augment_kwargs"] is None


def test_nhwc_and_nobench_as_in_the_host(tmp_path, monkeypatch):
    """--nhwc: channels-last in the FP16 layers (a CPU run has none); --nobench: cuDNN benchmarking off."""
    from training.util import construct_class_by_name

    captured = {}
    monkeypatch.setattr(distributed, "launch", lambda fn, n, device="cpu", args=(): captured.update(c=args[0]))
    assert invoke("--outdir", str(tmp_path), "--metrics", "none").exit_code == 0
    default = captured["c"]
    result = invoke("--outdir", str(tmp_path), "--metrics", "none", "--nhwc", "1", "--nobench", "true")
    assert result.exit_code == 0, result.output
    c = captured["c"]
    assert default["cudnn_benchmark"] is True and c["cudnn_benchmark"] is False
    assert "fp16_channels_last" not in default["G_kwargs"]["synthesis_kwargs"]
    assert c["G_kwargs"]["synthesis_kwargs"]["fp16_channels_last"] is True
    assert c["D_kwargs"]["block_kwargs"]["fp16_channels_last"] is True
    assert os.path.basename(c["run_dir"]).endswith("-builtin-cpu")  # like the host: not part of the run's name

    def channels_last_blocks(num_fp16_res):
        common = dict(c_dim=0, img_resolution=32, img_channels=3)
        G = construct_class_by_name(**dict(c["G_kwargs"], synthesis_kwargs=dict(
            c["G_kwargs"]["synthesis_kwargs"], num_fp16_res=num_fp16_res)), **common)
        D = construct_class_by_name(**dict(c["D_kwargs"], num_fp16_res=num_fp16_res), **common)
        blocks = [b for b in list(G.synthesis.children()) + list(D.children()) if hasattr(b, "channels_last")]
        return sorted((type(b).__name__, b.resolution) for b in blocks if b.channels_last)

    assert channels_last_blocks(0) == []  # the CPU config: no FP16 layers, so nothing changes
    assert channels_last_blocks(2) == [("DiscriminatorBlock", 16), ("DiscriminatorBlock", 32),
                                       ("SynthesisBlock", 16), ("SynthesisBlock", 32)]  # a GPU's FP16 layers
    result = invoke("--outdir", str(tmp_path), "--dry-run", "--nhwc", "maybe")
    assert result.exit_code == 2 and "--nhwc" in error_line(result)


def test_run_dir_takes_next_free_id_and_json_is_atomic(tmp_path):
    os.makedirs(tmp_path / "00003-x")
    (tmp_path / "00009-file").write_text("not a folder: ignored")
    path = run_dir.create_run_dir(str(tmp_path), "builtin-cpu")
    assert os.path.basename(path) == "00004-builtin-cpu"
    atomic_write_json(os.path.join(path, "o.json"), {"a": 1})
    assert json.load(open(os.path.join(path, "o.json"))) == {"a": 1}
    assert os.listdir(path) == ["o.json"]  # no temp file left beside it


# ---------------------------------------------------------------- bad input: exit code 2, one line


@pytest.mark.parametrize("args, expected", [
    (["--cfg", "huge"], "huge"),
    (["--p", "0.3"], "--p can only be given with --aug=fixed"),
    (["--aug", "fixed"], "--aug=fixed needs --p"),
    (["--batch", "6"], "minibatch-stddev group"),
    (["--gpus", "2", "--batch", "10"], "--gpus"),
    (["--gpus", "3"], "power of two"),
    (["--augpipe", "xyz"], "--augpipe=xyz is unknown"),
    (["--metrics", "nosuchmetric"], "unknown metric"),
    (["--data", "/nonexistent/folder"], "--data"),
    (["--kimg", "0"], "--kimg"),
    (["--nda", "nosuchnegative"], "nosuchnegative"),
    (["--seed", "-5"], "--seed must be between 0 and 4294967295"),
    (["--seed", "4294967296"], "--seed must be between 0 and 4294967295"),
    (["--nda", "jigsaw(k=3)"], "divisible by 3, got 32x32"),
    (["--nda", "mosaic(k=64)"], "at least 64 pixels per side"),
    (["--nda", "jigsaw:1e308,stitch:1e308"], "add up to more than the largest float"),
    (["--nda", "jigsaw,cutmix", "--batch", "1"], "cutmix pairs each image with another one"),
])
def test_bad_options_fail_with_one_clear_line(tmp_path, args, expected):
    result = invoke("--outdir", str(tmp_path / "runs"), "--dry-run", *args)
    assert result.exit_code == 2, result.output
    assert expected in error_line(result)


def test_bad_datasets_fail_before_training(tmp_path):
    cases = {
        "nonsquare": write_images(tmp_path / "nonsquare", [(32, 16, 3)] * 2),
        "not power of two": write_images(tmp_path / "npot", [(24, 24, 3)] * 2),
        "channels": write_images(tmp_path / "mixed", [(32, 32, 3), (32, 32)]),
    }
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
    cases["corrupt"] = str(corrupt)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases["empty"] = str(empty)
    for what, path in cases.items():
        result = invoke("--outdir", str(tmp_path / "runs"), "--dry-run", "--data", path)
        assert result.exit_code == 2, (what, result.output)
        assert "--data" in error_line(result), what
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("workers", [0, 1])
def test_image_that_fails_to_decode_mid_run_is_one_line_exit_2_and_logged(tmp_path, workers):
    """Only headers (and the first image) are decoded before launch; a corrupt image found while
    training (in the process or in a DataLoader worker) is one line, not a chained traceback."""
    import io
    import subprocess

    data = tmp_path / "broken.zip"
    rng = np.random.RandomState(0)
    with zipfile.ZipFile(str(data), "w") as z:
        for i in range(16):
            buf = io.BytesIO()
            Image.fromarray(rng.randint(0, 255, size=(16, 16, 3), dtype=np.uint8)).save(buf, format="png")
            png = buf.getvalue()
            if i > 0:  # header intact, pixel data garbled: passes the header scan, fails to decode
                start = png.index(b"IDAT") + 4
                png = png[:start] + b"\xff" * 40 + png[start + 40:]
            z.writestr("img%03d.png" % i, png)
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--outdir", str(tmp_path / "runs"), "--data", str(data),
           "--kimg", "0.032", "--batch", "8", "--metrics", "none", "--workers", str(workers)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    (line,) = [l for l in proc.stderr.splitlines() if l.startswith("Error:")]
    assert "cannot decode image img0" in line and "broken.zip" in line and "re-save" in line
    (run,) = os.listdir(str(tmp_path / "runs"))
    assert open(os.path.join(str(tmp_path / "runs"), run, "log.txt")).read().splitlines()[-1] == line


def test_cond_needs_labels(tmp_path):
    unlabelled = write_images(tmp_path / "plain", [(32, 32, 3)] * 4)
    result = invoke("--outdir", str(tmp_path / "runs"), "--dry-run", "--data", unlabelled, "--cond", "1")
    assert result.exit_code == 2 and "--cond" in error_line(result)
    labelled = write_images(tmp_path / "lab", [(32, 32, 3)] * 4, labels=[0, 1, 0, 1])
    result = invoke("--outdir", str(tmp_path / "runs"), "--dry-run", "--data", labelled, "--cond", "1")
    assert result.exit_code == 0, result.output
    assert "-cond-cpu" in result.output


def test_unwritable_outdir_fails(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for outdir in (blocker, blocker / "runs"):
        result = invoke("--outdir", str(outdir), "--dry-run")
        assert result.exit_code == 2 and "--outdir" in error_line(result)


# ---------------------------------------------------------------- transfer learning


def _save_snapshot(path_stem, channel_max):
    from training import options, snapshot
    from training.util import construct_class_by_name

    _, c, info = options.build_config(cfg="cpu", metrics=[])
    for kw in (c["G_kwargs"]["synthesis_kwargs"], c["D_kwargs"]):
        kw["channel_max"] = channel_max
    common = dict(c_dim=0, img_resolution=info.resolution, img_channels=info.num_channels)
    G = construct_class_by_name(**c["G_kwargs"], **common)
    D = construct_class_by_name(**c["D_kwargs"], **common)
    return snapshot.save_snapshot(str(path_stem), dict(G=G, D=D, G_ema=G), c["training_set_kwargs"],
                                  construct_kwargs=dict(G=dict(c["G_kwargs"], **common), D=dict(c["D_kwargs"], **common),
                                                        G_ema=dict(c["G_kwargs"], **common)))


def test_resume_checks_the_architecture_before_starting(tmp_path):
    from training.presets import PRESETS

    same = _save_snapshot(tmp_path / "same", PRESETS["cpu"]["channel_max"])
    other = _save_snapshot(tmp_path / "other", PRESETS["cpu"]["channel_max"] // 2)
    result = invoke("--outdir", str(tmp_path / "runs"), "--dry-run", "--resume", same)
    assert result.exit_code == 0, result.output
    assert "-resumecustom" in result.output
    result = invoke("--outdir", str(tmp_path / "runs"), "--dry-run", "--resume", other)
    assert result.exit_code == 2 and "another architecture" in error_line(result)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle")
    for path in (str(garbage), str(tmp_path / "missing.pkl")):
        result = invoke("--outdir", str(tmp_path / "runs"), "--dry-run", "--resume", path)
        assert result.exit_code == 2 and "--resume" in error_line(result)


def test_freezed_freezes_d_layers_or_says_why_not(tmp_path, monkeypatch):
    captured = {}
    monkeypatch.setattr(distributed, "launch", lambda fn, n, device="cpu", args=(): captured.update(c=args[0]))
    result = invoke("--outdir", str(tmp_path), "--freezed", "2", "--metrics", "none")
    assert result.exit_code == 0, result.output
    assert captured["c"]["D_kwargs"]["block_kwargs"]["freeze_layers"] == 2
    result = invoke("--outdir", str(tmp_path), "--dry-run", "--freezed", "-1")
    assert result.exit_code == 2 and "--freezed" in error_line(result)
    # A discriminator that ignores freeze_layers must not silently train every layer.
    from training import networks

    class IgnoresFreezing(networks.Discriminator):
        def __init__(self, block_kwargs=None, **kwargs):
            super().__init__(block_kwargs={k: v for k, v in (block_kwargs or {}).items() if k != "freeze_layers"}, **kwargs)

    monkeypatch.setattr(networks, "Discriminator", IgnoresFreezing)
    result = invoke("--outdir", str(tmp_path), "--dry-run", "--freezed", "2")
    assert result.exit_code == 2 and "does not support layer freezing" in error_line(result)


def test_gpus_must_agree_with_torchrun(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = invoke("--outdir", str(tmp_path), "--dry-run", "--gpus", "4")
    assert result.exit_code == 2 and "WORLD_SIZE=2" in error_line(result)
    result = invoke("--outdir", str(tmp_path), "--dry-run", "--batch", "8")
    assert result.exit_code == 0 and "2 on cpu" in result.output


def test_default_metrics_never_need_a_download(tmp_path, monkeypatch):
    from training import checks

    monkeypatch.setenv("NDA_STYLEGAN_METRICS_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("NDA_STYLEGAN_DETECTORS", str(tmp_path))
    assert checks.resolve_metrics(None, "cpu") == ["fdl0_10k_full"]  # packaged weights: no download
    assert checks.resolve_metrics(["auto"], "cuda") == ["fdl0_10k_full"]  # no Inception file on disk
    (tmp_path / "inception-2015-12-05.pt").write_bytes(b"an error page")  # not a usable Inception file
    assert checks.resolve_metrics(None, "cuda") == ["fdl0_10k_full"]
    from metrics import detectors, fdl0

    def weights_missing():
        raise detectors.DetectorUnavailableError("efficientnet-lite0 weights are not installed")

    with monkeypatch.context() as m:  # without the metrics extra: network-free swd on a GPU, none on a CPU
        m.setattr(fdl0, "check_available", weights_missing)
        assert checks.resolve_metrics(None, "cuda") == ["swd"] and checks.resolve_metrics(None, "cpu") == []
    from standin_detectors import save_standin_detectors, use_standins

    use_standins(monkeypatch)  # a usable Inception file (the stand-in) on disk
    save_standin_detectors(str(tmp_path), inception_features=8, vgg_features=8)
    assert checks.resolve_metrics(None, "cuda") == ["fid50k_full"]
    assert checks.resolve_metrics(["kid50k_full", "swd"], "cpu") == ["kid50k_full", "swd"]
