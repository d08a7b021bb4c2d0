"""The sequential statistics against independent computations and seeded simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special
from scipy import stats as scipy_stats

from evalkit.analysis.sequential import SequentialComparison, round_sizes
from evalkit.analysis.sequential_binary import discordant_e_value, log_discordant_e_value
from evalkit.analysis.sequential_mean import BettingConfidenceSequence, BettingTest
from evalkit.analysis.stats import paired_min_detectable_difference

# --- the e-process on discordant pairs ------------------------------------------------------


@pytest.mark.parametrize(
    ("n10", "n01"),
    [(0, 0), (1, 0), (0, 1), (5, 3), (3, 5), (40, 10), (10, 40), (700, 600), (2900, 3000)],
)
def test_e_value_matches_the_beta_formula(n10: int, n01: int) -> None:
    """E = 2^(n+1) · B(n10+1, n01+1) · (1 − I_½(n10+1, n01+1)), from scipy, in log space."""
    n = n10 + n01
    tail = special.betainc(n01 + 1, n10 + 1, 0.5)  # = 1 − I_½(n10+1, n01+1)
    expected = (n + 1) * math.log(2) + special.betaln(n10 + 1, n01 + 1) + math.log(tail)
    assert log_discordant_e_value(n10, n01) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(("n10", "n01"), [(0, 0), (1, 0), (6, 2), (2, 6), (30, 12), (9, 25)])
def test_e_value_is_the_likelihood_ratio_averaged_over_the_prior(n10: int, n01: int) -> None:
    """Numerical integration of (θ/½)^n10 ((1−θ)/½)^n01 against the uniform density 2 on [½, 1]."""
    value, _ = integrate.quad(
        lambda theta: 2 * (2 * theta) ** n10 * (2 * (1 - theta)) ** n01, 0.5, 1.0, epsabs=0
    )
    assert discordant_e_value(n10, n01) == pytest.approx(value, rel=1e-8)


def test_e_value_by_hand_and_at_the_extremes() -> None:
    assert discordant_e_value(0, 0) == 1.0
    assert discordant_e_value(1, 0) == pytest.approx(1.5)  # ∫ 2·2θ dθ over [½, 1]
    assert discordant_e_value(5000, 0) == math.inf  # overflows a float, but its log does not
    assert log_discordant_e_value(5000, 0) == pytest.approx(5001 * math.log(2) - math.log(5001))
    assert math.isfinite(log_discordant_e_value(0, 5000))
    with pytest.raises(ValueError, match="negative"):
        log_discordant_e_value(-1, 2)


def test_e_value_grows_with_wins_and_shrinks_with_losses() -> None:
    values = [log_discordant_e_value(k, 20) for k in range(0, 60)]
    assert values == sorted(values)
    values = [log_discordant_e_value(20, k) for k in range(0, 60)]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("n", [1, 7, 40, 200])
def test_e_value_is_a_fair_bet_when_neither_side_is_better(n: int) -> None:
    """The exact expectation over all sequences of n fair coins is 1 (a martingale at θ = ½),
    and below 1 when B is better (θ < ½): a supermartingale over the whole null."""
    k = np.arange(n + 1)
    e = np.array([discordant_e_value(int(i), n - int(i)) for i in k])
    assert float(scipy_stats.binom.pmf(k, n, 0.5) @ e) == pytest.approx(1.0, rel=1e-9)
    assert float(scipy_stats.binom.pmf(k, n, 0.4) @ e) < 1.0


def test_e_process_false_alarms_stay_under_alpha_when_peeked_at_often() -> None:
    """Ville's inequality: under θ = ½, reaching 1/α at any look happens at most α of the time."""
    rng = np.random.default_rng(16)
    paths, length, alpha = 1000, 400, 0.1
    crossed = 0
    for _ in range(paths):
        wins = np.cumsum(rng.integers(0, 2, size=length))
        looks = range(4, length + 1, 4)
        crossed += any(
            log_discordant_e_value(int(wins[t - 1]), t - int(wins[t - 1])) >= math.log(1 / alpha)
            for t in looks
        )
    assert crossed / paths <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / paths)


# --- the betting confidence sequence, without replacement -----------------------------------


def reference_capitals(
    x: list[float], m: float, n: int | None, alpha: float
) -> list[tuple[float, float]]:
    """(K⁺, K⁻) for the unit-scale candidate m, one value at a time, written straight from
    the paper's definitions; n the population (without replacement) or None (with)."""
    plus = minus = 1.0
    total, squares, out = 0.0, 0.25, []
    for t, value in enumerate(x, start=1):
        mu = m if n is None else (n * m - total) / (n - t + 1)
        if not 0 <= mu <= 1:  # m has become impossible
            out.append((math.inf, math.inf))
        else:
            bet = math.sqrt(2 * math.log(2 / alpha) / (squares / t * t * math.log(1 + t)))
            plus *= 1 + min(bet, 0.5 / mu if mu else math.inf) * (value - mu)
            minus *= 1 - min(bet, 0.5 / (1 - mu) if mu < 1 else math.inf) * (value - mu)
            out.append((plus, minus))
        total += value
        squares += (value - (0.5 + total) / (t + 1)) ** 2
    return out


def reference_capital(x: list[float], m: float, n: int, alpha: float) -> list[float]:
    """The hedged capital max(½K⁺, ½K⁻)."""
    return [max(plus, minus) / 2 for plus, minus in reference_capitals(x, m, n, alpha)]


def test_interval_matches_the_papers_capital_computed_one_value_at_a_time() -> None:
    rng = np.random.default_rng(3)
    n, alpha = 120, 0.05
    population = rng.choice([-1.0, 0.0, 0.0, 1.0, 1.0], size=n)
    unit = ((population + 1) / 2).tolist()
    grid = np.linspace(0, 1, 1001)
    capital = np.array([reference_capital(unit, float(m), n, alpha) for m in grid])
    sequence = BettingConfidenceSequence(n, alpha)
    for start in range(0, n, 17):
        sequence.update(population[start : start + 17].tolist())
        seen = sequence.seen
        alive = np.flatnonzero(np.all(capital[:, :seen] < 1 / alpha, axis=1))
        total = sum(unit[:seen])
        low = max(total / n, grid[alive[0]] - 0.001)
        high = min((total + n - seen) / n, grid[alive[-1]] + 0.001)
        assert sequence.interval() == pytest.approx((2 * low - 1, 2 * high - 1), abs=1e-9)


@pytest.mark.parametrize("alpha", [0.05, 0.1])
@pytest.mark.parametrize("kind", ["pass_fail", "scores"])
def test_interval_covers_the_suite_mean_at_every_time(alpha: float, kind: str) -> None:
    """Over seeded shuffles of seeded suites, the suite's true mean difference leaves the
    interval at some round in at most α of them (counted, with three standard errors)."""
    rng = np.random.default_rng(2010_09686)
    sims, n = 300, 150
    missed = 0
    for _ in range(sims):
        if kind == "pass_fail":
            a_only, b_only = rng.uniform(0, 0.3, size=2)
            population = rng.choice(
                [1.0, -1.0, 0.0], size=n, p=[b_only, a_only, 1 - a_only - b_only]
            )
        else:
            population = np.clip(rng.normal(rng.uniform(-0.3, 0.3), 0.3, size=n), -1, 1)
        truth = float(population.mean())
        rng.shuffle(population)
        sequence = BettingConfidenceSequence(n, alpha)
        escaped = False
        for start in range(0, n, 10):
            sequence.update(population[start : start + 10].tolist())
            low, high = sequence.interval()
            escaped |= not low - 1e-12 <= truth <= high + 1e-12
        missed += escaped
    assert missed / sims <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / sims)


def test_interval_shrinks_to_the_exact_suite_mean() -> None:
    rng = np.random.default_rng(5)
    population = rng.uniform(-1, 1, size=500)
    sequence = BettingConfidenceSequence(500, 0.05)
    widths = []
    for start in range(0, 500, 50):
        sequence.update(population[start : start + 50].tolist())
        low, high = sequence.interval()
        widths.append(high - low)
        assert low <= sequence.mean <= high
    assert widths == sorted(widths, reverse=True)
    assert widths[0] < 1.0  # 50 values already rule out most of [−1, 1]
    assert sequence.interval() == pytest.approx((population.mean(), population.mean()), abs=1e-12)
    with pytest.raises(ValueError, match="population"):
        sequence.update([0.0])


def test_betting_test_matches_the_papers_capital_with_replacement() -> None:
    rng = np.random.default_rng(8)
    values = rng.uniform(-1, 1, size=90)
    test = BettingTest(0.0, level=2 / 0.05)
    test.update(values[:40].tolist())
    test.update(values[40:].tolist())
    plus, minus = reference_capitals(((values + 1) / 2).tolist(), 0.5, None, 0.05)[-1]
    assert (test.log_above, test.log_below) == pytest.approx((math.log(plus), math.log(minus)))


def test_betting_test_false_alarms_stay_under_alpha() -> None:
    """Mean-zero i.i.d. scores (symmetric, clipped), peeked at every 5 values: K⁻ reaches 1/α at most α of the time."""
    rng = np.random.default_rng(24)
    sims, alpha = 400, 0.1
    alarms = 0
    for _ in range(sims):
        test = BettingTest(0.0, level=1 / alpha)
        values = np.clip(rng.normal(0, rng.uniform(0.1, 0.6), size=300), -1, 1)
        for start in range(0, 300, 5):
            test.update(values[start : start + 5].tolist())
            if test.log_below >= math.log(1 / alpha):
                alarms += 1
                break
    assert alarms / sims <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / sims)


def test_interval_rejects_values_out_of_range() -> None:
    sequence = BettingConfidenceSequence(10, 0.05)
    with pytest.raises(ValueError, match="lie in"):
        sequence.update([0.5, 1.5])
    assert sequence.seen == 0
    assert math.isnan(sequence.mean)
    assert sequence.interval() == (-1.0, 1.0)


# --- the decisions ---------------------------------------------------------------------------


def run(comparison: SequentialComparison, a: list[float], b: list[float]) -> None:
    start = 0
    for size in round_sizes(len(a)):
        decision = comparison.update(a[start : start + size], b[start : start + size])
        start += size
        if decision.decided:
            return


def test_gate_calls_a_clear_regression_early() -> None:
    baseline = [1.0] * 400
    candidate = [0.0 if i % 10 < 4 else 1.0 for i in range(400)]  # 40 points worse
    gate = SequentialComparison(400, mode="gate")
    run(gate, baseline, candidate)
    decision = gate.decision
    assert decision.verdict == "regression"
    assert decision.cases < 100 and decision.fraction < 0.25
    # the interval (of candidate − baseline) comes from the other test, which is slower to
    # exclude 0: it brackets the drop seen, it need not agree yet
    assert decision.mean == pytest.approx(-0.4)
    assert decision.low < decision.mean < decision.high
    assert decision.log_e_a >= math.log(1 / 0.05)
    with pytest.raises(ValueError, match="already decided"):
        gate.update([1.0], [1.0])


def test_gate_without_a_margin_needs_the_whole_suite_to_clear() -> None:
    outcomes = [float(i % 3 != 0) for i in range(300)]
    gate = SequentialComparison(300, mode="gate")
    assert gate.update(outcomes[:299], outcomes[:299]).verdict == "undecided"
    decision = gate.update(outcomes[299:], outcomes[299:])
    assert (decision.verdict, decision.cases, decision.low, decision.high) == (
        "no regression",
        300,
        0.0,
        0.0,
    )


def test_gate_with_a_margin_clears_early_when_nothing_changed() -> None:
    outcomes = [float(i % 3 != 0) for i in range(1000)]
    gate = SequentialComparison(1000, mode="gate", margin=0.05)
    run(gate, outcomes, outcomes)
    assert gate.decision.verdict == "no regression"
    assert gate.decision.cases < 500 and gate.decision.low > -0.05


def test_choice_names_the_better_side_either_way() -> None:
    good, bad = [1.0] * 200, [float(i % 2) for i in range(200)]
    for a, b, verdict in [(good, bad, "A better"), (bad, good, "B better")]:
        choice = SequentialComparison(200, mode="choice")
        run(choice, a, b)
        assert choice.decision.verdict == verdict
        assert choice.decision.cases < 200


def test_choice_is_symmetric_in_its_sides() -> None:
    rng = np.random.default_rng(9)
    a = rng.integers(0, 2, size=60).astype(float).tolist()
    b = rng.integers(0, 2, size=60).astype(float).tolist()
    one, other = SequentialComparison(60, "choice"), SequentialComparison(60, "choice")
    first, second = one.update(a, b), other.update(b, a)
    assert (first.log_e_a, first.log_e_b) == pytest.approx((second.log_e_b, second.log_e_a))
    assert (first.low, first.high) == pytest.approx((-second.high, -second.low), abs=1e-9)


def test_choice_with_a_margin_finds_the_dearer_model_not_worth_it() -> None:
    outcomes = [float(i % 4 != 0) for i in range(1000)]
    choice = SequentialComparison(1000, mode="choice", margin=0.1, dearer="B")
    run(choice, outcomes, outcomes)
    assert choice.decision.verdict == "not better by margin"
    assert choice.decision.high < 0.1 and choice.decision.cases < 1000


def test_choice_that_runs_out_finds_no_difference() -> None:
    outcomes = [float(i % 2) for i in range(100)]
    choice = SequentialComparison(100, mode="choice")
    assert choice.update(outcomes, outcomes).verdict == "no difference"


def test_scores_decide_by_the_interval() -> None:
    rng = np.random.default_rng(4)
    baseline = rng.uniform(0.5, 1.0, size=500)
    candidate = np.clip(baseline - 0.3 + rng.normal(0, 0.05, size=500), 0, 1)
    gate = SequentialComparison(500, mode="gate", outcome="score")
    run(gate, baseline.tolist(), candidate.tolist())
    assert gate.decision.verdict == "regression" and gate.decision.high < 0
    assert gate.decision.cases < 250 and gate.decision.log_e_a >= math.log(1 / 0.05)


def test_a_score_gate_does_not_call_noise_a_regression_at_the_end() -> None:
    """No true difference: the whole suite runs, its exact mean difference is as often
    negative as not, and yet the gate says "regression" at most α of the time."""
    rng = np.random.default_rng(77)
    sims, n, alpha = 200, 100, 0.1
    alarms = 0
    for _ in range(sims):
        a, b = rng.uniform(0, 1, size=(2, n))
        gate = SequentialComparison(n, mode="gate", outcome="score", alpha=alpha)
        run(gate, a.tolist(), b.tolist())
        alarms += gate.decision.verdict == "regression"
    assert alarms / sims <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / sims)


def test_false_alarms_stay_under_alpha_over_rounds() -> None:
    """No true difference (10% of cases flip each way): the gate calls a regression at most
    α of the time although it looks after every round."""
    rng = np.random.default_rng(1939)  # Ville
    sims, n, alpha = 300, 200, 0.1
    alarms = 0
    for _ in range(sims):
        cells = rng.choice(3, size=n, p=[0.1, 0.1, 0.8])
        base = (cells != 1).astype(float).tolist()
        new = (cells != 0).astype(float).tolist()
        gate = SequentialComparison(n, mode="gate", alpha=alpha)
        run(gate, base, new)
        alarms += gate.decision.verdict == "regression"
    assert alarms / sims <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / sims)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="dearer"):
        SequentialComparison(10, mode="choice", margin=0.1)
    with pytest.raises(ValueError, match="margin"):
        SequentialComparison(10, margin=1.5)
    gate = SequentialComparison(10)
    with pytest.raises(ValueError, match="0 or 1"):
        gate.update([0.5], [1.0])
    with pytest.raises(ValueError, match="same length"):
        gate.update([1.0], [])
    with pytest.raises(ValueError, match="more cases"):
        gate.update([1.0] * 11, [1.0] * 11)
    with pytest.raises(ValueError, match="lie in"):
        SequentialComparison(10, outcome="score").update([1.2], [0.0])
    assert gate.decision.cases == 0 and gate.decision.verdict == "undecided"


def test_round_sizes_grow_and_cover_the_suite() -> None:
    assert round_sizes(1000) == [20, 30, 45, 68, 101, 152, 228, 342, 14]
    assert round_sizes(10) == [10]
    assert sum(round_sizes(12_345, first=7, growth=2)) == 12_345


# --- the minimum detectable difference of a fixed-sample paired comparison ------------------


def test_min_detectable_difference_of_pass_fail_has_the_power_it_claims() -> None:
    """Brute force: at the MDD, McNemar's z-test at α = 0.05 rejects in 80% of simulations."""
    rng = np.random.default_rng(1987)
    n, r = 400, 0.25
    delta = paired_min_detectable_difference(n, discordance=r)
    counts = rng.multinomial(n, [(r + delta) / 2, (r - delta) / 2, 1 - r], size=20_000)
    z = (counts[:, 0] - counts[:, 1]) / np.sqrt(np.maximum(counts[:, 0] + counts[:, 1], 1))
    power = float(np.mean(np.abs(z) >= scipy_stats.norm.ppf(0.975)))
    assert power == pytest.approx(0.8, abs=0.02)
    assert paired_min_detectable_difference(4 * n, discordance=r) < delta


def test_min_detectable_difference_of_scores_is_the_normal_closed_form() -> None:
    delta = paired_min_detectable_difference(400, sd=0.5)
    z_alpha = scipy_stats.norm.ppf(0.975)
    shift = delta * math.sqrt(400) / 0.5
    power = scipy_stats.norm.sf(z_alpha - shift) + scipy_stats.norm.cdf(-z_alpha - shift)
    assert power == pytest.approx(0.8, abs=1e-3)
    rng = np.random.default_rng(0)
    means = rng.normal(delta, 0.5, size=(5_000, 400)).mean(axis=1)
    assert np.mean(np.abs(means) / (0.5 / 20) >= z_alpha) == pytest.approx(0.8, abs=0.02)


def test_min_detectable_difference_edges() -> None:
    assert paired_min_detectable_difference(5, discordance=0.2) == 1.0  # nothing detectable
    assert math.isnan(paired_min_detectable_difference(0, sd=0.3))
    assert paired_min_detectable_difference(1000, discordance=0.0) == pytest.approx(
        paired_min_detectable_difference(1000, discordance=0.001)
    )
    with pytest.raises(ValueError, match="exactly one"):
        paired_min_detectable_difference(100)
