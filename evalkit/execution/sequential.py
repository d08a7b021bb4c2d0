"""`run --sequential`: send the cases in rounds, stop as soon as the comparison is decided.

The statistics are `analysis/sequential.py`'s anytime-valid tests (docs/sequential.md); this
module drives them. The cases go out in one seeded random order (the cached ones first: they
are free), in rounds of growing size (`round_sizes`). Round k is one more session of the same
run directory, as `--resume` runs one: its planner plans only the round's cases, its answers
are appended to the journal, which holds the earlier rounds', and `--max-cost` counts what
every round spent. After each round the paired outcomes of its cases are fed to a
`SequentialComparison`; once it decides, nothing more is sent. The manifest's `sequential`
record says what was decided, after how many cases, with which interval, what it cost and
(an estimate) what it saved; cases never sent are listed there as not sent because of the
decision, never as error rows.

Two questions: a gate against a finished baseline run (its rows are side A) or a choice
between the run's two models; `sequential_sides.py` says who is compared and how a case's
paired outcome is read.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evalkit.analysis.sequential import (
    Outcome,
    SequentialComparison,
    SequentialDecision,
    round_sizes,
)
from evalkit.errors import InputError, UsageError
from evalkit.execution.execute import execute
from evalkit.execution.prepare import Prepared, prepare_run, run_manifest
from evalkit.execution.resume import ResumePlan
from evalkit.execution.sequential_sides import (
    Sides,
    case_values,
    outcome_kind,
    paired,
    who_is_compared,
)
from evalkit.execution.settings import RunResult, RunSettings
from evalkit.planning.planner import Planner
from evalkit.records.fold import Prior, fold, recorded_spent
from evalkit.records.store import JOURNAL, RunDir, new_run_id, read_journal
from evalkit.suite.spec import Suite

DEFAULT_ORDER_SEED = 16  # a fixed default: the same suite goes out in the same order
NOT_SENT = "not sent because of the decision"
SHARD_REFUSAL = (
    "--sequential cannot run with --shard (or EVALKIT_SHARD): a shard must not decide alone, "
    "since several shards testing on their own raise the false-alarm rate and a shard is not "
    "a random sample of the suite (docs/sequential.md, 'Shards decide nothing alone'); run "
    "--sequential on the whole suite"
)


@dataclass(frozen=True)
class SequentialSettings:
    """What `--sequential` was asked: a gate against `baseline`, else a choice of two models."""

    baseline: Path | None = None
    alpha: float = 0.05
    margin: float | None = None  # δ: stop once shown no worse (gate) or not better (choice)
    order_seed: int = DEFAULT_ORDER_SEED
    max_cases: int | None = None  # stop undecided ("inconclusive") after this many cases
    first: int = 20  # the first round's cases; each later round is `growth` times larger
    growth: float = 1.5


def run_sequential(suite: Suite, settings: RunSettings, run: RunDir | None = None) -> RunResult:
    """Send `suite` in rounds until the comparison `settings.sequential` asks for is decided.

    `run`: an unfinished sequential run to go on with (its journal is reused, its order and
    rounds replayed); else a new run directory is created.
    """
    asked = settings.sequential
    if asked is None:
        raise ValueError("run_sequential needs settings.sequential")
    if settings.shard is not None:
        raise UsageError(SHARD_REFUSAL)
    prepared = prepare_run(suite, settings)
    sides = who_is_compared(suite, prepared, asked)
    outcome = outcome_kind(suite, sides)
    order, cached = _order(suite, prepared, settings, asked, sides)
    comparison = SequentialComparison(
        len(order), sides.mode, outcome, asked.alpha, asked.margin, sides.dearer
    )
    if run is None:
        manifest = run_manifest(suite, prepared, settings)
        run = RunDir.create(Path(settings.out), new_run_id(suite.name or "suite"), manifest)
    resumed = (run.path / JOURNAL).is_file()  # an unfinished run: what it holds is reused
    record = _record(suite, asked, sides, outcome, order, cached)
    run.manifest.update(sequential=record, planned={t.label: 0 for t in prepared.targets})
    if settings.on_start is not None:
        settings.on_start(run.path)
    limit = min(len(order), asked.max_cases or len(order))
    sent, result, totals = 0, None, _Totals()
    for size in round_sizes(len(order), asked.first, asked.growth):
        if sent >= limit:
            break
        fresh = order[sent : min(sent + size, limit)]
        sent += len(fresh)
        result = _round(suite, prepared, settings, run, sorted(fresh), resumed)
        totals.add(result, run.manifest.get("counts") or {})
        if result.status not in ("complete", "budget"):
            break
        values = case_values(result.frame, suite)
        a, b = paired(fresh, sides, values, partial=result.status == "budget")
        decision = comparison.update(a, b)
        record["rounds"].append(
            {"cases": len(a), "sent": decision.cases, "verdict": decision.verdict}
            | _interval(decision)
        )
        if decision.decided or result.status == "budget":
            break
    if result is None:
        raise InputError(f"{suite.source}: the suite has no cases to compare")
    return _finished(run, totals.into(run, result), comparison, record, suite)


def _round(
    suite: Suite,
    prepared: Prepared,
    settings: RunSettings,
    run: RunDir,
    cases: list[int],
    resumed: bool,
) -> RunResult:
    """One round, as one more session of the run directory: only its cases are planned (the
    journal keeps the earlier rounds'), `--max-cost` counts what every round spent, and an
    unfinished run reuses what it journaled, as `--resume` does."""
    planner = Planner(suite, prepared.planner.targets, prepared.planner.samples, cases=cases)
    for target in prepared.targets:
        run.manifest["planned"][target.label] += planner.requests_per_model
    folded = fold(read_journal(run.path, warn=False)) if _journal(run) else None
    plan = None
    if folded is not None:
        spent = max(folded.spent, recorded_spent(run.manifest))
        plan = ResumePlan(folded.prior if resumed else Prior(), spent=spent)
    run.manifest.update(status="running", finished_at=None)
    run.write_manifest()
    return asyncio.run(execute(suite, replace(prepared, planner=planner), settings, run, plan))


def _order(
    suite: Suite,
    prepared: Prepared,
    settings: RunSettings,
    asked: SequentialSettings,
    sides: Sides,
) -> tuple[list[int], int]:
    """The cases in the order they are sent, and how many of them lead because the cache
    answers them already: a seeded permutation, then (stably) the cases whose every
    first-round request is cached first, since they cost nothing. Not with a margin: which
    cases are cached can depend on their outcome (a prompt change leaves the unchanged cases
    cached), and the margin's interval is only valid for a random order (docs/sequential.md).
    A gate leaves out the cases its baseline has no rows for (nothing to pair them with)."""
    cases = list(range(len(suite.cases)))
    if sides.baseline is not None:
        known = sides.baseline
        cases = [i for i in cases if all(u in known for u in sides.a_units[i])]
        if not cases:
            raise InputError(
                f"the baseline {asked.baseline} has no rows for this suite's cases with these "
                f"models ({', '.join(sorted({u[2] for us in sides.b_units.values() for u in us}))})"
                ": gate against a run of the same suite and models"
            )
    random.Random(asked.order_seed).shuffle(cases)
    if not settings.cache or settings.refresh or asked.margin is not None:
        return cases, 0  # a margin rests on the interval, whose guarantee needs the random order
    free = _cached_cases(prepared, settings)
    first = [i for i in cases if i in free]
    return first + [i for i in cases if i not in free], len(first)


def _cached_cases(prepared: Prepared, settings: RunSettings) -> set[int]:
    """The cases whose every first-round request, for every model, the cache answers."""
    from evalkit.records.cache import Cache, cache_dir

    cache = Cache(cache_dir(settings.cache_dir))
    try:
        return {
            planned.index
            for planned in prepared.planner.walk()
            if all(
                cache.get(request.key) is not None
                for group in planned.groups
                for request in group.first_round()
            )
        }
    finally:
        cache.close()


def _journal(run: RunDir) -> bool:
    path = run.path / JOURNAL
    return path.is_file() and path.stat().st_size > 0


class _Totals:
    """What every round's session sent, summed: each session counts only its own."""

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}
        self.per_model: dict[str, dict[str, Any]] = {}

    def add(self, result: RunResult, counts: dict[str, Any]) -> None:
        for key, value in counts.items():
            if key in ("requests", "errors", "reused", "cached"):
                self.counts[key] = self.counts.get(key, 0) + value
        for label, stats in result.per_model.items():
            mine = self.per_model.setdefault(label, {})
            for key, value in stats.items():
                mine[key] = mine.get(key, 0) + value

    def into(self, run: RunDir, result: RunResult) -> RunResult:
        """The last session's result and manifest counts, with every round's sums."""
        run.manifest["counts"] = {**(run.manifest.get("counts") or {}), **self.counts}
        run.manifest["per_model"] = self.per_model
        requests, errors = int(self.counts["requests"]), int(self.counts["errors"])
        return replace(result, requests=requests, errors=errors, per_model=self.per_model)


def _record(
    suite: Suite,
    asked: SequentialSettings,
    sides: Sides,
    outcome: Outcome,
    order: list[int],
    cached: int,
) -> dict[str, Any]:
    """The manifest's `sequential` record as a run starts; `_finished` adds the decision."""
    return {
        "mode": sides.mode,
        "a": sides.a_name,
        "b": sides.b_name,
        "baseline": str(asked.baseline) if asked.baseline is not None else None,
        "dearer": sides.dearer if asked.margin is not None else None,
        "outcome": outcome,
        "alpha": asked.alpha,
        "margin": asked.margin,
        "order_seed": asked.order_seed,
        "max_cases": asked.max_cases,
        "first_round": asked.first,
        "growth": asked.growth,
        "suite_cases": len(suite.cases),
        "compared_cases": len(order),  # a gate's: the cases its baseline has
        "cached_first": cached,
        "order": [suite.cases[i].key for i in order],
        "rounds": [],
    }


def _interval(decision: SequentialDecision) -> dict[str, float | None]:
    """The mean difference (None before any case: the manifest is strict JSON) and its
    interval."""
    mean = None if math.isnan(decision.mean) else decision.mean
    return {"mean": mean, "low": decision.low, "high": decision.high}


def _finished(
    run: RunDir,
    result: RunResult,
    comparison: SequentialComparison,
    record: dict[str, Any],
    suite: Suite,
) -> RunResult:
    """The decision (or "inconclusive"), the cases not sent and the cost saved (estimated
    at the mean cost per case sent), into the manifest and the result."""
    decision = comparison.decision
    frame = result.frame
    sent = set(frame["case_id"].astype(str)) if len(frame) else set()
    unsent = [case.key for case in suite.cases if case.key not in sent]
    spent = float(frame["cost_usd"].fillna(0).sum()) if sent else 0.0
    per_case = spent / len(sent) if sent else 0.0
    if decision.decided:
        stopped = "decided"
    elif result.status in ("complete", "budget"):
        stopped = "max-cost" if result.status == "budget" else "max-cases"
    else:
        stopped = result.status
    record.update(
        verdict=decision.verdict if decision.decided else "inconclusive",
        stopped=stopped,
        cases_sent=len(sent),
        cases_used=decision.cases,
        log_e_a=decision.log_e_a,
        log_e_b=decision.log_e_b,
        **_interval(decision),
        not_sent={"reason": NOT_SENT, "cases": unsent},
        cost={
            "spent_usd": spent,
            "per_case_usd": per_case,
            "saved_usd": per_case * len(unsent),
            "saved_is_estimate": "the cases not sent, at the mean cost per case sent",
        },
    )
    run.manifest["sequential"] = record
    run.write_manifest()
    return replace(result, sequential=record)


def resumed_sequential(manifest: dict[str, Any], settings: RunSettings) -> RunSettings:
    """A resumed sequential run's settings: the comparison its manifest recorded."""
    record = manifest["sequential"]
    baseline = record.get("baseline")
    asked = SequentialSettings(
        baseline=Path(baseline) if baseline else None,
        alpha=record["alpha"],
        margin=record.get("margin"),
        order_seed=record["order_seed"],
        max_cases=record.get("max_cases"),
        first=record.get("first_round", SequentialSettings.first),
        growth=record.get("growth", SequentialSettings.growth),
    )
    return replace(settings, sequential=asked)
