"""Disk cache of real-data feature statistics, so a second metric call skips the dataset pass.

Files are ``.npz`` archives of plain arrays (loaded with ``allow_pickle=False``: a cache file can
never run code), named ``<dataset>-<detector>-<md5 of the key>.npz``. The key is the dataset's
options and content fingerprint, the detector file's identity and the metric's options; it is also
stored inside the file and compared on load. A file that fails to load or validate is ignored and
recomputed; writes go to a temp file first and are moved into place with ``os.replace``.
"""

import hashlib
import json
import os

import numpy as np

from metrics.features import FeatureStats
from nda_stylegan.fileio import atomic_write

ENV_CACHE = "NDA_STYLEGAN_METRICS_CACHE"


def default_cache_dir():
    root = os.environ.get(ENV_CACHE) or os.path.join(os.path.expanduser("~"), ".cache", "nda_stylegan", "metrics")
    return os.path.join(root, "stats")


def make_key(**parts):
    """Canonical text of the key parts (JSON, sorted keys; non-JSON values by ``repr``)."""
    return json.dumps(parts, sort_keys=True, default=repr)


def cache_path(cache_dir, key, dataset_name="dataset", detector_name="detector"):
    digest = hashlib.md5(key.encode("utf-8")).hexdigest()
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in "%s-%s" % (dataset_name, detector_name))
    return os.path.join(cache_dir, "%s-%s.npz" % (safe, digest))


def load_stats(path, key, max_items=None):
    """The cached stats at ``path`` for ``key``, or None when absent, unreadable or for another key."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        if str(arrays.pop("key")) != key:
            return None
        return FeatureStats.from_arrays(arrays, max_items=max_items)
    except Exception:  # any damage (truncation, bad zip, wrong arrays) means: recompute
        return None


def save_stats(path, key, stats):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path, "wb") as f:
        np.savez(f, key=np.array(key), **stats.to_arrays())
    return path
