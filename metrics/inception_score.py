"""Inception Score (Salimans et al., 2016): ``exp(E_x KL(p(y|x) || p(y)))`` per split."""

import numpy as np


def inception_score(probs, num_splits=10):
    """(mean, std) of the score over ``num_splits`` consecutive splits of ``probs`` ([N, classes])."""
    probs = np.asarray(probs, np.float64)
    n = probs.shape[0]
    if n < num_splits:
        raise ValueError("IS needs at least one sample per split: %d samples, %d splits" % (n, num_splits))
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits:(i + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        # 0 * log 0 counts as 0: one-hot predictions are legal input
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def compute_is(opts, num_gen, num_splits):
    # Class probabilities without the softmax layer's bias, as the original TF implementation.
    probs = opts.gen_stats("inception", dict(no_output_bias=True), num_gen, capture_all=True).get_all()
    if opts.rank != 0:
        return float("nan"), float("nan")
    return inception_score(probs, num_splits)
