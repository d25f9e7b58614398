"""Frechet Inception Distance (Heusel et al., 2017) on Inception-v3 pool features."""

import warnings

import numpy as np
import scipy.linalg


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` with ``scipy.linalg.sqrtm``.

    The small imaginary part sqrtm returns for near-singular products is numerical noise and is
    dropped, as in the reference implementations.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("FID needs statistics of equal width: %s vs %s" % (mu1.shape, mu2.shape))
    with warnings.catch_warnings():  # singular-matrix warnings: the result is still what FID uses
        warnings.simplefilter("ignore")
        root = scipy.linalg.sqrtm(sigma1 @ sigma2)  # ('disp' is deprecated in new SciPy, so left out)
    if isinstance(root, tuple):
        root = root[0]
    return float(np.real(np.square(mu1 - mu2).sum() + np.trace(sigma1 + sigma2 - 2 * root)))


def compute_fid(opts, max_real, num_gen):
    """FID between ``max_real`` dataset images (None: all) and ``num_gen`` generated images."""
    kwargs = dict(return_features=True)  # 2048-d pool features, before the logits
    mu_real, sigma_real = opts.real_stats("inception", kwargs, max_items=max_real, capture_mean_cov=True,
                                          dataset_updates=opts.extra.get("dataset_updates")).get_mean_cov()
    mu_gen, sigma_gen = opts.gen_stats("inception", kwargs, num_gen, capture_mean_cov=True).get_mean_cov()
    if opts.rank != 0:
        return float("nan")
    return frechet_distance(mu_gen, sigma_gen, mu_real, sigma_real)
