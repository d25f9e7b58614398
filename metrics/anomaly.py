"""Anomaly detection with the discriminator (the NDA paper's protocol): the raw D logit of an
image in [-1, 1] is its "realness" score; held-out real images (``metrics.held_out``: never
trained on) are the in-distribution set, and each NDA negative type and each common corruption of
those images is an out-of-distribution set. Reported: AUROC per set (in-distribution = positive
class) and the mean over sets, and which real images were used (``held_out`` in the result).
"""

import re

import numpy as np
import torch

from metrics.corruptions import CORRUPTIONS, make_corruption
from metrics.held_out import held_out_reals

DEFAULT_NDA_SPEC = "jigsaw,stitch,mixup,cutout,cutmix,rotate,mosaic"


def average_ranks(values):
    """1-based ranks of ``values``, tied values sharing the mean of their ranks."""
    values = np.asarray(values, np.float64).ravel()
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # last 1-based rank of each distinct value
    return ((ends - counts + 1 + ends) / 2.0)[inverse.ravel()]


def auroc(positive_scores, negative_scores):
    """Area under the ROC curve = P(pos > neg) + P(pos == neg) / 2, by the Mann-Whitney rank sum."""
    pos = np.asarray(positive_scores, np.float64).ravel()
    neg = np.asarray(negative_scores, np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError("AUROC needs at least one score in each class (got %d and %d)" % (pos.size, neg.size))
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
        raise ValueError("AUROC scores must be finite")
    ranks = average_ranks(np.concatenate([pos, neg]))
    rank_sum = ranks[:pos.size].sum()
    return float((rank_sum - pos.size * (pos.size + 1) / 2.0) / (pos.size * neg.size))


def minibatch_group_size(D):
    """Largest minibatch-stddev group size in D (1 when it has none): batches must be multiples."""
    sizes = [int(m.group_size) for m in D.modules() if isinstance(getattr(m, "group_size", None), int)]
    return max(sizes) if sizes else 1


@torch.no_grad()
def score_images(D, images, labels, batch_size):
    """Raw D logits of float images in [-1, 1], scored in batches of ``batch_size``."""
    scores = []
    for start in range(0, images.shape[0], batch_size):
        logits = D(images[start:start + batch_size], labels[start:start + batch_size])
        scores.append(logits.reshape(logits.shape[0], -1)[:, 0].float().cpu())
    return torch.cat(scores).numpy()


def set_key(name, params):
    """Result-key fragment of a negative: ``jigsaw``, ``jigsaw_k_4``."""
    text = name + "".join("_%s_%s" % (k, params[k]) for k in sorted(params))
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def negatives_from_spec(spec):
    """[(key, negative object)] for an ``--nda`` spec, through nda_stylegan's public API."""
    import nda_stylegan

    out, seen = [], set()
    for name, params, _weight in nda_stylegan.parse_spec(spec):
        key = set_key(name, params)
        if key not in seen:
            seen.add(key)
            out.append((key, nda_stylegan.make_negative(name, **params)))
    return out


def _apply_negative(neg, images, generator):
    """Negatives of ``images`` and which of them differ from their source."""
    params = neg.sample(images, generator=generator)
    if hasattr(neg, "apply_masked"):
        out, valid = neg.apply_masked(images, params)
        return out, torch.as_tensor(valid, dtype=torch.bool, device=out.device).reshape(-1)
    out = neg.apply(images, params)
    return out, torch.ones([out.shape[0]], dtype=torch.bool, device=out.device)


def load_real(dataset, num_images, device):
    """The first ``num_images`` items as float images in [-1, 1] and float labels."""
    images, labels = [], []
    for i in range(num_images):
        image, label = dataset[i]
        images.append(torch.as_tensor(np.asarray(image)))
        labels.append(torch.as_tensor(np.asarray(label, dtype=np.float32)).reshape(-1))
    x = torch.stack(images).to(device).float() / 127.5 - 1
    return x, torch.stack(labels).to(device)


def anomaly_aurocs(D, images, labels, negatives, corruptions, seed=0, batch_size=64, progress=None):
    """AUROC of real ``images`` against each negative and corruption of them.

    Negatives that equal their source (``valid`` False) are left out of their set. Each set is
    scored in its own batches, never mixed with real images (D's minibatch-stddev sees one kind).
    """
    group = minibatch_group_size(D)
    batch_size = max(batch_size // group, 1) * group
    n = images.shape[0] // group * group
    if n == 0:
        raise ValueError("anomaly detection needs at least %d held-out images (D's minibatch group)" % group)
    images, labels = images[:n], labels[:n]
    generator = torch.Generator().manual_seed(int(seed))
    real_scores = score_images(D, images, labels, batch_size)
    sets = [("neg_" + key, neg) for key, neg in negatives] + [("corrupt_" + key, c) for key, c in corruptions]
    results = {}
    for i, (key, transform) in enumerate(sets):
        out, valid = _apply_negative(transform, images, generator)
        out, out_labels = out[valid], labels[valid]
        m = out.shape[0] // group * group  # whole groups only, as in training
        if m == 0:
            raise ValueError("the %s set has fewer than %d images different from their source" % (key, group))
        results[key] = auroc(real_scores, score_images(D, out[:m], out_labels[:m], batch_size))
        if progress is not None:
            progress.update(i + 1)
    return results


def compute_nda_auroc(opts, num_images, corruption_names=None):
    if opts.D is None:
        raise ValueError("nda_auroc needs the discriminator D: give a snapshot that contains D")
    spec = opts.nda_spec or DEFAULT_NDA_SPEC
    if opts.dataset_kwargs is None:  # a Dataset object: whoever passed it chose the images
        dataset, source = opts.dataset(), "the dataset passed in"
    else:
        dataset, source = held_out_reals(opts.dataset_kwargs, opts.extra.get("training_set_kwargs"), num_images)
    num_images = min(num_images, len(dataset))
    opts.provenance["held_out"] = dict(source=source, images=num_images)
    images, labels = load_real(dataset, num_images, opts.device)
    negatives = negatives_from_spec(spec)
    names = list(CORRUPTIONS) if corruption_names is None else list(corruption_names)
    corruptions = [(name, make_corruption(name)) for name in names]
    progress = opts.progress.sub(tag="nda_auroc sets", num_items=len(negatives) + len(corruptions), flush_interval=1)
    results = anomaly_aurocs(opts.D, images, labels, negatives, corruptions, seed=opts.seed,
                             batch_size=opts.option("batch_size", 64), progress=progress)
    out = {"nda_auroc_" + key: value for key, value in results.items()}
    out["nda_auroc_mean"] = float(np.mean(list(results.values())))
    return out
