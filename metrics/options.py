"""What a metric function gets: the networks, the real data, the device and where files live.

``MetricOptions.real_stats`` / ``gen_stats`` are the two feature passes every detector metric
makes; real-data stats are cached on disk (see ``metrics.stats_cache``).
"""

import copy
import hashlib
import importlib
import inspect
import os

import numpy as np
import torch

from metrics import detectors as detectors_mod
from metrics import fdl0
from metrics import stats_cache
from metrics.features import FeatureStats, dataset_features, generator_features
from metrics.progress import ProgressMonitor


def construct_class_by_name(class_name, **kwargs):
    """``a.b.C(**kwargs)`` from the dotted name in ``class_name``."""
    module_name, _, attr = class_name.rpartition(".")
    if not module_name:
        raise ValueError("class_name %r is not a dotted path like 'training.dataset.ImageFolderDataset'" % class_name)
    return getattr(importlib.import_module(module_name), attr)(**kwargs)


def dataset_fingerprint(dataset):
    """Identity of a dataset's content: class, name, size, shape and a hash of a few items."""
    n = len(dataset)
    h = hashlib.md5()
    for i in sorted({0, n // 2, n - 1} if n else set()):
        image, label = dataset[i]
        h.update(np.ascontiguousarray(np.asarray(image)).tobytes())
        h.update(np.ascontiguousarray(np.asarray(label, dtype=np.float64)).tobytes())
    return dict(cls=type(dataset).__module__ + "." + type(dataset).__qualname__,
                name=str(getattr(dataset, "name", "dataset")), len=n,
                shape=list(getattr(dataset, "image_shape", np.asarray(dataset[0][0]).shape if n else [])),
                items_md5=h.hexdigest())


def file_identity(path):
    """Name, size and sha256 of a file (hashed once per path and mtime)."""
    return "%s:%d:%s" % (os.path.basename(path), os.path.getsize(path), detectors_mod.file_sha256(path))


def _all_ranks_agree(flag, device):
    """True when ``flag`` holds on every rank (all ranks must take the same branch)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _accepted_updates(class_name, updates):
    """The ``updates`` the dataset class accepts (a class without ``max_size`` simply keeps all)."""
    try:
        module_name, _, attr = class_name.rpartition(".")
        params = inspect.signature(getattr(importlib.import_module(module_name), attr)).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return dict(updates)
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return dict(updates)
    return {k: v for k, v in updates.items() if k in params}


class MetricOptions:
    """Everything a metric function needs.

    Args:
        G: generator (``G(z, c) -> [-1, 1] NCHW``, attributes ``z_dim``, ``c_dim``); copied, eval mode.
        dataset: a stylegan2-ada Dataset object, or its kwargs dict (with ``class_name``).
        device: torch device. D: discriminator (anomaly metrics only).
        overrides: sample counts and other options that replace a metric's defaults
            (``num_gen``, ``max_real``, ``num_subsets``, ``max_subset_size``, ``batch_size``...).
        cache_dir: folder of the dataset-stats cache; False disables the cache.
    """

    def __init__(self, G=None, dataset=None, device="cpu", D=None, rank=0, num_gpus=1, nda_spec=None,
                 detectors_dir=None, cache_dir=None, progress=None, seed=0, G_kwargs=None, overrides=None,
                 extra=None):
        if not 0 <= rank < num_gpus:
            raise ValueError("rank %d is outside 0..%d" % (rank, num_gpus - 1))
        self.device = torch.device(device)
        self.G = copy.deepcopy(G).eval().requires_grad_(False).to(self.device) if G is not None else None
        self.D = copy.deepcopy(D).eval().requires_grad_(False).to(self.device) if D is not None else None
        self.dataset_kwargs = dict(dataset) if isinstance(dataset, dict) else None
        self._dataset = None if isinstance(dataset, dict) else dataset
        self.rank, self.num_gpus = rank, num_gpus
        self.nda_spec = nda_spec
        self.detectors_dir = detectors_dir
        self.cache_dir = stats_cache.default_cache_dir() if cache_dir is None else cache_dir
        self.progress = progress if progress is not None else ProgressMonitor()
        self.seed = seed
        self.G_kwargs = dict(G_kwargs or {})
        self.overrides = dict(overrides or {})
        self.extra = dict(extra or {})  # e.g. the snapshot's training options
        # What the numbers were measured with (detector files, held-out images): goes into the result.
        self.provenance = {}

    def option(self, name, default):
        return self.overrides.get(name, default)

    def dataset(self, **kwarg_updates):
        """The real dataset; with kwargs, built with ``kwarg_updates`` (e.g. ``xflip=False``)."""
        if self.dataset_kwargs is None:
            if self._dataset is None:
                raise ValueError("this metric needs real data: pass a dataset or its kwargs")
            return self._dataset
        kwargs = dict(self.dataset_kwargs, **_accepted_updates(self.dataset_kwargs.get("class_name", ""), kwarg_updates))
        key = repr(sorted(kwargs.items()))
        if getattr(self, "_built_key", None) != key:
            self._built, self._built_key = construct_class_by_name(**kwargs), key
        return self._built

    def detector_path(self, name):
        """The checked file of detector ``name``; its name and sha256 go into the result."""
        if name == fdl0.DETECTOR_NAME:  # packaged weights, not a TorchScript download
            path = fdl0.find_weights(self.detectors_dir)
        else:
            path = detectors_mod.find_detector_file(name, detectors_dir=self.detectors_dir)
        self.provenance.setdefault("detectors", {})[name] = detectors_mod.detector_identity(path)
        return path

    def detector(self, name):
        self.detector_path(name)
        if name == fdl0.DETECTOR_NAME:
            return fdl0.load_detector(self.device, detectors_dir=self.detectors_dir)
        return detectors_mod.load_detector(name, device=self.device, detectors_dir=self.detectors_dir)

    def _detector_file_and_tag(self, name):
        """The detector's file (its identity goes into the stats-cache key) and its short name."""
        if name == fdl0.DETECTOR_NAME:
            return self.detector_path(name), fdl0.DETECTOR_NAME
        return self.detector_path(name), detectors_mod.detector_tag(detectors_mod.get_spec(name))

    def real_stats(self, detector_name, detector_kwargs, max_items=None, rel_lo=0.0, rel_hi=0.0,
                   dataset_updates=None, **stats_kwargs):
        """Features of up to ``max_items`` dataset items (None: all), from the cache when possible."""
        dataset = self.dataset(**(dataset_updates or {}))
        num_items = len(dataset) if max_items is None else min(len(dataset), max_items)
        if num_items == 0:
            raise ValueError("the dataset is empty")
        path = key = None
        if self.cache_dir is not False:
            det_path, det_tag = self._detector_file_and_tag(detector_name)
            key = stats_cache.make_key(dataset_kwargs=self.dataset_kwargs and dict(self.dataset_kwargs, **(dataset_updates or {})),
                                       dataset=dataset_fingerprint(dataset), detector=file_identity(det_path),
                                       detector_kwargs=detector_kwargs, num_items=num_items, stats=stats_kwargs)
            path = stats_cache.cache_path(self.cache_dir, key, getattr(dataset, "name", "dataset"), det_tag)
            cached = stats_cache.load_stats(path, key, max_items=num_items)
            if _all_ranks_agree(cached is not None, self.device):
                return cached
        stats = FeatureStats(max_items=num_items, **stats_kwargs)
        progress = self.progress.sub(tag="dataset features", num_items=num_items, rel_lo=rel_lo, rel_hi=rel_hi)
        dataset_features(dataset, self.detector(detector_name), detector_kwargs, self.device, stats,
                         batch_size=self.option("batch_size", 64), progress=progress)
        if path is not None and self.rank == 0:
            stats_cache.save_stats(path, key, stats)
        return stats

    def gen_stats(self, detector_name, detector_kwargs, num_gen, rel_lo=0.0, rel_hi=1.0, **stats_kwargs):
        """Features of ``num_gen`` images from G (labels drawn from the dataset)."""
        if self.G is None:
            raise ValueError("this metric needs a generator")
        stats = FeatureStats(max_items=num_gen, **stats_kwargs)
        progress = self.progress.sub(tag="generator features", num_items=num_gen, rel_lo=rel_lo, rel_hi=rel_hi)
        dataset = self.dataset() if getattr(self.G, "c_dim", 0) else None
        generator_features(self.G, dataset, self.detector(detector_name), detector_kwargs, self.device,
                           stats, seed=self.seed, batch_size=self.option("batch_size", 64),
                           G_kwargs=self.G_kwargs, progress=progress)
        return stats
