"""Metrics by name, with stylegan2-ada-pytorch's names, sample counts and result format.

``compute_metric`` is what ``train.py --metrics`` calls at snapshot time and what
``calc_metrics.py`` calls; ``report_metric`` appends the result as one JSON line to
``<run_dir>/metric-<name>.jsonl``. Sample counts can be overridden (tests, quick looks) through
``compute_metric(..., num_gen=..., max_real=..., ...)``; the result then records them under
``"overrides"``.
"""

import collections
import json
import os
import time

import torch

from metrics import anomaly, fdl0, frechet, inception_score, kid, ppl, precision_recall
from metrics import swd as swd_module  # the metric function `swd` below takes the plain name
from metrics.options import MetricOptions
from metrics.progress import format_time

MetricInfo = collections.namedtuple("MetricInfo", "fn description needs headline better")
MetricInfo.__doc__ = """A registered metric: ``fn(opts) -> results``, a one-line description, the
detectors it reads (checked before any work starts), the results key that sums it up (None: all
keys) and whether ``"lower"`` or ``"higher"`` values are better (None: neither)."""

_METRICS = {}  # name -> MetricInfo

FULL = dict(max_size=None, xflip=False)  # *_full: every image, no mirroring (the host's choice)
LEGACY = dict(max_size=None)


def register_metric(description, needs=(), headline="", better=None):
    """Register ``fn`` under its own name; ``headline=""`` means the results key equal to the name."""
    def wrap(fn):
        _METRICS[fn.__name__] = MetricInfo(fn, description, tuple(needs),
                                           fn.__name__ if headline == "" else headline, better)
        return fn
    return wrap


def list_metrics():
    return list(_METRICS)


def describe_metrics():
    return [(name, info.description) for name, info in _METRICS.items()]


def metric_needs(names):
    """The detectors the named metrics read, sorted, each once."""
    return sorted({d for name in names for d in _METRICS[name].needs})


def check_metric_needs(names, detectors_dir=None, download=True):
    """Raise DetectorUnavailableError (a ValueError whose message names the fix) when a detector
    that one of ``names`` reads is missing or unusable; run before any work starts."""
    from metrics import detectors

    for name in metric_needs(names):
        if name == fdl0.DETECTOR_NAME:
            fdl0.check_available(detectors_dir)
        else:
            detectors.load_detector(name, detectors_dir=detectors_dir, download=download)  # the file and its forward()


def summary_line(result):
    """``fdl0_10k_full 23.4 (lower is better)``: a metric's result as one plain line."""
    info = _METRICS.get(result["metric"])
    results = result.get("results", {})
    if info is None or info.headline is None or info.headline not in results:
        return "%s %s" % (result["metric"], " ".join("%s=%.4g" % kv for kv in results.items()))
    line = "%s %.4g" % (info.headline, results[info.headline])
    return line + (" (%s is better)" % info.better if info.better else "")


def is_valid_metric(name):
    return name in _METRICS


def _with_dataset(opts, updates):
    opts.extra["dataset_updates"] = dict(updates)
    return opts


def _kid(opts, max_real):
    """KID with the host's subsets (100 of up to 1000), overridable per call."""
    return kid.compute_kid(opts, max_real=opts.option("max_real", max_real), num_gen=opts.option("num_gen", 50000),
                           num_subsets=opts.option("num_subsets", 100),
                           max_subset_size=opts.option("max_subset_size", 1000))


def _pr(opts, name, max_real):
    """Precision/recall (k=3 neighbourhoods, batched distances) as ``<name>_precision/_recall``."""
    p, r = precision_recall.compute_pr(opts, max_real=opts.option("max_real", max_real),
                                       num_gen=opts.option("num_gen", 50000), nhood_size=opts.option("nhood_size", 3),
                                       row_batch_size=opts.option("row_batch_size", 10000),
                                       col_batch_size=opts.option("col_batch_size", 10000))
    return {name + "_precision": p, name + "_recall": r}


# The Frechet distances: name -> (compute function, detector, generated images, real images
# (None: all), dataset options, description). Overrides: num_gen, max_real.
FRECHET_METRICS = {
    "fid50k_full": (frechet.compute_fid, "inception", 50000, None, FULL,
                    "Frechet inception distance, 50k generated vs the full dataset"),
    "fid50k": (frechet.compute_fid, "inception", 50000, 50000, LEGACY,
               "Frechet inception distance, 50k generated vs 50k real"),
    "fid10k": (frechet.compute_fid, "inception", 10000, None, FULL,
               "Frechet inception distance, 10k generated vs the full dataset (the NDA paper's protocol)"),
    "fdl0_10k_full": (fdl0.compute_fdl0, fdl0.DETECTOR_NAME, 10000, None, FULL,
                      "Frechet distance in EfficientNet-Lite0 features (packaged weights, offline), 10k generated vs "
                      "the full dataset"),
    "fdl0_5k_full": (fdl0.compute_fdl0, fdl0.DETECTOR_NAME, 5000, None, FULL,
                     "Frechet distance in EfficientNet-Lite0 features (packaged weights, offline), 5k generated vs "
                     "the full dataset"),
}


def _register_frechet(name, compute, detector, num_gen, max_real, dataset_updates, description):
    def metric(opts):
        _with_dataset(opts, dataset_updates)
        return {name: compute(opts, max_real=opts.option("max_real", max_real), num_gen=opts.option("num_gen", num_gen))}

    metric.__name__ = name
    register_metric(description, needs=[detector], better="lower")(metric)


for _name, _settings in FRECHET_METRICS.items():
    _register_frechet(_name, *_settings)


@register_metric("Kernel inception distance, 50k generated vs the full dataset (up to 1M)", needs=["inception"],
                 better="lower")
def kid50k_full(opts):
    _with_dataset(opts, FULL)
    return dict(kid50k_full=_kid(opts, max_real=1000000))


@register_metric("Kernel inception distance, 50k generated vs 50k real", needs=["inception"], better="lower")
def kid50k(opts):
    _with_dataset(opts, LEGACY)
    return dict(kid50k=_kid(opts, max_real=50000))


@register_metric("Precision and recall (k=3, VGG16), 50k generated vs the full dataset (up to 200k)", needs=["vgg16"],
                 headline=None)
def pr50k3_full(opts):
    _with_dataset(opts, FULL)
    return _pr(opts, "pr50k3_full", max_real=200000)


@register_metric("Precision and recall (k=3, VGG16), 50k generated vs 50k real", needs=["vgg16"], headline=None)
def pr50k3(opts):
    _with_dataset(opts, LEGACY)
    return _pr(opts, "pr50k3", max_real=50000)


@register_metric("Inception score, 50k generated, 10 splits", needs=["inception"], headline="is50k_mean",
                 better="higher")
def is50k(opts):
    _with_dataset(opts, FULL)
    mean, std = inception_score.compute_is(opts, num_gen=opts.option("num_gen", 50000),
                                           num_splits=opts.option("num_splits", 10))
    return dict(is50k_mean=mean, is50k_std=std)


# The host's five path-length metrics: name -> (space, sampling, face crop, description).
PPL_METRICS = {
    "ppl_zfull": ("z", "full", True, "Perceptual path length in Z, full paths, face crop (LPIPS, 50k samples)"),
    "ppl_wfull": ("w", "full", True, "Perceptual path length in W, full paths, face crop (LPIPS, 50k samples)"),
    "ppl_zend": ("z", "end", True, "Perceptual path length in Z, path ends, face crop (LPIPS, 50k samples)"),
    "ppl_wend": ("w", "end", True, "Perceptual path length in W, path ends, face crop (LPIPS, 50k samples)"),
    "ppl2_wend": ("w", "end", False, "Perceptual path length in W, path ends, whole image (StyleGAN2's PPL; "
                                     "LPIPS, 50k samples)"),
}


def _register_ppl(name, space, sampling, crop, description):
    def metric(opts):
        """PPL with the host's settings: 50k path samples, epsilon 1e-4, 2 paths per step."""
        value = ppl.compute_ppl(opts, num_samples=opts.option("num_gen", 50000), epsilon=opts.option("epsilon", 1e-4),
                                space=space, sampling=sampling, crop=crop, batch_size=opts.option("batch_size", 2))
        return {name: value}

    metric.__name__ = name
    register_metric(description, needs=["vgg16"], better="lower")(metric)  # LPIPS


for _name, _settings in PPL_METRICS.items():
    _register_ppl(_name, *_settings)


# 2048 images: on the main job's last snapshot (3 seeds; 2 at 16384), swd_avg was 54.6 +- 1.2 (2.2%) at
# 2048 and 54.35 +- 0.01 at 16384 (the host's count), in 53 s instead of 261 s
# (tests/benchmarks/swd_stability.py, docs/results/swd_stability.txt). 7 of the 8 consecutive
# snapshot pairs of the main job differ by more (4-40%), and the snapshots' order agreed with
# fdl0's (Spearman 0.98). --num-images 16384 gives the host's precision back.
SWD_NUM_IMAGES = 2048


@register_metric("Sliced Wasserstein distance x1e3 on Laplacian-pyramid patches, %d images (no network)"
                 % SWD_NUM_IMAGES, headline="swd_avg", better="lower")
def swd(opts):
    _with_dataset(opts, FULL)
    per_level, mean = swd_module.compute_swd(opts, num_images=opts.option("num_images", SWD_NUM_IMAGES),
                                             resolution_min=opts.option("resolution_min", 16),
                                             patches_per_image=opts.option("patches_per_image", 128),
                                             dir_repeats=opts.option("dir_repeats", 4),
                                             dirs_per_repeat=opts.option("dirs_per_repeat", 128))
    results = {"swd_%d" % res: value for res, value in per_level.items()}
    results["swd_avg"] = mean
    return results


@register_metric("AUROC of D's logit: held-out reals vs each NDA negative and common corruptions",
                 headline="nda_auroc_mean", better="higher")
def nda_auroc(opts):
    return anomaly.compute_nda_auroc(opts, num_images=opts.option("num_images", 10000),
                                     corruption_names=opts.option("corruptions", None))


def unknown_metric_message(name):
    return "unknown metric %r; known metrics: %s" % (name, ", ".join(list_metrics()))


def compute_metric(name, G, dataset, device, D=None, rank=0, num_gpus=1, nda_spec=None, detectors_dir=None,
                   cache_dir=None, progress=None, seed=0, G_kwargs=None, extra=None, **overrides):
    """Compute metric ``name``; returns ``{"results": {...}, "metric", "total_time", "total_time_str",
    "num_gpus"}`` (plus ``"overrides"`` when sample counts were changed, ``"detectors"``: the name and
    sha256 of each detector file used, ``"held_out"``: the real images ``nda_auroc`` scored).

    ``dataset``: a Dataset object or its kwargs (``class_name``...); ``cache_dir=False`` disables
    the dataset-stats cache; ``overrides``: sample counts such as ``num_gen=500, max_real=500``.
    """
    if not is_valid_metric(name):
        raise ValueError(unknown_metric_message(name))
    opts = MetricOptions(G=G, dataset=dataset, device=device, D=D, rank=rank, num_gpus=num_gpus,
                         nda_spec=nda_spec, detectors_dir=detectors_dir, cache_dir=cache_dir, progress=progress,
                         seed=seed, G_kwargs=G_kwargs, overrides=overrides, extra=extra)
    start = time.time()
    results = _METRICS[name].fn(opts)
    total_time = time.time() - start
    results = {key: _broadcast(value, num_gpus, opts.device) for key, value in results.items()}
    out = dict(results=results, metric=name, total_time=total_time, total_time_str=format_time(total_time),
               num_gpus=num_gpus, **opts.provenance)
    if overrides:
        out["overrides"] = dict(overrides)
    return out


def _broadcast(value, num_gpus, device):
    """Rank 0's value on every rank (only rank 0 computes the final numbers)."""
    dist = torch.distributed
    if num_gpus > 1 and dist.is_available() and dist.is_initialized():
        t = torch.as_tensor(value, dtype=torch.float64, device=device)
        dist.broadcast(t, src=0)
        value = t.item()
    return float(value)


def report_metric(result, run_dir=None, snapshot_pkl=None):
    """Print ``result`` as one JSON line and append it to ``<run_dir>/metric-<name>.jsonl``
    (``snapshot_pkl`` stored relative to ``run_dir``). Returns the line."""
    if run_dir is not None and snapshot_pkl is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    line = json.dumps(dict(result, snapshot_pkl=snapshot_pkl, timestamp=time.time()))
    print(line)
    if run_dir is not None and os.path.isdir(run_dir):
        # One write() of a whole line in append mode: concurrent writers never interleave partial lines.
        with open(os.path.join(run_dir, "metric-%s.jsonl" % result["metric"]), "at") as f:
            f.write(line + "\n")
    return line
