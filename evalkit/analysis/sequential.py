"""Sequential decisions: feed rounds of paired outcomes, stop sending once the answer is known.

A `SequentialComparison` holds the state of one paired comparison over a suite of N cases
sent in a seeded random order. After each round, `update(a, b)` returns a
`SequentialDecision`: undecided, or the verdict, with the interval so far and the cases used.

- mode "gate" (a = baseline, b = candidate): "regression" as soon as the candidate is worse
  with confidence 1 − α; "no regression" when the suite is exhausted, or earlier with a
  margin δ once the candidate is shown no worse than δ.
- mode "choice" (a = model A, b = model B): "A better", "B better", or with a margin δ and
  the dearer side named, "not better by margin" (the dearer one is not better by δ: choose
  the cheaper); "no difference" when the suite ran out first.

Which test decides: which side is better, a question about cases like these in general, is
the e-process on discordant pairs for pass/fail (`sequential_binary`) and the betting test of
a zero mean difference for scores (`sequential_mean.BettingTest`), at 1/α in a gate (one
direction is tested) and 2/α per direction in a choice (two are, each at α/2). The interval
reported, and the margins, are the betting confidence sequence for this suite's mean
difference b − a, sampled without replacement (`sequential_mean`): it is exact once every
case is sent, so it must not decide a direction then (it would call noise a difference).
All are anytime-valid: deciding after every round keeps each error rate at α.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from evalkit.analysis.sequential_binary import log_discordant_e_value
from evalkit.analysis.sequential_mean import BettingConfidenceSequence, BettingTest

Mode = Literal["gate", "choice"]
Outcome = Literal["pass_fail", "score"]
Verdict = Literal[
    "undecided",
    "regression",
    "no regression",
    "A better",
    "B better",
    "not better by margin",
    "no difference",
]


@dataclass(frozen=True)
class SequentialDecision:
    """Where a sequential comparison stands after a round; `low`/`high` bound b − a."""

    verdict: Verdict
    cases: int  # paired cases used so far
    suite: int  # N, the cases the suite has
    mean: float  # the mean of b − a over the cases used
    low: float
    high: float
    log_e_a: float  # log e-value for "A (the baseline in a gate) is better"
    log_e_b: float  # ... and for "B (the candidate) is better"

    @property
    def decided(self) -> bool:
        return self.verdict != "undecided"

    @property
    def fraction(self) -> float:
        """The share of the suite sent: 1 − this is the cost saved."""
        return self.cases / self.suite


class SequentialComparison:
    """The running state of one anytime-valid paired comparison (see the module docstring)."""

    def __init__(
        self,
        suite_size: int,
        mode: Mode = "gate",
        outcome: Outcome = "pass_fail",
        alpha: float = 0.05,
        margin: float | None = None,
        dearer: Literal["A", "B"] | None = None,
        grid: int = 1000,
    ) -> None:
        if mode not in ("gate", "choice") or outcome not in ("pass_fail", "score"):
            raise ValueError(f"unknown mode {mode!r} or outcome {outcome!r}")
        if margin is not None and not 0 < margin < 1:
            raise ValueError(f"margin {margin!r}: use a difference between 0 and 1")
        if mode == "choice" and margin is not None and dearer not in ("A", "B"):
            raise ValueError("a choice with a margin must name the dearer side, 'A' or 'B'")
        self.suite_size, self.mode, self.outcome = suite_size, mode, outcome
        self.alpha, self.margin, self.dearer = alpha, margin, dearer
        self._interval = BettingConfidenceSequence(suite_size, alpha, -1.0, 1.0, grid)
        level = (1 if mode == "gate" else 2) / alpha
        self._log_bar = math.log(level)
        self._direction = BettingTest(0.0, level)  # scores only; pass/fail count pairs
        self._a_only = self._b_only = 0  # discordant pairs: pass on one side only
        self._decision = self._judge()

    @property
    def decision(self) -> SequentialDecision:
        return self._decision

    def update(self, a: Sequence[float], b: Sequence[float]) -> SequentialDecision:
        """Add one round of paired outcomes (case i is a[i] against b[i]) and decide."""
        if self._decision.decided:
            raise ValueError(f"already decided ({self._decision.verdict}): send no more cases")
        if len(a) != len(b):
            raise ValueError("paired outcomes must have the same length")
        if self._interval.seen + len(a) > self.suite_size:
            raise ValueError(f"more cases than the suite's {self.suite_size}")
        pairs = list(zip(a, b, strict=True))
        for x, y in pairs:  # all checked before any is counted: a bad round changes nothing
            if self.outcome == "pass_fail" and not {x, y} <= {0, 1}:
                raise ValueError(f"pass/fail outcomes must be 0 or 1, not {x!r} and {y!r}")
            if not (0 <= x <= 1 and 0 <= y <= 1):
                raise ValueError(f"scores must lie in [0, 1], not {x!r} and {y!r}")
        self._a_only += sum(x > y for x, y in pairs)
        self._b_only += sum(y > x for x, y in pairs)
        self._interval.update(y - x for x, y in pairs)
        if self.outcome == "score":
            self._direction.update(y - x for x, y in pairs)
        self._decision = self._judge()
        return self._decision

    def _judge(self) -> SequentialDecision:
        low, high = self._interval.interval()
        if self.outcome == "pass_fail":
            log_e_a = log_discordant_e_value(self._a_only, self._b_only)
            log_e_b = log_discordant_e_value(self._b_only, self._a_only)
        else:
            log_e_a, log_e_b = self._direction.log_below, self._direction.log_above
        a_better, b_better = log_e_a >= self._log_bar, log_e_b >= self._log_bar
        exhausted = self._interval.seen == self.suite_size
        verdict: Verdict = "undecided"
        margin = self.margin
        if self.mode == "gate":
            if a_better:
                verdict = "regression"
            elif exhausted or (margin is not None and low > -margin):
                verdict = "no regression"
        else:
            if a_better or b_better:
                verdict = "A better" if a_better else "B better"
            elif margin is not None and (high < margin if self.dearer == "B" else low > -margin):
                verdict = "not better by margin"
            elif exhausted:
                verdict = "no difference"
        return SequentialDecision(
            verdict=verdict,
            cases=self._interval.seen,
            suite=self.suite_size,
            mean=self._interval.mean,
            low=low,
            high=high,
            log_e_a=log_e_a,
            log_e_b=log_e_b,
        )


def round_sizes(suite_size: int, first: int = 20, growth: float = 1.5) -> list[int]:
    """Round sizes that grow geometrically and add up to the suite: [20, 30, 45, ...].

    Small first rounds let an obvious difference stop early; growing ones keep the number of
    rounds (and of waits for a batch) logarithmic in the suite.
    """
    if first < 1 or growth < 1:
        raise ValueError("need first >= 1 and growth >= 1")
    sizes: list[int] = []
    size = float(first)
    while sum(sizes) < suite_size:
        sizes.append(min(round(size), suite_size - sum(sizes)))
        size *= growth
    return sizes
