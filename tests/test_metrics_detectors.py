"""Detector files: offline folder, env variable, download cache (local stand-in servers only)."""

import http.server
import os
import pathlib
import threading

import pytest
import torch

from metrics import detectors
from metrics.standin_detectors import save_standin_detectors


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detectors")
    save_standin_detectors(str(folder))
    return folder


@pytest.fixture(autouse=True)
def _no_env_folder(monkeypatch):
    monkeypatch.delenv(detectors.ENV_DETECTORS, raising=False)


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


def test_standins_follow_the_published_call_interface(standins):
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
    monkeypatch.setenv(detectors.ENV_DETECTORS, str(standins))
    path = detectors.find_detector_file("vgg16", cache_dir=str(tmp_path / "cache"))
    assert path == os.path.join(str(standins), "vgg16.pt")
    assert not (tmp_path / "cache").exists()  # the offline path never downloads


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


def test_download_from_local_server_is_cached_and_loadable(standins, tmp_path):
    body = (standins / "vgg16.pt").read_bytes()
    server = _Server({"/vgg16.pt": body})
    try:
        spec = _local_spec("vgg16", server.url + "/vgg16.pt")
        cache = tmp_path / "cache"
        path = detectors.find_detector_file(spec, cache_dir=str(cache))
        assert pathlib.Path(path).read_bytes() == body
        assert detectors.find_detector_file(spec, cache_dir=str(cache)) == path
        assert server.requests == 1  # the second look-up used the cache
        module = detectors.load_detector(spec, cache_dir=str(cache))
        assert module(torch.zeros([1, 3, 8, 8], dtype=torch.uint8), return_features=True).shape == (1, 4096)
        assert [p.name for p in cache.iterdir()] == ["vgg16.pt"]  # no temp files left
    finally:
        server.close()


def test_truncated_download_leaves_nothing_behind(standins, tmp_path):
    body = (standins / "vgg16.pt").read_bytes()
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


def test_bad_copy_in_cache_is_replaced_by_a_fresh_download(standins, tmp_path):
    body = (standins / "vgg16.pt").read_bytes()
    (tmp_path / "vgg16.pt").write_bytes(b"PK\x03\x04 too short")
    spec = _local_spec("vgg16", (standins / "vgg16.pt").as_uri())
    path = detectors.find_detector_file(spec, cache_dir=str(tmp_path))
    assert pathlib.Path(path).read_bytes() == body


def test_unloadable_offline_file_is_a_clear_error(tmp_path):
    (tmp_path / "vgg16.pt").write_bytes(b"not torchscript")
    with pytest.raises(detectors.DetectorUnavailableError, match="cannot be loaded as TorchScript"):
        detectors.load_detector("vgg16", detectors_dir=str(tmp_path))


def test_sha256_mismatch_is_rejected(standins, tmp_path):
    spec = _local_spec("vgg16", (standins / "vgg16.pt").as_uri())._replace(sha256="0" * 64)
    with pytest.raises(detectors.DetectorUnavailableError, match="sha256"):
        detectors.find_detector_file(spec, cache_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []
