"""The one op build mechanism (nda_stylegan/ops/build.py): cache, modes, fallback, CUDA compile.

Throwaway ops get a unique name and namespace per test (the build module memoises per name
and a namespace can be registered only once per process) and a cache in ``tmp_path``.
"""

import os
import uuid
import warnings

import pytest
import torch

from nda_stylegan.ops import build, tile_kernel

TINY_OP = """
#include <ATen/ATen.h>
#include <torch/library.h>

at::Tensor plus_one(const at::Tensor& x) { return x + 1; }

TORCH_LIBRARY(%s, m) {
  m.def("plus_one(Tensor x) -> Tensor");
  m.impl("plus_one", &plus_one);
}
"""


def unique(prefix):
    return "%s_%s" % (prefix, uuid.uuid4().hex[:10])


def write_op(folder, namespace, broken=False):
    path = os.path.join(str(folder), namespace + ".cpp")
    with open(path, "w") as f:
        f.write(("#error deliberately broken\n" if broken else "") + TINY_OP % namespace)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("NDA_STYLEGAN_CACHE_DIR", str(root))
    monkeypatch.setenv("NDA_STYLEGAN_OPS", "auto")
    return root


def test_ops_mode_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv("NDA_STYLEGAN_OPS", "fastest")
    with pytest.raises(ValueError, match="auto, reference, strict"):
        build.ops_mode()
    monkeypatch.setenv("NDA_STYLEGAN_OPS", " Strict ")
    assert build.ops_mode() == "strict"


def test_source_hash_follows_the_sources(tmp_path):
    a = write_op(tmp_path, "nda_hash_a")
    key = build.source_hash([a])
    assert build.source_hash([a]) == key
    with open(a, "a") as f:
        f.write("// one more comment\n")
    assert build.source_hash([a]) != key
    assert build.source_hash([a], extra=("-O2",)) != build.source_hash([a])


def test_build_then_cache_hit(cache, tmp_path):
    """First load compiles into a folder named by the hash; a new process reuses the library."""
    ns = unique("nda_test_ok")
    src = write_op(tmp_path, ns)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build.load_op_library(ns, [src]) is True
        assert build.load_op_library(ns, [src]) is True  # memoised
    assert torch.equal(getattr(torch.ops, ns).plus_one(torch.zeros(3)), torch.ones(3))
    folders = [p for p in cache.iterdir() if p.name.startswith(ns)]
    assert [p.name for p in folders] == [build.library_name(ns, [src])]
    libs = list(folders[0].glob("*.so"))
    assert len(libs) == 1
    stamp = libs[0].stat().st_mtime_ns
    # A second process finds the same folder and does not relink (the library is untouched).
    path = build.compile_in_subprocess(ns, [src], cuda=False)
    assert os.path.samefile(path, str(libs[0]))
    assert libs[0].stat().st_mtime_ns == stamp
    # Another source text means another key, hence another folder (and a fresh build).
    with open(src, "a") as f:
        f.write("// changed\n")
    assert build.library_name(ns, [src]) != folders[0].name


def _file_stamps(folder):
    return {name: os.stat(os.path.join(folder, name)).st_mtime_ns
            for name in os.listdir(folder) if os.path.isfile(os.path.join(folder, name))}


def test_two_checkouts_with_the_same_sources_share_one_build(cache, tmp_path):
    """The same source bytes in two folders (a fork and this repo, CI and a work tree) are built
    once: the second build finds the library and touches nothing in the cache folder."""
    ns = unique("nda_test_shared")
    sources = []
    for checkout in ("checkout_a", "checkout_b"):
        (tmp_path / checkout).mkdir()
        sources.append(write_op(tmp_path / checkout, ns))
    assert build.library_name(ns, [sources[0]]) == build.library_name(ns, [sources[1]])
    first = build.compile_in_subprocess(ns, [sources[0]], cuda=False)
    folder = os.path.dirname(first)
    stamps = _file_stamps(folder)
    assert os.path.basename(first) in stamps and "build.ninja" in stamps
    second = build.compile_in_subprocess(ns, [sources[1]], cuda=False)
    assert os.path.samefile(first, second)
    assert _file_stamps(folder) == stamps  # no rebuild, no relink, build.ninja not rewritten
    # And back: the first checkout again still reuses it.
    build.compile_in_subprocess(ns, [sources[0]], cuda=False)
    assert _file_stamps(folder) == stamps


def test_reference_mode_never_builds(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("NDA_STYLEGAN_OPS", "reference")
    ns = unique("nda_test_ref")
    src = write_op(tmp_path, ns, broken=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build.load_op_library(ns, [src]) is False
    assert not cache.exists() or not any(cache.iterdir())
    assert tile_kernel.unsupported_reason(torch.zeros(1, 1, 1, 1)) is not None


def test_broken_source_warns_once_and_falls_back(cache, tmp_path):
    ns = unique("nda_test_broken")
    src = write_op(tmp_path, ns, broken=True)
    with pytest.warns(RuntimeWarning) as record:
        assert build.load_op_library(ns, [src]) is False
        assert build.load_op_library(ns, [src]) is False  # not retried, not warned again
    messages = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    assert "deliberately broken" in messages[0] and "NDA_STYLEGAN_OPS=reference" in messages[0]


def test_strict_mode_raises(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("NDA_STYLEGAN_OPS", "strict")
    ns = unique("nda_test_strict")
    src = write_op(tmp_path, ns, broken=True)
    with pytest.raises(build.OpBuildError, match="deliberately broken"):
        build.load_op_library(ns, [src])


def _cuda_skip_reason():
    if torch.version.cuda is None:
        return "torch %s has no CUDA support, so it cannot compile .cu files" % torch.__version__
    if build.find_cuda_home() is None:
        return "no CUDA toolkit found (put nvcc on PATH or set CUDA_HOME) to compile the CUDA tile kernel"
    return None


@pytest.mark.skipif(_cuda_skip_reason() is not None, reason=str(_cuda_skip_reason()))
def test_cuda_tile_kernel_compiles():
    """The CUDA sources compile and link (no GPU needed); the library loads in a child process."""
    sources = list(tile_kernel.CPU_SOURCES) + list(tile_kernel.CUDA_SOURCES)
    path = build.compile_in_subprocess("nda_tile_compile_check", sources, cuda=True)
    assert os.path.isfile(path) and "_cuda_" in os.path.basename(path)
