"""Statistics against hand-computed and scipy values."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from evalkit.analysis.stats import (
    holm,
    mcnemar_exact,
    min_detectable_difference,
    paired_bootstrap,
    wilson,
)


@pytest.mark.parametrize(("k", "n"), [(8, 10), (0, 20), (20, 20), (37, 120), (1, 1)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    expected = scipy_stats.binomtest(k, n).proportion_ci(method="wilson")
    assert wilson(k, n) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_wilson_by_hand_and_empty() -> None:
    low, high = wilson(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert all(math.isnan(x) for x in wilson(0, 0))


@pytest.mark.parametrize(("b", "c"), [(0, 0), (0, 5), (3, 9), (10, 10), (4800, 5200), (1, 40)])
def test_exact_mcnemar_matches_scipy_binomial_test(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else scipy_stats.binomtest(min(b, c), b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_mcnemar_by_hand() -> None:
    # 0 of 5 discordant pairs favour A: p = 2 * (1/2)^5 = 1/16
    assert mcnemar_exact(0, 5) == pytest.approx(1 / 16)


def test_paired_bootstrap_interval_and_determinism() -> None:
    a = [1.0] * 60 + [0.0] * 40
    b = [1.0] * 45 + [0.0] * 15 + [1.0] * 5 + [0.0] * 35  # 15 regress, 5 fix
    delta, low, high = paired_bootstrap(a, b, seed=1)
    assert delta == pytest.approx(-0.10)
    assert low < delta < high < 0.0 + 0.05
    assert paired_bootstrap(a, b, seed=1) == (delta, low, high)
    # normal approximation of the same interval, for scale
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    se = (sum((d - delta) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)) ** 0.5
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_paired_bootstrap_stays_small_at_a_hundred_thousand_pairs() -> None:
    n = 200_000
    a = [float(i % 3 == 0) for i in range(n)]
    b = [float(i % 4 == 0) for i in range(n)]
    delta, low, high = paired_bootstrap(a, b, iterations=2000)
    assert low <= delta <= high and high - low < 0.01
    scores_a = [(i % 97) / 97 for i in range(20_000)]
    scores_b = [(i % 89) / 89 for i in range(20_000)]
    delta, low, high = paired_bootstrap(scores_a, scores_b, iterations=500)
    assert low <= delta <= high


def test_identical_and_empty_samples() -> None:
    assert paired_bootstrap([1.0, 0.0], [1.0, 0.0]) == (0.0, 0.0, 0.0)
    assert all(math.isnan(x) for x in paired_bootstrap([], []))
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 0.0])


def test_minimum_detectable_difference() -> None:
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert min_detectable_difference(100) == pytest.approx(z * math.sqrt(2 * 0.25 / 100))
    assert min_detectable_difference(400) < min_detectable_difference(100)
    assert math.isnan(min_detectable_difference(0))


def test_holm_by_hand() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([]) == []
