"""Pretrained feature detectors (TorchScript), found offline first and downloaded otherwise.

The files are the ones stylegan2-ada-pytorch publishes, under their published names:
``inception-2015-12-05.pt`` (Inception-v3: ``net(uint8 NCHW, return_features=True)`` -> 2048-d,
``net(x, no_output_bias=True)`` -> class probabilities) and ``vgg16.pt`` (``net(x,
return_features=True)`` -> 4096-d, ``net(x, resize_images=False, return_lpips=True)`` -> LPIPS
features). Where a file is looked for, in order:

1. ``detectors_dir`` (``calc_metrics.py --detectors DIR``), else the folder in the environment
   variable ``NDA_STYLEGAN_DETECTORS``: the offline path, never a download;
2. the download cache (``cache_dir``, default ``$NDA_STYLEGAN_METRICS_CACHE/detectors`` or
   ``~/.cache/nda_stylegan/metrics/detectors``);
3. a download from the published URL into that cache (atomic, size- and format-checked).

Every file is checked wherever it comes from: a TorchScript archive of plausible size, the
published sha256 where one is known, and a ``forward()`` that takes the keywords the metrics
pass. Test stand-ins (random weights, ``tests/standin_detectors.py``) have their own file names
(``standin-*.pt``) and a marker inside the archive: they are read only when
``NDA_STYLEGAN_STANDIN_DETECTORS=1`` and refused under the published names otherwise, and every
metric result records the file name and sha256 of the detector it used.
"""

import collections
import functools
import hashlib
import http.client
import os
import urllib.error
import urllib.request
import warnings
import zipfile

import torch

from nda_stylegan.fileio import atomic_write

ENV_DETECTORS = "NDA_STYLEGAN_DETECTORS"
ENV_CACHE = "NDA_STYLEGAN_METRICS_CACHE"
ENV_STANDINS = "NDA_STYLEGAN_STANDIN_DETECTORS"  # "1": read test stand-ins instead of the real files
STANDIN_PREFIX = "standin-"
STANDIN_MARKER = "nda_stylegan_standin"  # an extra file that only stand-in archives hold
_CDN = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"

DetectorSpec = collections.namedtuple("DetectorSpec", "name filename url min_bytes sha256 call_keywords standin",
                                      defaults=((), False))
DetectorSpec.__doc__ = """Where a detector comes from and what a good copy looks like
(``min_bytes``: smallest plausible size; ``sha256``: expected digest, or None when unpublished;
``call_keywords``: keywords the metrics pass to ``forward()``; ``standin``: a test stand-in)."""

# Both published files are tens of megabytes; a few hundred bytes means an error page. The
# Inception digest is the one other projects verify downloads of this URL against (e.g.
# crowsonkb/k-diffusion, k_diffusion/evaluation.py); none is published for vgg16.pt.
INCEPTION = DetectorSpec("inception", "inception-2015-12-05.pt", _CDN + "inception-2015-12-05.pt", 10 * 2 ** 20,
                         "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4",
                         ("return_features", "no_output_bias"))
VGG16 = DetectorSpec("vgg16", "vgg16.pt", _CDN + "vgg16.pt", 10 * 2 ** 20, None,
                     ("return_features", "resize_images", "return_lpips"))
DETECTORS = {spec.name: spec for spec in (INCEPTION, VGG16)}

_ZIP_MAGIC = b"PK\x03\x04"  # TorchScript files are zip archives
_loaded = {}  # (path, mtime, device) -> module
_digests = {}  # (path, mtime, size) -> sha256


class DetectorUnavailableError(ValueError):
    """A detector file is neither on disk nor downloadable; the message says how to provide it."""


class DetectorNotDownloadedError(DetectorUnavailableError):
    """A downloadable detector file is not on disk yet and the caller asked not to download it."""

    def __init__(self, message, filename, url):
        super().__init__(message)
        self.filename, self.url = filename, url


def default_cache_dir():
    root = os.environ.get(ENV_CACHE) or os.path.join(os.path.expanduser("~"), ".cache", "nda_stylegan", "metrics")
    return os.path.join(root, "detectors")


def standins_enabled():
    return os.environ.get(ENV_STANDINS, "") == "1"


def standin_spec(spec):
    """The test stand-in of ``spec``: its own file name, no URL, no size or digest to meet."""
    return spec._replace(filename=STANDIN_PREFIX + spec.filename, url=None, min_bytes=0, sha256=None, standin=True)


def get_spec(name_or_spec):
    """The spec of a detector name (its stand-in's when stand-ins are enabled); a spec as given."""
    if isinstance(name_or_spec, DetectorSpec):
        return name_or_spec
    if name_or_spec not in DETECTORS:
        raise ValueError("unknown detector %r; known: %s" % (name_or_spec, ", ".join(sorted(DETECTORS))))
    spec = DETECTORS[name_or_spec]
    return standin_spec(spec) if standins_enabled() else spec


def _how_to_provide(spec, cache_dir):
    return ("download %s and put it as %s into a folder given by --detectors DIR or %s=DIR, "
            "or into %s" % (spec.url, spec.filename, ENV_DETECTORS, cache_dir))


def _fix(spec):
    """How to get a good copy of ``spec``'s file."""
    if spec.standin:
        return "write the stand-ins with tests/standin_detectors.py (or unset %s to use the real files)" % ENV_STANDINS
    return "replace it with a fresh copy of %s" % spec.url


def file_sha256(path):
    """sha256 of a file, hashed once per path, mtime and size."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    if key not in _digests:
        _digests[key] = _sha256_of(path)
    return _digests[key]


def check_detector_file(path, spec):
    """Raise ValueError when ``path`` cannot be a good copy of ``spec``'s file."""
    with open(path, "rb") as f:
        if f.read(4) != _ZIP_MAGIC:
            raise ValueError("%s is not a TorchScript archive (no zip header)" % path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError("%s is not a readable TorchScript archive (%s)" % (path, exc))
    marked = any(name.endswith("/extra/" + STANDIN_MARKER) for name in names)
    if marked and not spec.standin:
        raise ValueError("%s is a test stand-in with random weights, not the published %s" % (path, spec.filename))
    if spec.standin and not marked:
        raise ValueError("%s is not a test stand-in (no %s marker inside)" % (path, STANDIN_MARKER))
    size = os.path.getsize(path)
    if size < spec.min_bytes:
        raise ValueError("%s has %d bytes, fewer than the %d a real %s has" % (path, size, spec.min_bytes, spec.filename))
    if spec.sha256 is not None:
        digest = file_sha256(path)
        if digest != spec.sha256:
            raise ValueError("%s has sha256 %s, expected %s (the published file's)" % (path, digest, spec.sha256))
    elif not any("/code/" in name for name in names):
        raise ValueError("%s is a zip archive but not TorchScript (it holds no code/)" % path)


def _sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_file(url, dest, spec, timeout=60.0, chunk_bytes=1 << 20):
    """Download ``url`` to ``dest`` atomically: a temp file in the same folder, checked, then
    ``os.replace``; on any failure nothing is left at ``dest`` or beside it."""
    folder = os.path.dirname(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    with atomic_write(dest, "wb", check=functools.partial(check_detector_file, spec=spec)) as out:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            expected = response.headers.get("Content-Length") if hasattr(response, "headers") else None
            received = 0
            for block in iter(lambda: response.read(chunk_bytes), b""):
                out.write(block)
                received += len(block)
        if expected is not None and int(expected) != received:
            raise ValueError("download of %s was cut short: %d of %s bytes" % (url, received, expected))
    return dest


def find_detector_file(name_or_spec, detectors_dir=None, cache_dir=None, download=True):
    """Path of the detector's file on disk, downloading it into the cache when needed."""
    spec = get_spec(name_or_spec)
    offline_dir = detectors_dir or os.environ.get(ENV_DETECTORS) or None
    cache_dir = cache_dir or default_cache_dir()
    if offline_dir:
        path = os.path.join(offline_dir, spec.filename)
        if not os.path.isfile(path):
            source = "--detectors" if detectors_dir else ENV_DETECTORS
            where = ("write the stand-ins with tests/standin_detectors.py" if spec.standin
                     else "download it from %s" % spec.url)
            raise DetectorUnavailableError("detector file %s not found in %s (from %s); %s into that folder"
                                           % (spec.filename, offline_dir, source, where))
        try:
            check_detector_file(path, spec)
        except ValueError as exc:
            raise DetectorUnavailableError("detector file %s; %s" % (exc, _fix(spec)))
        return path
    if spec.standin:
        raise DetectorUnavailableError("stand-in detectors (%s=1) are read only from a folder given by --detectors DIR "
                                       "or %s=DIR; %s" % (ENV_STANDINS, ENV_DETECTORS, _fix(spec)))
    path = os.path.join(cache_dir, spec.filename)
    if os.path.isfile(path):
        try:
            check_detector_file(path, spec)
            return path
        except ValueError:
            os.remove(path)  # a bad copy in our own cache is replaced, not trusted
    if not download:
        raise DetectorNotDownloadedError("detector file %s is not on disk; %s" % (spec.filename, _how_to_provide(spec, cache_dir)),
                                         spec.filename, spec.url)
    try:
        _leader_first(lambda: download_file(spec.url, path, spec) if not os.path.isfile(path) else path)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DetectorUnavailableError("cannot download detector file %s (%s); %s"
                                       % (spec.filename, reason, _how_to_provide(spec, cache_dir)))
    return path


def _leader_first(fn):
    """Run ``fn`` on rank 0 before the other ranks, so only one process downloads."""
    dist = torch.distributed
    multi = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if multi and dist.get_rank() != 0:
        dist.barrier()
    try:
        return fn()
    finally:
        if multi and dist.get_rank() == 0:
            dist.barrier()


def load_detector(name_or_spec, device="cpu", detectors_dir=None, cache_dir=None, download=True):
    """The detector as an eval-mode TorchScript module on ``device`` (loaded once per process)."""
    spec = get_spec(name_or_spec)
    path = find_detector_file(spec, detectors_dir=detectors_dir, cache_dir=cache_dir, download=download)
    device = torch.device(device)
    key = (os.path.abspath(path), os.path.getmtime(path), str(device))
    if key not in _loaded:
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated in new torch, but it is the host's format
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(path, map_location=device)
        except Exception as exc:  # torch raises RuntimeError or its own types for bad archives
            raise DetectorUnavailableError("detector file %s cannot be loaded as TorchScript (%s); %s"
                                           % (path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, _fix(spec)))
        _check_call_interface(module, spec, path)
        _loaded[key] = module.eval()
    return _loaded[key]


def _check_call_interface(module, spec, path):
    """The metrics call ``net(x, return_features=True)`` and the like: a TorchScript file of
    another model must fail here, naming the file, not deep inside a metric."""
    try:
        accepted = {arg.name for arg in module.forward.schema.arguments}
    except (AttributeError, RuntimeError):  # no scripted forward() at all
        accepted = set()
    missing = [name for name in spec.call_keywords if name not in accepted]
    if missing:
        raise DetectorUnavailableError("detector file %s is TorchScript of another model: its forward() takes no %s "
                                       "argument, which %s has; %s" % (path, missing[0], spec.filename, _fix(spec)))


def detector_identity(path):
    """What a metric result records about a detector file: its name and sha256."""
    return dict(file=os.path.basename(path), sha256=file_sha256(path))


def detector_tag(spec):
    """Stable name of a detector for cache keys: its published file name."""
    return os.path.splitext(get_spec(spec).filename)[0]
