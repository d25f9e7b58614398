"""Networks by URL or by stylegan2-ada-pytorch's published names (``--resume ffhq256``,
``--network cifar10``): downloaded once into the cache from a local server standing in for
NVIDIA's, then taken from the cache; offline, one line that says what to download and where."""

import contextlib
import functools
import http.server
import os
import threading

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from trainer_helpers import one_thread
from training import distributed, options, pretrained, snapshot
from training.util import construct_class_by_name

import calc_metrics  # root scripts (conftest.py puts the repository on sys.path)
import generate
import train

single_thread = pytest.fixture(autouse=True)(one_thread)


@contextlib.contextmanager
def serving(folder):
    """Serve the files of ``folder`` over HTTP on 127.0.0.1; yields the base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield "http://127.0.0.1:%d/" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url(folder, name="net.pkl"):
    with serving(folder) as url:  # a port that was just open and is now closed
        pass
    return url + name


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(pretrained.ENV_CACHE, str(folder))
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A stand-in for a published network: built with what train.py's defaults build here (the
    cpu preset on the built-in data), so --resume accepts its architecture."""
    folder = tmp_path_factory.mktemp("cdn")
    _, c, info = options.build_config(metrics=[])
    common = dict(c_dim=0, img_resolution=info.resolution, img_channels=info.num_channels)
    G = construct_class_by_name(**c["G_kwargs"], **common)
    D = construct_class_by_name(**c["D_kwargs"], **common)
    pkl = snapshot.save_snapshot(str(folder / "standin-net"), dict(G=G, D=D, G_ema=G), c["training_set_kwargs"])
    os.remove(folder / "standin-net.pt")  # the host publishes pickles only
    (folder / "error.pkl").write_text("<html>404 Not Found</html>")
    return folder, pkl


def png(folder, seed=0):
    return np.asarray(PIL.Image.open(os.path.join(folder, "seed%04d.png" % seed)))


def test_generate_downloads_a_url_once_then_uses_the_cache(served, cache, tmp_path):
    folder, pkl = served
    local = CliRunner().invoke(generate.main, ["--network", pkl, "--seeds", "0", "--outdir", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    with serving(folder) as base:
        url = base + "standin-net.pkl"
        first = CliRunner().invoke(generate.main, ["--network", url, "--seeds", "0", "--outdir", str(tmp_path / "a")])
        assert first.exit_code == 0, first.output
    assert np.array_equal(png(tmp_path / "a"), png(tmp_path / "local"))
    cached = pretrained.cache_path(url)
    assert os.path.dirname(cached) == str(cache) and os.listdir(cache) == [os.path.basename(cached)]
    again = CliRunner().invoke(generate.main, ["--network", url, "--seeds", "0", "--outdir", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output  # the server is gone: the cached copy is used
    assert np.array_equal(png(tmp_path / "b"), png(tmp_path / "local"))


def test_published_names_resolve_to_nvidias_urls():
    base = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/"
    assert pretrained.PUBLISHED["ffhq256"] == base + "transfer-learning-source-nets/ffhq-res256-mirror-paper256-noaug.pkl"
    assert pretrained.PUBLISHED["cifar10"] == base + "cifar10.pkl"
    assert {"ffhq512", "ffhq1024", "celebahq256", "lsundog256", "ffhq", "metfaces", "afhqcat", "afhqdog", "afhqwild",
            "brecahad"} <= set(pretrained.PUBLISHED)
    # A name and its URL share one cached copy.
    assert pretrained.cache_path(pretrained.PUBLISHED["cifar10"]).endswith("-cifar10.pkl")


def test_resume_and_freezed_from_a_published_name(served, cache, tmp_path, monkeypatch):
    folder, _ = served
    captured = {}
    monkeypatch.setattr(distributed, "launch", lambda fn, n, device="cpu", args=(): captured.update(c=args[0]))
    with serving(folder) as base:
        monkeypatch.setitem(pretrained.PUBLISHED, "ffhq256", base + "standin-net.pkl")
        result = CliRunner().invoke(train.main, ["--outdir", str(tmp_path / "runs"), "--resume", "ffhq256",
                                                 "--freezed", "2", "--metrics", "none"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert captured["c"]["resume"] == pretrained.cache_path(base + "standin-net.pkl")
    assert captured["c"]["D_kwargs"]["block_kwargs"]["freeze_layers"] == 2
    assert captured["c"]["ada_kimg"] == 100  # a bare network: the host's fine-tuning settings
    data = snapshot.load_network_file(captured["c"]["resume"])  # what the loop will load
    assert data.G is not None and data.resume_state is None


def test_calc_metrics_takes_a_published_name(served, cache, tmp_path, monkeypatch):
    folder, _ = served
    with serving(folder) as base:
        monkeypatch.setitem(pretrained.PUBLISHED, "cifar10", base + "standin-net.pkl")
        result = CliRunner().invoke(calc_metrics.calc_metrics, ["--network", "cifar10", "--metrics", "none"])
    assert result.exit_code == 0, result.output
    assert 'Loading network from "%s"' % pretrained.cache_path(base + "standin-net.pkl") in result.output


def test_offline_or_bad_downloads_say_what_to_do_and_leave_nothing(served, cache, tmp_path, monkeypatch):
    folder, _ = served
    url = closed_port_url(folder)
    monkeypatch.setitem(pretrained.PUBLISHED, "ffhq256", url)
    runs = [(generate.main, ["--network", url, "--seeds", "0", "--outdir", str(tmp_path / "o")], "--network"),
            (calc_metrics.calc_metrics, ["--network", url, "--metrics", "none"], "--network"),
            (train.main, ["--outdir", str(tmp_path / "runs"), "--resume", "ffhq256", "--dry-run"], "--resume")]
    for command, args, option in runs:
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 2, result.output
        line = [l for l in result.output.splitlines() if l.startswith("Error:")][0]
        assert line.startswith("Error: %s: cannot download" % option) and "Traceback" not in result.output
        assert "save it as %s" % pretrained.cache_path(url) in line and "local path" in line
    assert not os.path.exists(cache)  # not even an empty cache folder
    with serving(folder) as base:  # a server that answers with an error page, not a pickle
        result = CliRunner().invoke(generate.main, ["--network", base + "error.pkl", "--seeds", "0",
                                                    "--outdir", str(tmp_path / "o")])
    assert result.exit_code == 2 and "something other than a network pickle" in result.output
    assert not os.path.exists(cache)
    assert not (tmp_path / "o").exists()
