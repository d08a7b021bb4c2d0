"""The anytime-valid interval for a mean score: a betting confidence sequence, without replacement.

Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting", JRSS-B
2024 (arXiv:2010.09686): for each candidate mean m, a gambler bets against "the mean is m";
under that hypothesis their capital is a nonnegative martingale, so by Ville's inequality it
reaches 1/α with probability at most α, and the m whose capital stays below 1/α form a
confidence sequence: it holds at every time at once, so it may be read after every round.

The suite is a finite population of N cases sent in a uniformly random order, i.e. sampled
without replacement (the paper's section on sampling without replacement). If the suite's
mean is m, the mean of the cases not yet sent is, before case t,

    μ_t(m) = (N·m − Σ_{i<t} x_i) / (N − t + 1),

and that is what x_t is bet against: K_t(m) = Π (1 ± λ_i (x_i − μ_i(m))). A candidate whose
μ_t(m) leaves [0, 1] is impossible, so the interval shrinks to the exact suite mean once every
case is sent. The capital is the paper's hedged process, max(θ·K⁺, (1 − θ)·K⁻), with its
predictable plug-in bet λ_t = √(2 log(2/α) / (σ̂²_{t−1} · t · log(1 + t))), truncated at
c/μ_t(m) for K⁺ and c/(1 − μ_t(m)) for K⁻ (c = ½, their default) so no factor is below 1 − c.
A candidate once rejected stays rejected (the running intersection, valid for the same reason).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

_BLOCK = 256  # values bet on at once: a block × grid matrix stays a few MB


class _PlugIn:
    """The predictable plug-in bet λ_t = √(2 log(level) / (σ̂²_{t−1} · t · log(1 + t))), with
    μ̂ and σ̂² regularised by one pseudo-observation (½, ¼), as in the paper."""

    def __init__(self, level: float) -> None:
        self.scale = 2 * math.log(level)
        self.seen = 0
        self.total = 0.0  # Σ x on the unit scale
        self.squares = 0.25  # the prior pseudo-observation, then Σ (x_i − μ̂_i)²

    def advance(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t, Σ_{i<t} x_i, λ_t) for each value of the block, which is then counted."""
        t = self.seen + 1 + np.arange(x.size)
        sums = self.total + np.cumsum(x)
        squares = (x - (0.5 + sums) / (t + 1)) ** 2  # (x_t − μ̂_t)²
        variance = (self.squares + np.cumsum(squares) - squares) / t  # σ̂²_{t−1}
        bets = np.sqrt(self.scale / (variance * t * np.log(1 + t)))
        self.seen += x.size
        self.total = float(sums[-1]) if x.size else self.total
        self.squares += float(squares.sum())
        return t, sums - x, bets


def _unit(values: Iterable[float], low: float, high: float) -> np.ndarray:
    data = np.asarray(list(values), dtype=float)
    if data.size and not (np.all(data >= low) and np.all(data <= high)):
        raise ValueError(f"values must lie in [{low}, {high}]")
    return (data - low) / (high - low)


class BettingTest:
    """Anytime-valid tests of "the mean is at most `null`" (K⁺) and "at least" (K⁻) for
    i.i.d. values in [low, high]: the paper's capital at one candidate, with replacement.

    This asks whether one side is better in general (the suite as a sample), as the
    discordant-pair e-process does for pass/fail: the interval without replacement cannot,
    since once the whole suite is in it knows the suite's mean exactly, noise and all.
    Reject a side once its capital reaches `level` (1/α alone, 2/α with both sides tested).
    """

    def __init__(
        self,
        null: float = 0.0,
        level: float = 40.0,
        low: float = -1.0,
        high: float = 1.0,
        truncation: float = 0.5,
    ) -> None:
        if not low < null < high or level <= 1 or not 0 < truncation < 1:
            raise ValueError("need low < null < high, level > 1 and 0 < truncation < 1")
        self.low, self.high = low, high
        self._m = (null - low) / (high - low)
        self._bets = _PlugIn(level)
        self._caps = (truncation / self._m, truncation / (1 - self._m))
        self.log_above = self.log_below = 0.0  # log K⁺, log K⁻

    def update(self, values: Iterable[float]) -> None:
        x = _unit(values, self.low, self.high)
        _, _, bets = self._bets.advance(x)
        gap = x - self._m
        self.log_above += float(np.log1p(np.minimum(bets, self._caps[0]) * gap).sum())
        self.log_below += float(np.log1p(-np.minimum(bets, self._caps[1]) * gap).sum())


class BettingConfidenceSequence:
    """The running 1 − α interval for the mean of a finite population of N values in
    [low, high], fed the values in the (uniformly random) order they are drawn."""

    def __init__(
        self,
        population: int,
        alpha: float = 0.05,
        low: float = -1.0,
        high: float = 1.0,
        grid: int = 1000,
        truncation: float = 0.5,
        theta: float = 0.5,
    ) -> None:
        if population < 1:
            raise ValueError("the population must hold at least one value")
        if not 0 < alpha < 1 or not 0 < truncation < 1 or not 0 < theta < 1 or high <= low:
            raise ValueError("need 0 < alpha, truncation, theta < 1 and low < high")
        if grid < 2:
            raise ValueError("the grid needs at least two candidate means")
        self.population, self.alpha, self.low, self.high = population, alpha, low, high
        self.truncation = truncation
        self._grid = np.linspace(0.0, 1.0, grid + 1)  # candidate means on the unit scale
        self._step = 1.0 / grid
        self._log_plus = np.full(grid + 1, math.log(theta))  # log(θ·K⁺), K⁺ starts at 1
        self._log_minus = np.full(grid + 1, math.log(1 - theta))
        self._alive = np.ones(grid + 1, dtype=bool)
        self._threshold = math.log(1 / alpha)
        self._bets = _PlugIn(2 / alpha)

    @property
    def seen(self) -> int:
        return self._bets.seen

    def update(self, values: Iterable[float]) -> None:
        """Bet on each new value in turn; values outside [low, high] are an error."""
        unit = _unit(values, self.low, self.high)
        if self.seen + unit.size > self.population:
            raise ValueError(f"more values than the population of {self.population}")
        for start in range(0, unit.size, _BLOCK):
            self._bet(unit[start : start + _BLOCK])

    def _bet(self, x: np.ndarray) -> None:
        """One block of bets at once: rows are times t, columns the candidates still alive
        (a rejected or impossible candidate never comes back, so it is not bet on again)."""
        t, before, bets = self._bets.advance(x)
        live = np.flatnonzero(self._alive)
        if not live.size:
            return
        remaining = (self.population - t + 1)[:, None]
        mu = (self.population * self._grid[live] - before[:, None]) / remaining  # μ_t(m)
        possible = np.all((mu >= -1e-12) & (mu <= 1 + 1e-12), axis=0)
        mu = np.clip(mu, 1e-12, 1 - 1e-12)
        gap = x[:, None] - mu
        bet = bets[:, None]
        plus = np.log1p(np.minimum(bet, self.truncation / mu) * gap)
        minus = np.log1p(-np.minimum(bet, self.truncation / (1 - mu)) * gap)
        plus = self._log_plus[live] + np.cumsum(plus, axis=0)
        minus = self._log_minus[live] + np.cumsum(minus, axis=0)
        kept = possible & ~np.any(np.maximum(plus, minus) >= self._threshold, axis=0)
        self._log_plus[live], self._log_minus[live] = plus[-1], minus[-1]
        self._alive[live] = kept

    @property
    def mean(self) -> float:
        """The mean of the values seen so far (nan before the first)."""
        if not self.seen:
            return math.nan
        return self.low + (self.high - self.low) * self._bets.total / self.seen

    def interval(self) -> tuple[float, float]:
        """(lower, upper) for the population mean, on the values' scale.

        The grid's surviving candidates widened by one grid step (the truth may sit between
        two), cut to what the values seen make possible at all: the interval is the exact
        mean once all N are in.
        """
        n, rest = self.population, self.population - self.seen
        total = self._bets.total
        lo_possible, hi_possible = total / n, (total + rest) / n
        alive = np.flatnonzero(self._alive)
        lo, hi = lo_possible, hi_possible
        if alive.size:
            lo = max(lo, float(self._grid[alive[0]]) - self._step)
            hi = min(hi, float(self._grid[alive[-1]]) + self._step)
        if lo > hi:  # only rounding can do this, at the very end
            lo = hi = min(max(lo, lo_possible), hi_possible)
        span = self.high - self.low
        return (self.low + span * lo, self.low + span * hi)
