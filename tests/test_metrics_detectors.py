"""Detector files: offline folder, env variable, download cache (local stand-in servers only)."""

import http.server
import os
import pathlib
import threading
import zipfile

import pytest
import torch

from metrics import detectors
from standin_detectors import StandinVGG16, save_standin_detectors, save_torchscript, use_standins


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detectors")
    save_standin_detectors(str(folder))
    return folder


@pytest.fixture(scope="module")
def unmarked(tmp_path_factory):
    """A small TorchScript file with the VGG16 interface and no stand-in marker: what the download
    tests serve (their specs ask for 1000 bytes, not the real file's size)."""
    return pathlib.Path(save_torchscript(StandinVGG16(num_features=16), str(tmp_path_factory.mktemp("plain") / "vgg16.pt"),
                                         standin=False))


@pytest.fixture(autouse=True)
def _no_env_folder(monkeypatch):
    monkeypatch.delenv(detectors.ENV_DETECTORS, raising=False)
    monkeypatch.delenv(detectors.ENV_STANDINS, raising=False)


def _local_spec(name, url):
    return detectors.get_spec(name)._replace(url=url, min_bytes=1000)


class _Server:
    """An HTTP server on 127.0.0.1 serving ``files`` (path -> bytes); ``lie_length`` announces more
    bytes than it sends, as a connection cut mid-download does."""

    def __init__(self, files, lie_length=False):
        outer = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + (100 if lie_length else 0)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_standins_follow_the_published_call_interface(standins, monkeypatch):
    use_standins(monkeypatch)
    x = torch.randint(0, 256, [3, 3, 16, 16], dtype=torch.uint8)
    inception = detectors.load_detector("inception", detectors_dir=str(standins))
    assert inception(x, return_features=True).shape == (3, 2048)
    probs = inception(x, no_output_bias=True)
    assert torch.allclose(probs.sum(dim=1), torch.ones(3))
    assert not torch.allclose(probs, inception(x))  # the bias matters
    vgg = detectors.load_detector("vgg16", detectors_dir=str(standins))
    assert vgg(x, return_features=True).shape == (3, 4096)
    assert vgg(x, resize_images=False, return_lpips=True).ndim == 2


def test_offline_folder_from_env_variable(standins, monkeypatch, tmp_path):
    use_standins(monkeypatch)
    monkeypatch.setenv(detectors.ENV_DETECTORS, str(standins))
    path = detectors.find_detector_file("vgg16", cache_dir=str(tmp_path / "cache"))
    assert path == os.path.join(str(standins), "standin-vgg16.pt")
    assert not (tmp_path / "cache").exists()  # the offline path never downloads


def test_standins_are_read_only_when_enabled_and_never_under_the_real_names(standins, monkeypatch, tmp_path):
    # Without the switch, a folder of stand-ins holds no detector file.
    with pytest.raises(detectors.DetectorUnavailableError, match="vgg16.pt not found"):
        detectors.find_detector_file("vgg16", detectors_dir=str(standins))
    # A stand-in renamed to the published name is refused (it is small, but the marker says why).
    for name in ("vgg16", "inception"):
        real = tmp_path / detectors.DETECTORS[name].filename
        real.write_bytes((standins / ("standin-" + real.name)).read_bytes())
        with pytest.raises(detectors.DetectorUnavailableError) as info:
            detectors.find_detector_file(name, detectors_dir=str(tmp_path))
        assert "test stand-in" in str(info.value) and str(real) in str(info.value)
        assert detectors.DETECTORS[name].url in str(info.value)
    # With the switch, only marked files under the stand-in names are read, and only from a folder.
    use_standins(monkeypatch)
    (tmp_path / "standin-vgg16.pt").write_bytes((tmp_path / "vgg16.pt").read_bytes())
    assert detectors.find_detector_file("vgg16", detectors_dir=str(tmp_path)) == str(tmp_path / "standin-vgg16.pt")
    save_torchscript(StandinVGG16(num_features=16), str(tmp_path / "standin-vgg16.pt"), standin=False)
    with pytest.raises(detectors.DetectorUnavailableError, match="not a test stand-in"):
        detectors.find_detector_file("vgg16", detectors_dir=str(tmp_path))
    with pytest.raises(detectors.DetectorUnavailableError, match="read only from a folder"):
        detectors.find_detector_file("vgg16", cache_dir=str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()


def test_offline_files_are_checked_for_format_and_size(tmp_path):
    vgg = tmp_path / "vgg16.pt"
    vgg.write_bytes(b"<html>Not found</html>")  # a saved error page
    with pytest.raises(detectors.DetectorUnavailableError, match="not a TorchScript archive") as info:
        detectors.find_detector_file("vgg16", detectors_dir=str(tmp_path))
    assert str(vgg) in str(info.value) and detectors.VGG16.url in str(info.value)
    save_torchscript(StandinVGG16(num_features=16), str(vgg), standin=False)  # TorchScript, but 0.1 MB
    with pytest.raises(detectors.DetectorUnavailableError, match="fewer than the %d" % detectors.VGG16.min_bytes):
        detectors.find_detector_file("vgg16", detectors_dir=str(tmp_path))
    with zipfile.ZipFile(str(vgg), "w") as archive:  # a zip, but no TorchScript inside
        archive.writestr("archive/data.pkl", os.urandom(11 * 2 ** 20))
    with pytest.raises(detectors.DetectorUnavailableError, match="not TorchScript"):
        detectors.find_detector_file("vgg16", detectors_dir=str(tmp_path))


class BigModel(torch.nn.Module):
    """TorchScript with the published Inception interface and the size of a real file."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weights", torch.zeros([3 * 2 ** 20]))  # 12 MiB

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        return img.float().flatten(1) * self.weights[0]


def test_inception_must_match_the_published_digest(tmp_path):
    path = save_torchscript(BigModel(), str(tmp_path / "inception-2015-12-05.pt"), standin=False)
    with pytest.raises(detectors.DetectorUnavailableError) as info:
        detectors.find_detector_file("inception", detectors_dir=str(tmp_path))
    msg = str(info.value)
    assert path in msg and "sha256" in msg and detectors.INCEPTION.sha256 in msg and detectors.INCEPTION.url in msg
    # The same file passes when the digest asked for is its own: the digest is what refused it.
    own = detectors.file_sha256(path)
    assert detectors.find_detector_file(detectors.INCEPTION._replace(sha256=own), detectors_dir=str(tmp_path)) == path


def test_torchscript_of_another_model_names_the_file(tmp_path):
    path = save_torchscript(torch.nn.Linear(4, 4), str(tmp_path / "vgg16.pt"), standin=False)
    spec = _local_spec("vgg16", detectors.VGG16.url)  # a small file is fine here
    with pytest.raises(detectors.DetectorUnavailableError) as info:
        detectors.load_detector(spec, detectors_dir=str(tmp_path))
    msg = str(info.value)
    assert path in msg and "another model" in msg and "return_features" in msg and detectors.VGG16.url in msg


def test_missing_file_in_offline_folder_names_file_url_and_folder(tmp_path):
    with pytest.raises(detectors.DetectorUnavailableError) as info:
        detectors.find_detector_file("inception", detectors_dir=str(tmp_path))
    msg = str(info.value)
    assert "inception-2015-12-05.pt" in msg and detectors.INCEPTION.url in msg and str(tmp_path) in msg


def test_unreachable_url_error_says_what_to_download_and_where(tmp_path):
    server = _Server({})
    server.close()  # nothing listens on that port any more
    spec = _local_spec("inception", server.url + "/inception-2015-12-05.pt")
    cache = tmp_path / "cache"
    with pytest.raises(detectors.DetectorUnavailableError) as info:
        detectors.find_detector_file(spec, cache_dir=str(cache))
    msg = str(info.value)
    assert spec.url in msg and "--detectors" in msg and detectors.ENV_DETECTORS in msg and str(cache) in msg
    assert not cache.exists() or not list(cache.iterdir())


def test_download_from_local_server_is_cached_and_loadable(unmarked, tmp_path):
    body = unmarked.read_bytes()
    server = _Server({"/vgg16.pt": body})
    try:
        spec = _local_spec("vgg16", server.url + "/vgg16.pt")
        cache = tmp_path / "cache"
        path = detectors.find_detector_file(spec, cache_dir=str(cache))
        assert pathlib.Path(path).read_bytes() == body
        assert detectors.find_detector_file(spec, cache_dir=str(cache)) == path
        assert server.requests == 1  # the second look-up used the cache
        module = detectors.load_detector(spec, cache_dir=str(cache))
        assert module(torch.zeros([1, 3, 8, 8], dtype=torch.uint8), return_features=True).shape == (1, 16)
        assert [p.name for p in cache.iterdir()] == ["vgg16.pt"]  # no temp files left
    finally:
        server.close()


def test_truncated_download_leaves_nothing_behind(unmarked, tmp_path):
    body = unmarked.read_bytes()
    server = _Server({"/vgg16.pt": body}, lie_length=True)
    try:
        spec = _local_spec("vgg16", server.url + "/vgg16.pt")
        with pytest.raises(detectors.DetectorUnavailableError, match="cut short|IncompleteRead|vgg16.pt"):
            detectors.find_detector_file(spec, cache_dir=str(tmp_path))
        assert list(tmp_path.iterdir()) == []
    finally:
        server.close()


def test_file_url_download_rejects_a_non_torchscript_file(tmp_path):
    page = tmp_path / "error.html"
    page.write_bytes(b"<html>" + b"x" * 5000)
    spec = _local_spec("inception", page.as_uri())
    cache = tmp_path / "cache"
    with pytest.raises(detectors.DetectorUnavailableError, match="not a TorchScript archive"):
        detectors.find_detector_file(spec, cache_dir=str(cache))
    assert list(cache.iterdir()) == []


def test_bad_copy_in_cache_is_replaced_by_a_fresh_download(unmarked, tmp_path):
    body = unmarked.read_bytes()
    (tmp_path / "vgg16.pt").write_bytes(b"PK\x03\x04 too short")
    spec = _local_spec("vgg16", unmarked.as_uri())
    path = detectors.find_detector_file(spec, cache_dir=str(tmp_path))
    assert pathlib.Path(path).read_bytes() == body


def test_unloadable_offline_file_is_a_clear_error(tmp_path):
    with zipfile.ZipFile(str(tmp_path / "vgg16.pt"), "w") as archive:  # looks like TorchScript, is not
        archive.writestr("archive/code/__torch__.py", "x" * 2000)
    with pytest.raises(detectors.DetectorUnavailableError, match="cannot be loaded as TorchScript"):
        detectors.load_detector(_local_spec("vgg16", detectors.VGG16.url), detectors_dir=str(tmp_path))


def test_sha256_mismatch_is_rejected(unmarked, tmp_path):
    spec = _local_spec("vgg16", unmarked.as_uri())._replace(sha256="0" * 64)
    with pytest.raises(detectors.DetectorUnavailableError, match="sha256"):
        detectors.find_detector_file(spec, cache_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []
