"""Networks given by URL or by stylegan2-ada-pytorch's published names (``--resume ffhq256``,
``--network cifar10``): taken from the download cache, else downloaded once into it (atomically).

Every other value is a local path and is returned unchanged. The cache is
``$NDA_STYLEGAN_NETWORKS_CACHE`` or ``~/.cache/nda_stylegan/networks``; a file there is named
after its URL, so a name and its URL share one copy.
"""

import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request

from nda_stylegan.fileio import atomic_write

ENV_CACHE = "NDA_STYLEGAN_NETWORKS_CACHE"
_CDN = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/"
_TRANSFER = _CDN + "transfer-learning-source-nets/"
# The names stylegan2-ada-pytorch's train.py takes for --resume (transfer-learning sources),
# then the trained networks its README publishes.
PUBLISHED = {
    "ffhq256": _TRANSFER + "ffhq-res256-mirror-paper256-noaug.pkl",
    "ffhq512": _TRANSFER + "ffhq-res512-mirror-stylegan2-noaug.pkl",
    "ffhq1024": _TRANSFER + "ffhq-res1024-mirror-stylegan2-noaug.pkl",
    "celebahq256": _TRANSFER + "celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl",
    "lsundog256": _TRANSFER + "lsundog-res256-paper256-kimg100000-noaug.pkl",
    "ffhq": _CDN + "ffhq.pkl",
    "metfaces": _CDN + "metfaces.pkl",
    "afhqcat": _CDN + "afhqcat.pkl",
    "afhqdog": _CDN + "afhqdog.pkl",
    "afhqwild": _CDN + "afhqwild.pkl",
    "brecahad": _CDN + "brecahad.pkl",
    "cifar10": _CDN + "cifar10.pkl",
}
_PICKLE_START = b"\x80"  # every pickle of protocol 2 or later; an HTML error page never starts so


class NetworkUnavailableError(ValueError):
    """A named or remote network is not cached and cannot be downloaded; the message says what to do."""


def default_cache_dir():
    return os.environ.get(ENV_CACHE) or os.path.join(os.path.expanduser("~"), ".cache", "nda_stylegan", "networks")


def is_remote(spec):
    return spec in PUBLISHED or spec.startswith(("http://", "https://"))


def cache_path(url, cache_dir=None):
    name = os.path.basename(urllib.parse.urlparse(url).path) or "network.pkl"
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
    return os.path.join(cache_dir or default_cache_dir(), "%s-%s" % (digest, name))


def _download(url, dest, timeout=60.0):
    """``url`` -> ``dest``, atomically; on failure nothing is left behind (not even a new, empty
    cache folder)."""
    folder = os.path.dirname(os.path.abspath(dest))
    created = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    try:
        with atomic_write(dest) as out, urllib.request.urlopen(url, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            received = 0
            for block in iter(lambda: response.read(1 << 20), b""):
                if received == 0 and not block.startswith(_PICKLE_START):
                    raise ValueError("the server sent something other than a network pickle")
                out.write(block)
                received += len(block)
            if received == 0 or (expected is not None and int(expected) != received):
                raise ValueError("the download was cut short: %d of %s bytes" % (received, expected or "?"))
    except BaseException:
        _remove_new_folder(folder, created)
        raise


def _remove_new_folder(folder, created):
    """A failed first download leaves no empty cache folder behind."""
    if created:
        try:
            os.rmdir(folder)
        except OSError:  # not empty after all (another process's download): keep it
            pass


def resolve_network(spec, cache_dir=None, download=True):
    """Local path of the network ``spec`` names: a published name or URL is looked up in the
    cache and downloaded when missing; anything else is a path and comes back unchanged."""
    spec = os.fspath(spec)
    if not is_remote(spec) or os.path.exists(spec):  # a local file called "ffhq" stays a local file
        return spec
    url = PUBLISHED.get(spec, spec)
    path = cache_path(url, cache_dir)
    if os.path.isfile(path):
        return path
    what = "%s (%s)" % (spec, url) if spec in PUBLISHED else url
    if not download:
        raise NetworkUnavailableError("%s is not in the cache; download it and save it as %s, or give a local file"
                                      % (what, path))
    try:
        _download(url, path)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise NetworkUnavailableError("cannot download %s (%s); without network, download it elsewhere and save it as "
                                      "%s, or give the file's local path" % (what, reason, path))
    return path
