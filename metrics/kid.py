"""Kernel Inception Distance (Binkowski et al., 2018): unbiased MMD^2 with the cubic polynomial
kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets."""

import numpy as np


def polynomial_mmd_unbiased(x, y):
    """Unbiased MMD^2 estimate between equal-size sets ``x`` and ``y`` ([m, d] each)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, d = x.shape
    if y.shape != (m, d) or m < 2:
        raise ValueError("KID subsets must have equal shapes and at least 2 rows: %s vs %s" % (x.shape, y.shape))
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kid_from_features(gen, real, num_subsets=100, max_subset_size=1000, seed=0):
    """Mean unbiased MMD^2 over ``num_subsets`` random subsets of size min(n_gen, n_real, max)."""
    m = min(len(gen), len(real), max_subset_size)
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        g = gen[rng.choice(len(gen), m, replace=False)]
        r = real[rng.choice(len(real), m, replace=False)]
        total += polynomial_mmd_unbiased(g, r)
    return total / num_subsets


def compute_kid(opts, max_real, num_gen, num_subsets, max_subset_size):
    kwargs = dict(return_features=True)
    real = opts.real_stats("inception", kwargs, max_items=max_real, capture_all=True,
                           dataset_updates=opts.extra.get("dataset_updates")).get_all()
    gen = opts.gen_stats("inception", kwargs, num_gen, capture_all=True).get_all()
    if opts.rank != 0:
        return float("nan")
    return kid_from_features(gen, real, num_subsets, max_subset_size, seed=opts.seed)
