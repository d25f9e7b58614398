"""The study's statistics: a t-interval over seeds and a paired bootstrap against the baseline.

Both are deterministic: the bootstrap draws from a fixed seed, so a report made twice from the
same results file is the same to the byte.
"""

import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 10000
BOOTSTRAP_SEED = 20210502  # fixed: the same file gives the same intervals


def _sample(values, name):
    """``(array, mean)``; an empty sample is a caller's error."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("%s needs at least one value" % name)
    return x, float(x.mean())


def t_interval(values, confidence=CONFIDENCE):
    """``(mean, low, high)``: Student's t interval of the mean; low/high are None below 2 values."""
    x, mean = _sample(values, "t_interval")
    if x.size < 2:
        return mean, None, None
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def paired_bootstrap(differences, confidence=CONFIDENCE, samples=BOOTSTRAP_SAMPLES, seed=BOOTSTRAP_SEED):
    """``(mean, low, high)``: percentile bootstrap interval of the mean of per-seed differences
    (arm minus baseline, same seed); low/high are None below 2 differences."""
    d, mean = _sample(differences, "paired_bootstrap")
    if d.size < 2:
        return mean, None, None
    rng = np.random.Generator(np.random.PCG64(seed))
    means = d[rng.integers(0, d.size, size=(samples, d.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return mean, float(low), float(high)


def format_number(fmt, value):
    """``fmt % value`` without a sign on a value that rounds to zero (no "-0.00")."""
    text = fmt % value
    return text[1:] if text.startswith("-") and float(text) == 0 else text


# Below this many paired seeds no verdict is given: a percentile bootstrap of 2 differences is
# their range (it "excludes zero" whenever both have the same sign).
MIN_PAIRED_SEEDS = 3


def excluded_side(differences):
    """``(sign, bootstrap (mean, low, high), t (mean, low, high))``: sign is +1 or -1 when both
    intervals exclude zero on that side over at least MIN_PAIRED_SEEDS differences, else 0."""
    boot = paired_bootstrap(differences)
    t = t_interval(differences)
    sign = 0
    if len(differences) >= MIN_PAIRED_SEEDS:
        if boot[1] > 0 and t[1] > 0:
            sign = 1
        elif boot[2] < 0 and t[2] < 0:
            sign = -1
    return sign, boot, t


def verdict(arm, baseline, label, fmt, lower_is_better, differences):
    """One plain sentence on ``arm`` vs ``baseline`` from the per-seed differences: a difference
    is called distinguishable from noise only when the paired bootstrap interval and the paired
    t-interval both exclude zero, over at least MIN_PAIRED_SEEDS seeds."""
    sign, (mean, low, high), (_, tlow, thigh) = excluded_side(differences)
    n = len(differences)
    if float(fmt % mean) == 0:
        direction, amount = "about the same as", ""
    else:
        better = (mean < 0) == lower_is_better
        direction = "%s (%s) than" % ("lower" if mean < 0 else "higher", "better" if better else "worse")
        amount = format_number(fmt, abs(mean)) + " "
    head = "%s vs %s, %s: %s%s %s on average over %d paired seed%s" % (
        arm, baseline, label, amount, direction, baseline, n, "" if n == 1 else "s")
    if n < MIN_PAIRED_SEEDS:
        return head + "; too few paired seeds to tell signal from noise (a verdict needs %d)." % MIN_PAIRED_SEEDS
    ci = "95%% bootstrap CI %s to %s, paired t CI %s to %s" % tuple(format_number(fmt, v) for v in (low, high, tlow, thigh))
    if sign:
        return "%s (%s); both intervals exclude zero: distinguishable from noise." % (head, ci)
    return "%s (%s); an interval includes zero: not distinguishable from noise." % (head, ci)
