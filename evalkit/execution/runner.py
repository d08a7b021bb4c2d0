"""Running a suite: start a run, resume one, or estimate one (the public entry points).

`prepare.py` checks everything that can fail before a request is sent, `execute.py` sends
and finishes; these functions put them together around a run directory.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from evalkit.analysis.gates import judge_run
from evalkit.errors import InputError, RunError
from evalkit.execution.execute import execute
from evalkit.execution.prepare import prepare_run, run_manifest, validated_targets
from evalkit.execution.resume import plan_resume, unfinished_runs
from evalkit.execution.settings import RunResult, RunSettings
from evalkit.planning.estimate import DryRun, estimate, overflow_problems
from evalkit.planning.shard import Shard
from evalkit.records.store import RunDir, file_sha256, new_run_id, now_iso, read_manifest
from evalkit.suite.gates import GateRule, parse_gate
from evalkit.suite.spec import Suite


def run_suite(suite: Suite, settings: RunSettings | None = None) -> RunResult:
    """Send every request of `suite` and write a run directory (see store.py).

    With `settings.offer_resume`, the latest unfinished run of the same suite and models is
    offered first, and resumed instead if the answer is yes.
    """
    settings = settings or RunSettings()
    suite = gated_suite(suite, settings.gates)
    offer = settings.offer_resume
    if offer is not None:
        unfinished = _unfinished_run(suite, settings)
        if unfinished is not None and offer(unfinished):
            return resume_run(unfinished, settings)
    if settings.sequential is not None:  # rounds until decided (sequential.py)
        from evalkit.execution.sequential import run_sequential  # numpy: only when asked

        return run_sequential(suite, settings)
    prepared = prepare_run(suite, settings)
    manifest = run_manifest(suite, prepared, settings)
    manifest["options"].update(gates=settings.gates, alpha=settings.alpha)
    manifest["gate"] = gate_record(suite.gate, settings)
    run = RunDir.create(Path(settings.out), new_run_id(suite.name or "suite"), manifest)
    if settings.on_start is not None:
        settings.on_start(run.path)
    result = asyncio.run(execute(suite, prepared, settings, run, None))
    return _judged(result, suite, settings, run)


def resume_run(run_dir: Path, settings: RunSettings | None = None) -> RunResult:
    """Continue a killed or interrupted run: what finished is reused, the rest is sent.

    The manifest holds the suite path and the options; `settings` may only add cache and
    progress preferences. A suite edited since is compared case by case (see resume.py).
    """
    from evalkit.suite.load import load_suite

    manifest = read_manifest(run_dir)
    if manifest.get("status") == "complete":
        raise InputError(f"{run_dir}: this run is complete; there is nothing to resume")
    options = manifest.get("options", {})
    base = settings or RunSettings()
    shard = _kept_shard(run_dir, manifest, base.shard)
    settings = replace(
        base,
        models=options.get("models"),
        concurrency=options.get("concurrency"),
        samples=options.get("samples"),
        max_retries=options.get("max_retries", base.max_retries),
        max_error_rate=options.get("max_error_rate", base.max_error_rate),
        timeout_s=options.get("timeout_s", base.timeout_s),
        max_cost=base.max_cost if base.max_cost is not None else options.get("max_cost"),
        allow_overflow=options.get("allow_overflow", False),
        gates=options.get("gates"),
        alpha=options.get("alpha", base.alpha),
        shard=shard,
        batch=base.batch or bool(options.get("batch", False)),
        poll_interval_s=base.poll_interval_s
        if base.poll_interval_s is not None
        else options.get("poll_interval_s"),
        batch_topup=options.get("batch_topup", base.batch_topup),
        out=run_dir.parent,
    )
    suite_path = manifest.get("suite", {}).get("path")
    if not suite_path or not Path(suite_path).exists():
        suite_path = manifest.get("suite", {}).get("abspath")
    suite = gated_suite(load_suite(suite_path, settings.allow_outside_cases), settings.gates)
    if manifest.get("sequential"):  # its rounds replayed, what the journal holds reused
        from evalkit.execution.sequential import resumed_sequential, run_sequential

        return run_sequential(
            suite, resumed_sequential(manifest, settings), RunDir(run_dir, manifest)
        )
    prepared = prepare_run(suite, settings)
    plan = plan_resume(run_dir, manifest, suite, prepared.planner)
    run = RunDir(run_dir, manifest)
    try:
        run.open_journal()
    except InputError as exc:
        raise InputError(
            f"cannot resume {run_dir}: {exc}; nothing was sent (to resume a run that cannot be "
            "written in place, copy its directory somewhere writable and resume the copy)"
        ) from None
    changed = file_sha256(suite.source) != manifest.get("suite", {}).get("sha256")
    run.manifest.setdefault("resumes", []).append(
        {
            "at": now_iso(),
            "suite_changed": changed,
            "changed_cases": plan.changed_cases,
            "removed_cases": plan.removed_cases,
            "reused_requests": len(plan.prior.requests),
        }
    )
    run.manifest.update(status="running", finished_at=None)
    run.manifest["options"]["max_cost"] = settings.max_cost  # a new ceiling given on resume sticks
    try:
        run.write_manifest()
    except RunError:
        with contextlib.suppress(RunError):
            run.close_journal()
        raise
    if settings.on_start is not None:
        settings.on_start(run.path)
    result = asyncio.run(execute(suite, prepared, settings, run, plan))
    return _judged(result, suite, settings, run)


def dry_run(suite: Suite, settings: RunSettings | None = None) -> DryRun:
    """What the run would send, per model, and its cost bounds; sends nothing, needs no key.

    The cases over a context window are its `problems` (none with `allow_overflow`).
    """
    settings = settings or RunSettings()
    estimates = estimate(validated_targets(suite, settings)[1])
    problems = [] if settings.allow_overflow else overflow_problems(suite, estimates)
    return DryRun(suite.source, estimates, problems, settings.batch)


def gated_suite(suite: Suite, expressions: list[str] | None) -> Suite:
    """`suite` with its gate replaced by the `--gate` expressions, when any are given."""
    if expressions is None:
        return suite
    variants = set(suite.variants or {})
    return suite.model_copy(update={"gate": [parse_gate(e, variants) for e in expressions]})


def gate_record(rules: list[GateRule], settings: RunSettings) -> dict[str, Any] | None:
    """The manifest's `gate`: its rules, where they came from, and (once judged) outcomes."""
    if not rules:
        return None
    source = "command line" if settings.gates is not None else "suite"
    texts = [rule.text for rule in rules]
    return {"source": source, "alpha": settings.alpha, "rules": texts, "held": None, "outcomes": []}


def _judged(result: RunResult, suite: Suite, settings: RunSettings, run: RunDir) -> RunResult:
    """A complete run judged by its gate, the outcomes kept in its manifest. A shard is not
    judged: a gate speaks of the whole suite, and one shard's cases are a part of it."""
    if not suite.gate or settings.shard is not None:
        return result
    result = judge_run(result, suite.gate, settings.alpha)
    if result.gates is not None:
        run.manifest["gate"] = gate_record(suite.gate, settings)
        run.manifest["gate"].update(
            held=all(g.held for g in result.gates), outcomes=[g.as_dict() for g in result.gates]
        )
        run.write_manifest()
    return result


def _kept_shard(run_dir: Path, manifest: dict[str, Any], asked: Shard | None) -> Shard | None:
    """A resumed run keeps the shard it ran; a `--shard` (or EVALKIT_SHARD) naming another
    is refused rather than silently ignored."""
    kept = Shard.of_manifest(manifest.get("shard"))
    if asked is not None and asked != kept:
        ran = f"shard {kept}" if kept is not None else "the whole suite"
        raise InputError(
            f"cannot resume {run_dir} as shard {asked} (--shard or EVALKIT_SHARD): it ran {ran}, "
            "and a resume keeps what the run ran"
        )
    return kept


def _unfinished_run(suite: Suite, settings: RunSettings) -> Path | None:
    """The latest run of the same suite, models and shard that did not finish, if any."""
    models = settings.models or [m.id for m in suite.models]
    found = [
        run_dir
        for run_dir in unfinished_runs(Path(settings.out), suite.source, models)
        if Shard.of_manifest(read_manifest(run_dir).get("shard")) == settings.shard
    ]
    return found[-1] if found else None
