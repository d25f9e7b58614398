"""Metric formulas against closed forms and direct computations (no detectors involved)."""

import itertools

import numpy as np
import pytest
import torch

from metrics.anomaly import auroc, average_ranks
from metrics.frechet import frechet_distance
from metrics.inception_score import inception_score
from metrics.kid import kid_from_features, polynomial_mmd_unbiased
from metrics.precision_recall import kth_neighbour_radii, precision_recall


def test_fid_of_identical_statistics_is_zero():
    rng = np.random.RandomState(0)
    x = rng.randn(500, 16)
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_fid_of_two_gaussians_matches_closed_form():
    # Diagonal covariances: FID = |m1 - m2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2)).
    rng = np.random.RandomState(1)
    m1, m2 = rng.randn(8), rng.randn(8)
    s1, s2 = rng.uniform(0.5, 2, 8), rng.uniform(0.5, 2, 8)
    expected = np.sum((m1 - m2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(expected, rel=1e-8)
    # A full covariance, rotated: FID is invariant under a shared rotation of both Gaussians.
    q, _ = np.linalg.qr(rng.randn(8, 8))
    rotated = frechet_distance(q @ m1, q @ np.diag(s1) @ q.T, q @ m2, q @ np.diag(s2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-6)


def test_fid_rejects_mismatched_widths():
    with pytest.raises(ValueError, match="equal width"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def _mmd_direct(x, y):
    """Unbiased MMD^2 by explicit double loops over pairs."""
    m, d = x.shape
    k = lambda a, b: (float(np.dot(a, b)) / d + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_direct_double_loop():
    rng = np.random.RandomState(2)
    x, y = rng.randn(7, 5), rng.randn(7, 5) + 0.7
    assert polynomial_mmd_unbiased(x, y) == pytest.approx(_mmd_direct(x, y), rel=1e-10)
    # With subsets as large as the sets, every subset is a permutation: the mean is the same value.
    assert kid_from_features(x, y, num_subsets=3, max_subset_size=100) == pytest.approx(_mmd_direct(x, y), rel=1e-10)


def test_kid_is_near_zero_for_same_distribution_and_positive_for_shifted():
    rng = np.random.RandomState(3)
    a, b = rng.randn(300, 4), rng.randn(300, 4)
    same = kid_from_features(a, b, num_subsets=10, max_subset_size=100)
    shifted = kid_from_features(a + 2.0, b, num_subsets=10, max_subset_size=100)
    assert abs(same) < 0.05 < shifted


def test_kth_neighbour_radii_exclude_the_point_itself():
    pts = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    # distances from 0: 1, 3, 6 -> 1st neighbour 1, 2nd 3
    assert kth_neighbour_radii(pts, 1).tolist() == [1.0, 1.0, 2.0, 3.0]
    assert kth_neighbour_radii(pts, 2, row_batch_size=3, col_batch_size=2).tolist() == [3.0, 2.0, 3.0, 5.0]


def test_precision_recall_on_constructed_sets():
    # Real points on a line 0..9 (k=1 radius 1 each); generated: 3 inside the real balls, 1 far away.
    real = torch.arange(10, dtype=torch.float32)[:, None]
    gen = torch.tensor([[0.5], [4.0], [9.9], [50.0]])
    p, r = precision_recall(real, gen, k=1, row_batch_size=3, col_batch_size=4)
    assert p == pytest.approx(3 / 4)
    # Generated balls (k=1): 0.5 -> 3.5, 4.0 -> 3.5, 9.9 -> 5.9, 50 -> 40.1; 50's ball reaches 9.9..90.1
    # so reals within: |x - 0.5| <= 3.5 -> 0..4; |x - 4| <= 3.5 -> 1..7; |x - 9.9| <= 5.9 -> 4..9: all 10.
    assert r == pytest.approx(1.0)
    # Identical sets cover each other fully.
    assert precision_recall(real, real, k=3) == (1.0, 1.0)


def test_precision_recall_of_disjoint_clusters_is_zero():
    real = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    p, r = precision_recall(real, real + 100.0, k=3)
    assert p == 0.0 and r == 0.0


def test_inception_score_of_uniform_and_one_hot_predictions():
    classes, n = 10, 200
    uniform = np.full([n, classes], 1.0 / classes)
    assert inception_score(uniform, num_splits=10) == pytest.approx((1.0, 0.0), abs=1e-9)
    one_hot = np.eye(classes)[np.arange(n) % classes]  # every split holds every class equally
    mean, std = inception_score(one_hot, num_splits=10)
    assert mean == pytest.approx(classes) and std == pytest.approx(0.0, abs=1e-9)


def test_average_ranks_handle_ties():
    assert average_ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]


def _auroc_pairwise(pos, neg):
    wins = [1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg)]
    return sum(wins) / len(wins)


def test_auroc_matches_pairwise_count_with_ties():
    rng = np.random.RandomState(4)
    pos = rng.randint(0, 6, size=37).astype(float)  # many ties, within and across classes
    neg = rng.randint(0, 5, size=23).astype(float)
    assert auroc(pos, neg) == pytest.approx(_auroc_pairwise(pos, neg), abs=1e-12)
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert auroc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0]) == 0.5


def test_auroc_rejects_empty_or_non_finite_scores():
    with pytest.raises(ValueError, match="at least one"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        auroc([np.nan], [1.0])
