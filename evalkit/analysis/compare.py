"""Model against model (one run) and baseline against candidate (two runs), with a verdict.

Both compare paired outcomes: the same case, variant and model. A case's outcome is its
kept samples' pass rate (pass when at least half pass) and mean score, so resampled suites
compare the way they are scored.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.analysis.stats import (
    holm,
    mcnemar_exact,
    paired_bootstrap,
    paired_min_detectable_difference,
    wilson,
)
from evalkit.analysis.summary import summarize
from evalkit.errors import InputError, exit_code

if TYPE_CHECKING:
    import pandas as pd

    from evalkit.analysis.gates import GateOutcome
    from evalkit.execution.settings import RunResult

KEY = ["case_id", "variant", "model"]


def detectable_text(cases: int, min_detectable: float, alpha: float = 0.05) -> str:
    """What a comparison of `cases` paired cases could have seen, said plainly."""
    if not cases or math.isnan(min_detectable):
        return "with no paired cases this comparison could detect nothing"
    if min_detectable >= 1:
        return f"with {cases} cases this comparison could not detect any difference"
    return (
        f"with {cases} cases this comparison could only detect a difference of "
        f"{min_detectable * 100:.0f} points or more (alpha {alpha:g}, 80% power)"
    )


def paired_detectable(cases: int, discordant: int, alpha: float = 0.05) -> float:
    """The minimum detectable difference of a pass/fail comparison of `cases` pairs, of
    which `discordant` disagree (`stats.paired_min_detectable_difference`)."""
    if not cases:
        return math.nan
    return paired_min_detectable_difference(cases, discordance=discordant / cases, alpha=alpha)


def case_outcomes(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per case × variant × model: passed, score, output, reasons, must_pass."""
    kept = frame[frame["selected"].fillna(True).astype(bool)].copy()
    kept["passed_f"] = kept["passed"].fillna(False).astype(float)
    grouped = kept.groupby(KEY, sort=False, observed=True)
    out = grouped.agg(
        pass_rate=("passed_f", "mean"),
        score=("score", "mean"),
        output=("output", "first"),
        check_reasons=("check_reasons", "first"),
        must_pass=("must_pass", "max"),
        error=("error", "first"),
    )
    out["passed"] = out["pass_rate"] >= 0.5
    return out


@dataclass
class Flip:
    case_id: str
    variant: str
    model: str
    base_output: str | None
    new_output: str | None
    reasons: str | None  # why the failing side failed (JSON of check reasons)
    must_pass: bool


@dataclass
class RunComparison:
    """What changed between two runs of a suite, and whether it is a regression."""

    base_run: str
    new_run: str
    suite: str
    policy: str
    alpha: float
    cases: int
    base_pass_rate: float
    new_pass_rate: float
    delta: float
    delta_low: float
    delta_high: float
    p_value: float
    min_detectable: float
    regressions: list[Flip]
    fixes: list[Flip]
    only_in_base: list[tuple[str, str, str]]
    only_in_new: list[tuple[str, str, str]]
    per_model: list[dict[str, Any]]
    failed: bool
    reasons: list[str] = field(default_factory=list)
    base_gates: list[GateOutcome] | None = None  # each run's own gate, as its manifest says
    new_gates: list[GateOutcome] | None = None
    sequential: dict[str, Any] | None = None  # the new run's `--sequential` decision, if any

    @property
    def verdict(self) -> str:
        return "regression" if self.failed else "no regression"

    @property
    def exit_code(self) -> int:
        """1: a regression by the policy (the CI gate fails); 0: none."""
        return exit_code(gates=[not self.failed])


def parse_policy(text: str) -> tuple[str, float]:
    """`any`, `significant` or `threshold:X` (X a pass-rate drop, 0..1)."""
    if text in ("any", "significant"):
        return text, 0.0
    if text.startswith("threshold:"):
        try:
            value = float(text.split(":", 1)[1])
        except ValueError:
            value = -1.0
        if 0 <= value <= 1:
            return "threshold", value
    raise InputError(f"--fail-on {text!r}: use any, significant or threshold:X (X between 0 and 1)")


def compare_runs(
    base: pd.DataFrame | str | Path,
    new: pd.DataFrame | str | Path,
    fail_on: str = "significant",
    alpha: float = 0.05,
) -> RunComparison:
    """Flipped cases, the pass-rate change with its interval and McNemar p, and the verdict.

    `base` and `new` are run directories, or their DataFrames as `load_run` returns them.
    """
    from evalkit.records.frame import load_run
    from evalkit.records.store import read_manifest

    base_gates, new_gates = _gates_of(base), _gates_of(new)
    decided = read_manifest(Path(new)).get("sequential") if isinstance(new, str | Path) else None
    base = load_run(base) if isinstance(base, str | Path) else base
    new = load_run(new) if isinstance(new, str | Path) else new
    policy, threshold = parse_policy(fail_on)
    base_suite, new_suite = _one(base, "suite"), _one(new, "suite")
    if base_suite != new_suite:
        raise InputError(
            f"these runs are of different suites ({base_suite!r} and {new_suite!r}); "
            "compare runs of the same suite"
        )
    a, b = case_outcomes(base), case_outcomes(new)
    both = a.index.intersection(b.index)
    only_base = [tuple(map(str, k)) for k in a.index.difference(b.index)]
    only_new = [tuple(map(str, k)) for k in b.index.difference(a.index)]
    a, b = a.loc[both], b.loc[both]
    joined = a.add_suffix("_base").join(b.add_suffix("_new"))
    regressions = _flips(joined[joined["passed_base"] & ~joined["passed_new"]], failing="new")
    fixes = _flips(joined[~joined["passed_base"] & joined["passed_new"]], failing="base")
    n = len(both)
    base_rate = float(a["passed"].mean()) if n else math.nan
    new_rate = float(b["passed"].mean()) if n else math.nan
    delta, low, high = paired_bootstrap(
        a["passed"].astype(float).tolist(), b["passed"].astype(float).tolist()
    )
    p = mcnemar_exact(len(fixes), len(regressions))
    reasons = []
    if policy == "any" and regressions:
        reasons.append(f"{len(regressions)} case(s) went from pass to fail")
    if policy == "significant" and n and delta < 0 and p < alpha:
        reasons.append(f"pass rate fell {-delta:.1%} (McNemar p = {p:.3g} < {alpha:g})")
    if policy == "threshold" and n and -delta > threshold:
        reasons.append(f"pass rate fell {-delta:.1%}, more than the threshold {threshold:.1%}")
    must = [r for r in regressions if r.must_pass]
    if must:
        names = ", ".join(f"{r.case_id} ({r.model})" for r in must[:5])
        reasons.append(f"{len(must)} must_pass case(s) regressed: {names}")
    return RunComparison(
        base_run=_one(base, "run_id"),
        new_run=_one(new, "run_id"),
        suite=str(new_suite),
        policy=fail_on,
        alpha=alpha,
        cases=n,
        base_pass_rate=base_rate,
        new_pass_rate=new_rate,
        delta=delta,
        delta_low=low,
        delta_high=high,
        p_value=p,
        min_detectable=paired_detectable(n, len(regressions) + len(fixes), alpha),
        regressions=regressions,
        fixes=fixes,
        only_in_base=only_base,  # type: ignore[arg-type]
        only_in_new=only_new,  # type: ignore[arg-type]
        per_model=_per_model(a, b),
        failed=bool(reasons),
        reasons=reasons,
        base_gates=base_gates,
        new_gates=new_gates,
        sequential=decided,
    )


def _gates_of(run: pd.DataFrame | str | Path) -> list[GateOutcome] | None:
    """A run directory's recorded gate outcomes (a DataFrame carries none)."""
    from evalkit.analysis.gates import recorded_gates
    from evalkit.records.store import read_manifest

    return recorded_gates(read_manifest(Path(run))) if isinstance(run, str | Path) else None


@dataclass(frozen=True, eq=False)
class Gate:
    """A baseline run and the policy a new run is judged by (`run --baseline`)."""

    baseline: pd.DataFrame
    fail_on: str = "significant"
    alpha: float = 0.05

    @classmethod
    def load(cls, run_dir: str | Path, fail_on: str = "significant", alpha: float = 0.05) -> Gate:
        """Check the policy and read the baseline now, so bad input fails before a run."""
        from evalkit.records.frame import load_run

        parse_policy(fail_on)
        return cls(load_run(run_dir), fail_on, alpha)

    def judge(self, result: RunResult) -> RunResult:
        """`result` with its comparison with the baseline, which then decides its exit code;
        a run that did not complete is not compared (it exits 3 either way)."""
        if result.status != "complete":
            return result
        return replace(
            result,
            comparison=compare_runs(self.baseline, result.frame, self.fail_on, self.alpha),
        )


def _per_model(a: pd.DataFrame, b: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for model in sorted(set(a.index.get_level_values("model"))):
        left = a.xs(model, level="model")
        right = b.xs(model, level="model")
        worse = int((left["passed"] & ~right["passed"]).sum())
        better = int((~left["passed"] & right["passed"]).sum())
        rows.append(
            {
                "model": model,
                "cases": len(left),
                "base_pass_rate": float(left["passed"].mean()),
                "new_pass_rate": float(right["passed"].mean()),
                "regressions": worse,
                "fixes": better,
                "p_value": mcnemar_exact(better, worse),
            }
        )
    return rows


def _flips(rows: pd.DataFrame, failing: str) -> list[Flip]:
    """Flipped cases with both outputs and why the failing side failed."""
    out = []
    for key, row in zip(rows.index, rows.to_dict("records"), strict=True):
        case_id, variant, model = key
        out.append(
            Flip(
                str(case_id),
                str(variant),
                str(model),
                _text(row["output_base"]),
                _text(row["output_new"]),
                _text(row[f"check_reasons_{failing}"]) or _text(row[f"error_{failing}"]),
                bool(row["must_pass_base"]) or bool(row["must_pass_new"]),
            )
        )
    return out


def _text(value: Any) -> str | None:
    import pandas as pd

    return None if value is None or pd.isna(value) else str(value)


def _one(frame: pd.DataFrame, column: str) -> str:
    values = frame[column].dropna().unique()
    return str(values[0]) if len(values) else ""


@dataclass
class ModelComparison:
    """Several models (and variants) of one run, side by side, with paired tests."""

    summary: pd.DataFrame  # summarize() plus intervals, cost per case, finish breakdown
    pairs: pd.DataFrame  # every pair: delta, interval, p, Holm-adjusted p
    frontier: list[str]  # labels not dominated on (cost per case, pass rate)


def compare_models(frame: pd.DataFrame, alpha: float = 0.05) -> ModelComparison:
    import pandas as pd

    summary = summarize(frame)
    outcomes = case_outcomes(frame)
    labels, lows, highs, per_case = [], [], [], []
    for row in summary.to_dict("records"):
        label = f"{row['model']}" + (f" [{row['variant']}]" if row["variant"] else "")
        labels.append(label)
        cases = outcomes.xs((row["variant"], row["model"]), level=("variant", "model"))
        low, high = wilson(int(cases["passed"].sum()), len(cases))
        lows.append(low)
        highs.append(high)
        per_case.append(row["cost_usd"] / len(cases) if len(cases) else math.nan)
    summary.insert(0, "label", labels)
    summary["pass_low"], summary["pass_high"] = lows, highs
    summary["cost_per_case_usd"] = per_case
    breakdown: list[dict[str, int]] = []
    for r in summary.to_dict("records"):
        mine = frame[(frame["model"] == r["model"]) & (frame["variant"] == r["variant"])]
        counts = mine["finish_reason"].fillna("error").value_counts()
        breakdown.append({str(k): int(v) for k, v in counts.items()})
    summary["finish_reasons"] = pd.Series(breakdown, dtype=object)
    pairs = []
    rows: list[dict[str, Any]] = [
        {str(k): v for k, v in r.items()} for r in summary.to_dict("records")
    ]
    for left, right in itertools.combinations(rows, 2):
        x = outcomes.xs((left["variant"], left["model"]), level=("variant", "model"))
        y = outcomes.xs((right["variant"], right["model"]), level=("variant", "model"))
        common = x.index.intersection(y.index)
        x, y = x.loc[common], y.loc[common]
        only_x = int((x["passed"] & ~y["passed"]).sum())
        only_y = int((~x["passed"] & y["passed"]).sum())
        delta, low, high = paired_bootstrap(
            x["passed"].astype(float).tolist(), y["passed"].astype(float).tolist()
        )
        pairs.append(
            {
                "a": left["label"],
                "b": right["label"],
                "cases": len(common),
                "a_pass_rate": float(x["passed"].mean()) if len(common) else math.nan,
                "b_pass_rate": float(y["passed"].mean()) if len(common) else math.nan,
                "delta": delta,
                "delta_low": low,
                "delta_high": high,
                "only_a": only_x,
                "only_b": only_y,
                "p_value": mcnemar_exact(only_x, only_y),
                "min_detectable": paired_detectable(len(common), only_x + only_y, alpha),
            }
        )
    adjusted = holm([p["p_value"] for p in pairs])
    for pair, p_holm in zip(pairs, adjusted, strict=True):
        pair["p_holm"] = p_holm
        pair["significant"] = p_holm < alpha
    return ModelComparison(summary, pd.DataFrame(pairs), _frontier(rows))


def _frontier(rows: list[dict[str, Any]]) -> list[str]:
    """Labels no other model beats on both cost per case (lower) and pass rate (higher)."""
    out = []
    for row in rows:
        if row["error_rate"] >= 1.0:
            continue  # a model that answered nothing costs nothing: not a choice
        dominated = any(
            other is not row
            and other["cost_per_case_usd"] <= row["cost_per_case_usd"]
            and other["pass_rate"] >= row["pass_rate"]
            and (
                other["cost_per_case_usd"] < row["cost_per_case_usd"]
                or other["pass_rate"] > row["pass_rate"]
            )
            for other in rows
        )
        if not dominated:
            out.append(row["label"])
    return out
