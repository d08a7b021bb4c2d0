"""Deciding a suite's gate on a run: each rule, for each model (and variant) it covers.

A rule is judged on case outcomes (`compare.case_outcomes`: a case passes when at least half
of its kept samples pass), since cases, not resamples, are the independent units:

- `pass_rate`: holds when the observed share of passing cases is at least `min` (the point
  estimate decides, so a gate does not fail on a rate it meets; the 95% Wilson interval is
  shown, so a reader sees how far a rerun could move it).
- `better` (side beats than): with no margin, holds when the side passes more cases and the
  exact McNemar test on the cases where they disagree gives p < α; with a margin, when the
  95% paired bootstrap interval of the difference lies above it.
- `not_worse`: fails only on evidence; with no margin, when the side passes fewer cases and
  McNemar gives p < α; with a margin, when the interval lies wholly below −margin.

A comparison also says the smallest difference it could have detected (`stats.
paired_min_detectable_difference`): a gate that could not have seen a 10-point drop says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from evalkit.analysis.compare import KEY, case_outcomes, detectable_text, paired_detectable
from evalkit.analysis.stats import mcnemar_exact, paired_bootstrap, wilson

if TYPE_CHECKING:
    import pandas as pd

    from evalkit.execution.settings import RunResult
    from evalkit.suite.gates import Comparison, GateRule, PassRate


@dataclass(frozen=True)
class GateOutcome:
    """One rule judged for one model (and variant): whether it held, and what decided it."""

    gate: str  # the rule in --gate syntax
    kind: str  # pass_rate, better, not_worse
    subject: str  # what was judged: "model [variant]", or "few-shot vs zero-shot (model)"
    held: bool
    cases: int
    observed: float  # the pass rate, or the mean difference side − than
    low: float  # the Wilson interval of the rate, or the paired interval of the difference
    high: float
    p_value: float | None = None  # comparisons: exact McNemar
    min_detectable: float | None = None  # comparisons: at alpha, 80% power
    reason: str = ""  # the sentence that says why

    def as_dict(self) -> dict[str, Any]:
        """For the manifest (NaN written as null)."""
        return {
            k: None if isinstance(v, float) and math.isnan(v) else v
            for k, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateOutcome:
        """Read back from a manifest (null numbers become NaN)."""
        fields = {**data}
        for name in ("observed", "low", "high"):
            fields[name] = math.nan if fields.get(name) is None else float(fields[name])
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


def recorded_gates(manifest: dict[str, Any]) -> list[GateOutcome] | None:
    """The gate outcomes a run's manifest holds; None when the run was not judged by one."""
    gate = manifest.get("gate") or {}
    if gate.get("held") is None:
        return None
    return [GateOutcome.from_dict(o) for o in gate.get("outcomes") or []]


def judge_gates(
    rules: list[GateRule], frame: pd.DataFrame, alpha: float = 0.05
) -> list[GateOutcome]:
    """Every rule's outcomes on a run's DataFrame (as `load_run` returns it), in order."""
    outcomes = case_outcomes(frame)
    out: list[GateOutcome] = []
    for rule in rules:
        if rule.pass_rate is not None:
            out += _pass_rate(rule.text, rule.pass_rate, frame, outcomes)
        else:
            comparison = rule.comparison
            assert comparison is not None
            out += _comparisons(rule.text, rule.kind, comparison, outcomes, alpha)
    return out


def judge_merged(frame: pd.DataFrame, manifest: dict[str, Any]) -> list[GateOutcome]:
    """A merged run judged by the gate its shards recorded (a shard decides nothing alone:
    its cases are a part of the suite); the outcomes go into `manifest["gate"]`. [] when the
    shards recorded no gate."""
    from evalkit.suite.gates import parse_gate

    gate = manifest.get("gate") or {}
    texts = gate.get("rules") or []
    if not texts:
        return []
    variants = {str(v) for v in frame["variant"].dropna().unique() if v}
    rules = [parse_gate(str(text), variants) for text in texts]
    outcomes = judge_gates(rules, frame, float(gate.get("alpha") or 0.05))
    gate.update(held=all(o.held for o in outcomes), outcomes=[o.as_dict() for o in outcomes])
    manifest["gate"] = gate
    return outcomes


def judge_run(result: RunResult, rules: list[GateRule], alpha: float = 0.05) -> RunResult:
    """`result` with its gate's outcomes, which then decide its exit code; a run that did not
    complete is not judged (it exits 3 either way)."""
    if result.status != "complete":
        return result
    return replace(result, gates=judge_gates(rules, result.frame, alpha))


def _label(model: object, variant: object) -> str:
    return f"{model} [{variant}]" if variant else str(model)


def _pass_rate(
    text: str, rule: PassRate, frame: pd.DataFrame, outcomes: pd.DataFrame
) -> list[GateOutcome]:
    passed = outcomes["passed"]
    if rule.check is not None:
        passed = _check_outcomes(frame, rule.check)
    out = []
    for model, variant in _groups(frame):
        if (rule.model is not None and model != rule.model) or (
            rule.variant is not None and variant != rule.variant
        ):
            continue
        mine = _part(passed, (variant, model), ("variant", "model"))
        cases, good = len(mine), int(mine.sum())
        rate = good / cases if cases else math.nan
        low, high = wilson(good, cases)
        held = bool(cases) and rate >= rule.min
        what = f"check {rule.check}: " if rule.check else ""
        reason = (
            f"{what}{rate:.1%} of {cases} cases pass ({good}/{cases}, 95% Wilson interval "
            f"{low:.1%} to {high:.1%}), {'at least' if held else 'below'} {rule.min:.1%}"
            if cases
            else f"{what}no cases to judge"
        )
        subject = _label(model, variant)
        out.append(
            GateOutcome(text, "pass_rate", subject, held, cases, rate, low, high, reason=reason)
        )
    return out


def _check_outcomes(frame: pd.DataFrame, check: str) -> pd.Series:
    """Per case × variant × model: whether at least half its kept samples pass `check`
    (cases the check does not apply to are left out)."""
    import pandas as pd

    column = f"check.{check}"
    if column not in frame.columns:  # no sample was scored (every request failed)
        return pd.Series([], dtype=bool, index=pd.MultiIndex.from_tuples([], names=KEY))
    kept = frame[frame["selected"].fillna(True).astype(bool) & frame[column].notna()]
    ok = kept.assign(ok=kept[column].astype(float))
    return ok.groupby(KEY, sort=False, observed=True)["ok"].mean() >= 0.5


def _part(series: pd.Series, key: object, levels: object) -> pd.Series:
    """The rows of `series` at `key` of `levels`; none when it has no such rows."""
    try:
        return series.xs(key, level=levels)
    except KeyError:
        return series.iloc[0:0]


def _groups(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(model, variant) in the order the run has them."""
    pairs = frame[["model", "variant"]].drop_duplicates().itertuples(index=False)
    return [(str(model), str(variant)) for model, variant in pairs]


def _comparisons(
    text: str, kind: str, rule: Comparison, outcomes: pd.DataFrame, alpha: float
) -> list[GateOutcome]:
    """One outcome per group of the other dimension: per model for variants, and back."""
    passed = outcomes["passed"]
    other = "model" if rule.dimension == "variant" else "variant"
    out = []
    for group in dict.fromkeys(passed.index.get_level_values(other)):
        mine = _part(passed, group, other)
        side = _part(mine, rule.side, rule.dimension)
        than = _part(mine, rule.than, rule.dimension)
        common = side.index.intersection(than.index)
        b, a = side.loc[common].astype(float).tolist(), than.loc[common].astype(float).tolist()
        subject = f"{rule.side} vs {rule.than}" + (f" ({group})" if group else "")
        out.append(_compared(text, kind, rule, subject, a, b, alpha))
    return out


def _compared(
    text: str,
    kind: str,
    rule: Comparison,
    subject: str,
    a: list[float],
    b: list[float],
    alpha: float,
) -> GateOutcome:
    """One comparison of paired pass/fail outcomes: `b` (the side) against `a` (than)."""
    n = len(a)
    only_b = sum(y > x for x, y in zip(a, b, strict=True))
    only_a = sum(x > y for x, y in zip(a, b, strict=True))
    delta, low, high = paired_bootstrap(a, b)
    p = mcnemar_exact(only_b, only_a)
    mdd = paired_detectable(n, only_a + only_b, alpha)
    if not n:
        return GateOutcome(
            text, kind, subject, False, 0, delta, low, high, p, mdd, "no paired cases"
        )
    significant = f"McNemar p = {p:.3g} {'<' if p < alpha else '>='} {alpha:g}"
    points = f"{rule.margin * 100:g} points"
    if kind == "better" and not rule.margin:
        held = delta > 0 and p < alpha
        why = f"{'ahead' if delta > 0 else 'not ahead'}, {significant}"
    elif kind == "better":
        held = low > rule.margin
        why = f"the interval's low end is {'above' if held else 'not above'} +{points}"
    elif not rule.margin:
        held = not (delta < 0 and p < alpha)
        why = f"{'not shown worse' if held else 'worse'}, {significant}"
    else:
        held = high >= -rule.margin
        why = f"the interval's high end is {'not below' if held else 'below'} -{points}"
    reason = (
        f"{rule.side} {delta * 100:+.1f} points against {rule.than} over {n} paired cases "
        f"({only_b} pass only with {rule.side}, {only_a} only with {rule.than}; 95% interval "
        f"{low * 100:+.1f} to {high * 100:+.1f}); {why}; {detectable_text(n, mdd, alpha)}"
    )
    return GateOutcome(text, kind, subject, held, n, delta, low, high, p, mdd, reason)
