"""Frechet distance between Gaussian fits of features: FID (Heusel et al., 2017) on Inception-v3
pool features, and the same distance for other feature spaces (``metrics.fdl0``)."""

import warnings

import numpy as np
import scipy.linalg
import torch


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


def frechet_distance_psd(mu1, sigma1, mu2, sigma2):
    """The same value as ``frechet_distance`` for covariance (symmetric positive semi-definite)
    matrices, without ``sqrtm``: ``tr((S1 S2)^(1/2))`` is the sum of the square roots of the
    eigenvalues of the symmetric ``S1^(1/2) S2 S1^(1/2)``, so two symmetric eigendecompositions
    (float64, torch) do it. At 1280 x 1280 this took 1.5 s where ``sqrtm`` took 20 s here.
    Eigenvalues below zero are rounding noise of a PSD matrix and count as zero."""
    mu1, mu2, sigma1, sigma2 = (torch.as_tensor(np.asarray(a, np.float64)) for a in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError("Frechet distance needs statistics of equal width: %s vs %s"
                         % (tuple(mu1.shape), tuple(mu2.shape)))
    evals, evecs = torch.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    middle = root1 @ sigma2 @ root1
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + torch.trace(sigma1) + torch.trace(sigma2) - 2 * trace_root
    return float(value)
