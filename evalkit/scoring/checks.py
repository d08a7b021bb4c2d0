"""What a check gives: a `Verdict`, and how verdicts are negated and combined into a row's.

Every check is a small pure function of (argument, output, record) returning a `Verdict`:
pass or fail, a score in 0..1, and a one-line reason that a report can show next to a
failure. The checks themselves are in `text_checks.py` (the text and the row's fields),
`json_checks.py` (JSON, schemas, tool calls) and `python_checks.py` (the suite's own code);
`evaluate.py` maps each kind to its function. Which checks run where, and under what time
limit, is `scoring.py`'s business; the `judge` check needs a model call (`judge.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from evalkit.suite.checkspec import Check

MAX_REASON_CHARS = 1000  # a check's reason is one line in a report, whatever a check returns


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    score: float
    reason: str
    error: bool = False  # the check could not be evaluated (an exception, a time-out)


def broken(reason: str) -> Verdict:
    """A check that could not be evaluated: it fails, negated or not."""
    return Verdict(False, 0.0, reason[:MAX_REASON_CHARS], error=True)


def timed_out(limit_s: float) -> Verdict:
    return broken(f"timed out after {limit_s:g} s")


Record = Mapping[str, Any]  # the row being checked: finish_reason, tokens, latency, cost, ...
CheckFn = Callable[[Any, str, Record], Verdict]


def ok(passed: bool, reason_if_failed: str, reason_if_passed: str = "") -> Verdict:
    """A pass or fail scored 1 or 0, with the reason that fits."""
    return Verdict(passed, 1.0 if passed else 0.0, reason_if_passed if passed else reason_if_failed)


def short(text: str, limit: int = 60) -> str:
    """`text` quoted for a reason, cut at `limit` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def negated(check: Check, verdict: Verdict) -> Verdict:
    """The verdict of `{not: check}`; a check that could not be evaluated still fails."""
    if not check.negate or verdict.error:
        return verdict
    reason = "" if not verdict.passed else f"negated {check.kind} passed"
    return Verdict(not verdict.passed, 1.0 - verdict.score, reason)


def combine(
    results: Mapping[str, tuple[bool, float]], meta: Mapping[str, tuple[float, bool]]
) -> tuple[bool, float]:
    """`passed`: every required check passed; `score`: the weighted mean of check scores.

    `results` holds each check's (passed, score), `meta` its (weight, required).
    """
    passed = all(good for name, (good, _) in results.items() if meta[name][1])
    weight = sum(float(meta[name][0]) for name in results)
    if not weight:
        return passed, 1.0 if passed else 0.0
    return passed, sum(
        score * float(meta[name][0]) for name, (_, score) in results.items()
    ) / weight
