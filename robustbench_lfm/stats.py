"""Uncertainty of a cell and tests between two models, from per-query outcomes (queries.csv).

* Standard error of a cell: proportions (Rank-k, accuracy) by the binomial formula
  sqrt(p (1 - p) / n) over the n scored queries or test images; means of per-query scores (mAP)
  by a bootstrap over queries (resample the scored queries with replacement, `N_BOOT` times, the
  SE is the std of the resampled means).
* Paired comparison of two models with two or more training seeds: a paired t-test over seeds
  (`seed_t_test`) of the per-seed differences of the means over queries. The unit of
  replication is the training seed: queries within a seed share one trained network, so pooling
  (seed, query) pairs as if independent treats seed-to-seed spread as signal: on two identical
  methods with 3 seeds, 500 queries and 3 points of seed spread, pooled McNemar rejects in 21%
  of 2000 simulated trials at alpha 0.05, this test in 4% (tests/test_stats.py simulates it).
  The t-test is exact when the per-seed differences are normal, which a mean over hundreds of
  queries is close to.
* With one seed there is nothing to replicate over, and the comparison is of two *checkpoints*:
  for 0/1 outcomes (Rank-1 hits, correct classes) McNemar's exact test on the discordant pairs;
  for AP a sign-flip permutation test of the mean paired difference (`N_PERM` random sign
  patterns plus the observed one). Both two-sided. Reports label it so.
* Across seeds, reports show mean +- std of the per-seed values, and mark a column's best only
  when it beats the runner-up by `seed_t_test` at p < 0.05 after Holm's correction over the
  table's columns (`holm`); a one-seed table marks none.

Every random draw comes from a generator seeded with `seed`, so a report is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
N_PERM = 10000


def binomial_se(p: float, n: int) -> float:
    """Standard error of a proportion p measured on n items."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else math.nan


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95% intervals


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval (Wilson, JASA 1927) of a proportion p measured on n items: unlike
    p ± z·SE it stays inside [0, 1] and keeps its coverage near 0 and 1 (Brown, Cai & DasGupta 2001),
    where attacked Rank-1 lives. (nan, nan) for n = 0."""
    if n <= 0 or not math.isfinite(p):
        return math.nan, math.nan
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z2n / (4 * n)) / (1 + z2n)
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))  # at p = 0 or 1 rounding may not hold p


def bootstrap_se(values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> float:
    """Standard error of the mean of `values` by resampling them with replacement."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    return float(values[idx].mean(axis=1).std(ddof=1))


@dataclass(frozen=True)
class PairedTest:
    """Outcome of a paired comparison of model A against model B on the same queries.

    Attributes:
        diff: mean of A minus B (a fraction: 0.05 = 5 points).
        p_value: two-sided p-value of "no difference".
        n: number of pairs.
        test: "mcnemar" or "sign-flip".
    """

    diff: float
    p_value: float
    n: int
    test: str


def mcnemar(a: np.ndarray, b: np.ndarray) -> PairedTest:
    """McNemar's exact test on paired 0/1 outcomes: the discordant pairs under H0 are Binomial(m, 1/2)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    m = only_a + only_b
    k = min(only_a, only_b)
    p = min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2**m) if m else 1.0
    return PairedTest(float(a.mean() - b.mean()), p, len(a), "mcnemar")


def sign_flip(a: np.ndarray, b: np.ndarray, n_perm: int = N_PERM, seed: int = 0) -> PairedTest:
    """Sign-flip permutation test of the mean paired difference (exchangeable under H0)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_perm, len(d)))
    extreme = int((np.abs((signs * d).mean(axis=1)) >= observed - 1e-12).sum())
    return PairedTest(float(d.mean()), (extreme + 1) / (n_perm + 1), len(d), "sign-flip")


def paired_test(a: np.ndarray, b: np.ndarray, binary: bool, seed: int = 0) -> PairedTest:
    """McNemar for 0/1 outcomes, sign-flip for continuous ones (AP)."""
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"a paired test needs two equal, non-empty outcome lists; got {len(a)} and {len(b)}")
    return mcnemar(a, b) if binary else sign_flip(a, b, seed=seed)


def seed_t_test(a: np.ndarray, b: np.ndarray) -> PairedTest:
    """Two-sided paired t-test over seeds of per-seed means `a` and `b` (same seeds, same order).

    df = seeds - 1. Differences with no spread cannot be tested: p = 1 when they are all zero,
    NaN (not tested) otherwise; never 0, which would claim certainty from two equal numbers.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) < 2:
        raise ValueError(f"a paired test over seeds needs at least two seeds; got {len(d)}")
    sd = d.std(ddof=1)
    if sd == 0:
        p = 1.0 if d.mean() == 0 else math.nan
    else:
        t = d.mean() / (sd / math.sqrt(len(d)))
        from scipy import stats as scipy_stats  # here: scipy.stats costs half a second to import

        p = float(2 * scipy_stats.t.sf(abs(t), df=len(d) - 1))
    return PairedTest(float(d.mean()), p, len(d), "paired-t over seeds")


POWER = 0.8  # the power at which reports state the smallest detectable difference
ALPHA = 0.05


def t_test_power(difference: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test over `n` seeds (df = n - 1) at level `alpha` against a
    true mean difference `difference` when the per-seed differences spread with standard deviation
    `sd`: P(|T| > t_crit) with T noncentral t, noncentrality difference / (sd / sqrt(n))."""
    if n < 2 or not sd > 0:
        return math.nan
    from scipy import stats as scipy_stats

    crit = float(scipy_stats.t.ppf(1 - alpha / 2, n - 1))
    nc = abs(difference) / (sd / math.sqrt(n))
    upper = float(scipy_stats.nct.sf(crit, n - 1, nc))
    lower = float(scipy_stats.nct.cdf(-crit, n - 1, nc))  # NaN where scipy underflows: a negligible tail
    return min(1.0, upper + (0.0 if math.isnan(lower) else lower))


def detectable_difference(sd: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true mean difference the paired t-test over `n` seeds detects with `power`
    when the per-seed differences spread with `sd` (same unit as sd); NaN below two seeds or with
    no spread to scale it."""
    if n < 2 or not sd > 0:
        return math.nan
    high = sd
    while t_test_power(high, sd, n, alpha) < power:
        high *= 2
    from scipy.optimize import brentq

    return float(brentq(lambda d: t_test_power(d, sd, n, alpha) - power, 0.0, high, xtol=1e-10 * sd))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (Holm 1979), in the input's order: the i-th smallest of m
    tested p is multiplied by m - i + 1, made monotone, capped at 1. NaN (not tested) stays NaN and
    does not count in m."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        out[i] = running
    return out


def two_proportion_p(p1: float, n1: int, p2: float, n2: int) -> float:
    """One-sided p-value that proportion 2 is below proportion 1 (pooled z-test), for tables
    that hold only aggregates (a baseline CSV)."""
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n1 + 1 / n2))
    return 0.5 * math.erfc((p1 - p2) / se / math.sqrt(2))
