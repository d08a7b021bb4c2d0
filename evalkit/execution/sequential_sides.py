"""Who a sequential run compares, and each case's paired outcome (see sequential.py).

A gate's side A is a finished baseline run's rows, read before anything is sent; a choice's
sides are the run's two models. Outcomes pair as `evalkit compare` pairs them, by case,
variant and model label; a case's outcome on a side is pass/fail when every check is and the
side has one variant and model (the case passed, as `compare.case_outcomes` says), else a
score in [0, 1]: its samples' mean score, averaged over its variants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from evalkit.analysis.sequential import Outcome
from evalkit.errors import InputError, UsageError
from evalkit.execution.prepare import Prepared
from evalkit.suite.spec import Suite

if TYPE_CHECKING:
    import pandas as pd

    from evalkit.execution.sequential import SequentialSettings

SCORED_KINDS = frozenset({"contains_all", "similarity", "python", "judge"})  # scores in (0, 1)

Unit = tuple[str, str, str]  # case id, variant, model label: how compare pairs outcomes


@dataclass(frozen=True)
class Sides:
    """Who is compared: the units of each case on side A and side B, and A's known values."""

    mode: Literal["gate", "choice"]
    a_name: str
    b_name: str
    a_units: dict[int, list[Unit]]  # by case index
    b_units: dict[int, list[Unit]]
    baseline: dict[Unit, float] | None  # the gate's side A, read before anything is sent
    dearer: Literal["A", "B"] | None = None


def who_is_compared(suite: Suite, prepared: Prepared, asked: SequentialSettings) -> Sides:
    """The gate's baseline rows (read now: a bad baseline fails before anything is sent), or
    the run's two models; UsageError when a choice does not have exactly two."""
    variants = list(suite.variant_prompts())
    labels = [t.label for t in prepared.targets]
    units = {
        i: [(case.key, v, label) for v in variants for label in labels]
        for i, case in enumerate(suite.cases)
    }
    if asked.baseline is not None:
        from evalkit.analysis.compare import case_outcomes
        from evalkit.records.frame import load_run

        frame = load_run(asked.baseline)
        names = set(frame["suite"].dropna().unique())
        if names and names != {suite.name or ""}:
            raise InputError(
                f"the baseline {asked.baseline} is a run of another suite ({', '.join(names)}), "
                f"not {suite.name!r}: gate against a run of the same suite"
            )
        known = _values(case_outcomes(frame), _column(suite))
        return Sides("gate", "baseline", "candidate", units, units, known)
    if len(labels) != 2:
        raise UsageError(
            f"--sequential without --baseline chooses between two models; this run has "
            f"{len(labels)} ({', '.join(labels)}): give exactly two with -m A -m B, or gate "
            "against a finished run with --baseline RUN_DIR"
        )
    a, b = prepared.targets
    price_a = a.info.input_per_mtok + a.info.output_per_mtok
    price_b = b.info.input_per_mtok + b.info.output_per_mtok
    side = {i: [[u for u in us if u[2] == label] for label in labels] for i, us in units.items()}
    return Sides(
        "choice",
        a.label,
        b.label,
        {i: pair[0] for i, pair in side.items()},
        {i: pair[1] for i, pair in side.items()},
        None,
        "A" if price_a > price_b else "B",  # equal or unknown prices: B must prove itself
    )


def _column(suite: Suite) -> str:
    """Which outcome of a unit is compared: `passed` when every check is pass/fail."""
    checks = [*suite.checks, *(c for case in suite.cases for c in case.expect)]
    return "score" if any(c.kind in SCORED_KINDS for c in checks) else "passed"


def outcome_kind(suite: Suite, sides: Sides) -> Outcome:
    """Pass/fail when every check is and each side has one unit per case, else scores (a
    case's outcome is then the mean over its variants)."""
    single = all(len(units) == 1 for units in sides.b_units.values())
    return "pass_fail" if single and _column(suite) == "passed" else "score"


def _values(outcomes: pd.DataFrame, column: str) -> dict[Unit, float]:
    """Each unit's outcome: 1/0 for pass/fail, else its samples' mean score."""
    series = outcomes[column].astype(float).fillna(0.0)
    keys = outcomes.index.to_list()
    return {(str(k[0]), str(k[1]), str(k[2])): float(v) for k, v in zip(keys, series, strict=True)}


def case_values(frame: pd.DataFrame, suite: Suite) -> dict[Unit, float]:
    from evalkit.analysis.compare import case_outcomes

    return _values(case_outcomes(frame), _column(suite))


def paired(
    cases: Sequence[int], sides: Sides, values: dict[Unit, float], partial: bool
) -> tuple[list[float], list[float]]:
    """The round's paired outcomes in the seeded order; after `--max-cost` stopped a round
    midway, only its first cases in that order that both sides have whole (so what is fed is
    still a prefix of the one random order)."""
    a_known = sides.baseline if sides.baseline is not None else values
    a: list[float] = []
    b: list[float] = []
    for index in cases:
        left = [a_known.get(u) for u in sides.a_units[index]]
        right = [values.get(u) for u in sides.b_units[index]]
        if None in left or None in right:
            if partial:
                break
            continue  # a case neither side could answer: nothing to pair
        a.append(sum(x for x in left if x is not None) / len(left))
        b.append(sum(y for y in right if y is not None) / len(right))
    return a, b
