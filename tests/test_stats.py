"""Standard errors and paired tests (robustbench_lfm/stats.py) against references."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from robustbench_lfm.report.tables import _pair_test
from robustbench_lfm.stats import (
    binomial_se,
    bootstrap_se,
    mcnemar,
    paired_test,
    seed_t_test,
    sign_flip,
    two_proportion_p,
)


def test_bootstrap_se_matches_the_analytic_standard_error_of_a_mean():
    x = np.random.default_rng(0).normal(size=2000)
    assert bootstrap_se(x) == pytest.approx(x.std(ddof=1) / math.sqrt(len(x)), rel=0.08)


def test_bootstrap_se_of_hits_matches_the_binomial_formula():
    hits = (np.random.default_rng(1).random(800) < 0.3).astype(float)
    assert bootstrap_se(hits) == pytest.approx(binomial_se(hits.mean(), len(hits)), rel=0.08)


@pytest.mark.parametrize(("only_a", "only_b"), [(3, 12), (10, 10), (0, 7), (25, 9)])
def test_mcnemar_equals_scipys_exact_binomial_test(only_a, only_b):
    a = np.array([1] * only_a + [0] * only_b + [1] * 20 + [0] * 5)
    b = np.array([0] * only_a + [1] * only_b + [1] * 20 + [0] * 5)
    expected = sp.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert mcnemar(a, b).p_value == pytest.approx(expected, rel=1e-9)
    assert mcnemar(a, b).diff == pytest.approx((only_a - only_b) / len(a))


def test_sign_flip_finds_a_real_paired_difference_and_not_noise():
    rng = np.random.default_rng(2)
    base = rng.random(300)
    assert sign_flip(base + 0.05 + 0.02 * rng.normal(size=300), base).p_value < 0.001
    null = [sign_flip(base + 0.05 * rng.normal(size=300), base, n_perm=500, seed=s).p_value for s in range(40)]
    assert 0.2 < np.mean(null) < 0.8  # p-values under H0 are about uniform


def test_paired_test_refuses_unpaired_outcomes():
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_test(np.ones(3), np.ones(4), binary=True)


def test_two_proportion_p_is_small_only_for_a_real_fall():
    assert two_proportion_p(0.8, 500, 0.6, 500) < 1e-6
    assert two_proportion_p(0.8, 500, 0.79, 500) > 0.3
    assert two_proportion_p(0.6, 500, 0.8, 500) > 0.99  # a rise is no regression


def _identical_methods_trial(rng: np.random.Generator, seeds: int, queries: int, spread: float) -> pd.DataFrame:
    """Per-query Rank-1 hits of two runs of one method: each seed's network has its own accuracy
    (the method's 0.5 plus a seed effect of std `spread`), queries are Bernoulli draws of it."""
    rows = []
    for seed in range(seeds):
        p_a, p_b = np.clip(0.5 + spread * rng.standard_normal(2), 0.01, 0.99)
        hits_a, hits_b = rng.random(queries) < p_a, rng.random(queries) < p_b
        rows.append(pd.DataFrame({"train_seed": seed, "query": np.arange(queries), "hit_a": hits_a, "hit_b": hits_b}))
    return pd.concat(rows).assign(ap_a=lambda d: d["hit_a"] * 1.0, ap_b=lambda d: d["hit_b"] * 1.0)


def test_the_seed_level_test_keeps_its_level_on_identical_methods_and_pooling_does_not():
    """Two identical methods, 3 seeds, 500 queries, 3 points of seed spread (where pooled
    McNemar rejects about a fifth of the time): the report's test rejects near 5%."""
    rng = np.random.default_rng(0)
    trials = 600
    seed_level, pooled = [], []
    for _ in range(trials):
        both = _identical_methods_trial(rng, seeds=3, queries=500, spread=0.03)
        _, p, n, seeds, test, _ = _pair_test(both, "rank1")
        assert test == "paired-t over seeds" and n == 3 and seeds == 3
        seed_level.append(p < 0.05)
        pooled.append(mcnemar(both["hit_a"].to_numpy(), both["hit_b"].to_numpy()).p_value < 0.05)
    rate, bound = np.mean(seed_level), 3.5 * math.sqrt(0.05 * 0.95 / trials)
    assert abs(rate - 0.05) < bound, rate
    assert np.mean(pooled) > 0.15  # what pooling (seed, query) pairs did


def test_one_seed_is_labelled_a_comparison_of_two_checkpoints():
    both = _identical_methods_trial(np.random.default_rng(1), seeds=1, queries=200, spread=0.0)
    *_, seeds, test, detectable = _pair_test(both, "rank1")
    assert seeds == 1 and test == "mcnemar over queries (one seed: two checkpoints)" and np.isnan(detectable)


def test_the_seed_t_test_matches_scipy():
    a, b = np.array([0.52, 0.55, 0.49, 0.51]), np.array([0.50, 0.51, 0.50, 0.47])
    assert seed_t_test(a, b).p_value == pytest.approx(sp.ttest_rel(a, b).pvalue)
    with pytest.raises(ValueError, match="at least two seeds"):
        seed_t_test(a[:1], b[:1])


def test_sign_flip_counts_the_observed_assignment_so_p_is_never_zero():
    """Phipson & Smyth (2010): with n_perm random sign assignments, p = (b + 1) / (n_perm + 1), the
    observed assignment counted among them. A difference no random assignment reaches gives
    1 / (n_perm + 1), not 0."""
    d = np.linspace(0.1, 0.4, 40)  # every sign flipped at random: P(as extreme) = 2 / 2**40
    got = sign_flip(d, np.zeros_like(d), n_perm=999, seed=0)
    assert got.p_value == pytest.approx(1 / 1000)


def test_sign_flip_p_estimates_the_exact_enumeration():
    """Against the exact p of all 2**10 sign assignments (an independent count): within Monte-Carlo
    error, and never below the exact p by more than that error (the +1 keeps it conservative)."""
    import itertools

    d = np.array([0.3, -0.1, 0.25, 0.05, 0.2, -0.15, 0.1, 0.3, -0.05, 0.12])
    observed = abs(d.mean())
    exact = np.mean([abs((np.array(s) * d).mean()) >= observed - 1e-12 for s in itertools.product((-1, 1), repeat=10)])
    got = sign_flip(d, np.zeros_like(d), n_perm=20000, seed=1).p_value
    assert abs(got - exact) <= 4 * np.sqrt(exact * (1 - exact) / 20000) + 1 / 20001


def test_the_seed_t_test_never_claims_certainty_from_no_spread():
    """Two seeds whose differences are equal (each one query apart) have no spread to test against:
    p is NaN (not tested), never 0; equal results give p = 1."""
    assert np.isnan(seed_t_test(np.array([0.50, 0.60]), np.array([0.49, 0.59])).p_value)
    assert seed_t_test(np.array([0.5, 0.6]), np.array([0.5, 0.6])).p_value == 1.0


@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_the_stated_detectable_difference_is_detected_with_80_percent_power(seeds):
    """Simulation: per-seed differences drawn around the stated detectable difference, with the
    stated spread, are found significant by the seed t-test in 80% of trials (within 2.5 points)."""
    from robustbench_lfm.stats import detectable_difference, t_test_power

    sd = 0.02
    difference = detectable_difference(sd, seeds)
    assert t_test_power(difference, sd, seeds) == pytest.approx(0.8, abs=1e-6)
    rng = np.random.default_rng(seeds)
    trials = 4000
    hits = sum(seed_t_test(rng.normal(difference, sd, seeds), np.zeros(seeds)).p_value < 0.05 for _ in range(trials))
    assert abs(hits / trials - 0.8) < 0.025
    null = sum(seed_t_test(rng.normal(0, sd, seeds), np.zeros(seeds)).p_value < 0.05 for _ in range(trials))
    assert abs(null / trials - 0.05) < 0.015  # and the level holds


@pytest.mark.parametrize(("hits", "n"), [(0, 277), (1, 277), (22, 277), (139, 277), (276, 277), (277, 277), (3, 7)])
def test_the_wilson_interval_matches_scipy(hits, n):
    from robustbench_lfm.stats import wilson_interval

    low, high = wilson_interval(hits / n, n)
    expected = sp.binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert low == pytest.approx(expected.low, abs=1e-9) and high == pytest.approx(expected.high, abs=1e-9)
    assert 0.0 <= low <= hits / n <= high <= 1.0
    assert all(math.isnan(v) for v in wilson_interval(0.5, 0))
    for n in range(1, 400):  # the ends hold their p exactly, whatever the rounding
        assert wilson_interval(0.0, n)[0] == 0.0 and wilson_interval(1.0, n)[1] == 1.0


def test_figures_draw_wilson_intervals_for_one_seed_and_the_seed_spread_for_several():
    """One seed: the bar spans the Wilson interval of the cell (asymmetric near 0); several: ± the
    sample std over seeds; a metric that is not a proportion gets no bar from one seed."""
    from robustbench_lfm.stats import wilson_interval
    from robustbench_lfm.summary import error_bar_note, error_bars

    one = pd.DataFrame({"row": ["plain", "plain"], "metric": ["rank1", "mAP"], "value": [0.05, 0.10],
                        "n_eval": [277, 277], "train_seed": [0, 0]})  # fmt: skip
    bars = error_bars(one, ["row", "metric"]).set_index("metric")
    low, high = wilson_interval(0.05, 277)
    assert bars.loc["rank1", "low"] == pytest.approx(0.05 - low) and bars.loc["rank1", "high"] == pytest.approx(
        high - 0.05
    )
    assert bars.loc["rank1", "high"] > bars.loc["rank1", "low"]  # near 0 the interval leans up
    assert bars.loc["mAP", "low"] == 0 and bars.loc["mAP", "high"] == 0
    assert "95% Wilson interval" in error_bar_note(one)
    seeds = pd.DataFrame({"row": ["plain"] * 3, "metric": ["rank1"] * 3, "value": [0.1, 0.2, 0.3],
                          "n_eval": [277] * 3, "train_seed": [0, 1, 2]})  # fmt: skip
    (spread,) = error_bars(seeds, ["row"]).itertuples()
    assert spread.low == pytest.approx(0.1) and spread.high == pytest.approx(0.1)
    assert "std over 3 seeds" in error_bar_note(seeds)
