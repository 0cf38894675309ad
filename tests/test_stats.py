"""Standard errors and paired tests (robustbench_lfm/stats.py) against references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from robustbench_lfm.stats import binomial_se, bootstrap_se, mcnemar, paired_test, sign_flip, two_proportion_p


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
