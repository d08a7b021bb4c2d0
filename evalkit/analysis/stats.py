"""Statistics that tell a real difference from noise: pure functions, no state.

- `wilson`: the 95% interval of a pass rate (good at small n and near 0 or 1).
- `mcnemar_exact`: two models (or two runs) on the same cases: only the cases where they
  disagree carry information; under "no difference" each disagreement is a fair coin.
- `paired_bootstrap`: the interval of a mean difference of paired scores.
- `min_detectable_difference`: the smallest pass-rate change a suite of n cases can detect.
- `paired_min_detectable_difference`: the same for a paired comparison, from what the pairs
  showed (their discordance rate, or the spread of their score differences).
- `holm`: Holm's step-down correction when several pairs are tested at once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from statistics import NormalDist


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for `successes` out of `n`; (nan, nan) when n is 0."""
    if n <= 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b cases pass only in A, c pass only in B."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # the binomial(n, 1/2) lower tail, summed in log space: exact enough, fast at any n
    log_term = -n * math.log(2.0)  # log P(X = 0)
    terms = [log_term]
    for i in range(k):
        log_term += math.log((n - i) / (i + 1))
        terms.append(log_term)
    top = max(terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in terms)
    return min(1.0, 2.0 * tail)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    iterations: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of (b - a) over paired items, with a percentile bootstrap interval."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    n = len(a)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    mean = sum(diffs) / n
    if all(d == diffs[0] for d in diffs):
        return (mean, mean, mean)
    try:
        import numpy as np

        rng = np.random.default_rng(seed)
        values, counts = np.unique(np.asarray(diffs, dtype=float), return_counts=True)
        if len(values) <= 64:  # pass/fail and graded scores: resample counts, not items
            draws = rng.multinomial(n, counts / n, size=iterations)
            means = draws @ values / n
        else:  # resample items, in chunks so memory stays bounded at any n
            data = np.asarray(diffs, dtype=float)
            chunk = max(1, 5_000_000 // n)
            means = np.concatenate(
                [
                    data[rng.integers(0, n, size=(min(chunk, iterations - start), n))].mean(axis=1)
                    for start in range(0, iterations, chunk)
                ]
            )
        low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
        return (mean, float(low), float(high))
    except ImportError:  # pragma: no cover - numpy comes with pandas
        generator = random.Random(seed)
        boot = sorted(sum(generator.choices(diffs, k=n)) / n for _ in range(iterations))
        lo = boot[int((1 - confidence) / 2 * (iterations - 1))]
        hi = boot[int((1 + confidence) / 2 * (iterations - 1))]
        return (mean, lo, hi)


def min_detectable_difference(
    n: int, pass_rate: float = 0.5, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest pass-rate difference detectable with `power` at two-sided `alpha`.

    Normal approximation for two proportions around `pass_rate` with n cases each; a paired
    test on the same cases does at least as well when outcomes are correlated, so this is
    the honest upper bound to quote for "how big a change can this suite see".
    """
    if n <= 0:
        return math.nan
    p = min(max(pass_rate, 0.05), 0.95)  # keep the bound informative at the edges
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return min(1.0, z * math.sqrt(2 * p * (1 - p) / n))


def paired_min_detectable_difference(
    n: int,
    discordance: float | None = None,
    sd: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """The smallest mean paired difference a fixed-sample two-sided test at `alpha` detects
    with `power` on n paired cases: what a gate that ran n cases could have seen.

    Pass/fail (`discordance`, the share of cases where the sides disagree): McNemar's test in
    its normal approximation, whose power at a difference Δ solves (Connor, Biometrics 1987)
    Δ·√n = z_{1−α/2}·√r + z_power·√(r − Δ²); r is kept at least 1/n, since a suite with no
    disagreement seen cannot rule one out. Scores (`sd`, of the per-case differences):
    Δ = (z_{1−α/2} + z_power)·sd/√n. 1.0 when no difference is detectable at all.
    """
    if (discordance is None) == (sd is None):
        raise ValueError("give exactly one of discordance (pass/fail) and sd (scores)")
    if n <= 0:
        return math.nan
    z_alpha = NormalDist().inv_cdf(1 - alpha / 2)
    z_power = NormalDist().inv_cdf(power)
    if sd is not None:
        return min(1.0, (z_alpha + z_power) * sd / math.sqrt(n))
    r = min(max(float(discordance or 0.0), 1 / n), 1.0)

    def shortfall(delta: float) -> float:  # < 0 while delta is too small to detect
        return delta * math.sqrt(n) - z_alpha * math.sqrt(r) - z_power * math.sqrt(r - delta**2)

    if shortfall(r) < 0:  # even all disagreements one way (|Δ| = r) is not detectable
        return 1.0
    low, high = 0.0, r
    for _ in range(60):  # bisection: the shortfall grows with delta on [0, r]
        middle = (low + high) / 2
        low, high = (middle, high) if shortfall(middle) < 0 else (low, middle)
    return high


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted
