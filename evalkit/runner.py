"""The run: plan → limits → provider (with retries) → journal, for every model at once.

Each model gets as many workers as it may have requests in flight; workers pull requests
from that model's lazy plan, so memory stays flat however large the suite. A request that
finally fails is journaled as an error record and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.budget import Budget
from evalkit.cache import Cache, cache_dir
from evalkit.checkspec import GRADED_BY_A_MODEL
from evalkit.dispatch import Dispatcher
from evalkit.errors import ConfigError, InputError, RunError, SuiteError, exit_code
from evalkit.estimate import DryRun, estimate, overflow_problems
from evalkit.frame import frame_of_journal
from evalkit.grading import grader_model
from evalkit.limits import ModelLimits
from evalkit.plan import count_requests
from evalkit.planner import Planner
from evalkit.progress import Progress
from evalkit.providers import Provider
from evalkit.records import retire_entry
from evalkit.resume import ResumePlan, prepare, unfinished_runs
from evalkit.send import Paced, SendSettings, Tally
from evalkit.store import RunDir, file_sha256, new_run_id, now_iso, read_manifest
from evalkit.suite import ModelSpec, Suite
from evalkit.targets import Target, resolve
from evalkit.validate import validated

if TYPE_CHECKING:
    from evalkit.compare import RunComparison


@dataclass
class RunSettings:
    """What `evalkit run` was asked to do, beyond the suite itself."""

    models: list[str] | None = None  # replaces the suite's models
    concurrency: int | None = None  # -j: requests in flight per model
    samples: int | None = None
    out: Path = Path("reports/runs")
    max_retries: int = 8
    max_error_rate: float = 0.02
    timeout_s: float = 120.0
    retry_initial_s: float = 0.5
    progress: bool | None = None  # None: a live bar on a terminal, plain lines otherwise
    environ: Mapping[str, str] | None = None
    allow_outside_cases: bool = False  # asked for on each command line, never kept in a manifest
    max_cost: float | None = None  # USD ceiling
    cache: bool = True  # --no-cache: neither read nor write
    refresh: bool = False  # --refresh: write without reading
    cache_dir: Path | None = None
    allow_overflow: bool = False
    # called with the run directory once it exists, before anything is sent
    on_start: Callable[[Path], None] | None = field(default=None, repr=False)
    # asked whether to resume the latest unfinished run of the same suite and models (True)
    # instead of starting a new one; None: always start a new one
    offer_resume: Callable[[Path], bool] | None = field(default=None, repr=False)


@dataclass
class RunResult:
    """A finished run: its directory, status, counts and DataFrame; `Gate.judge` adds the
    comparison with a baseline."""

    run_dir: Path
    status: str  # complete, failed, interrupted, budget
    requests: int
    errors: int
    reason: str | None = None
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed_samples: int = 0  # kept samples that failed a required check
    frame: Any = field(default=None, repr=False)  # the run's DataFrame, as load_run returns it
    comparison: RunComparison | None = None  # with a baseline (`Gate.judge`), once complete

    @property
    def exit_code(self) -> int:
        """3: the run could not complete; 1: checks failed, or with a baseline the gate
        found a regression (the gate decides, not each failing check); 0: all good."""
        failed = self.comparison.failed if self.comparison else bool(self.failed_samples)
        return exit_code(complete=self.status == "complete", failed=failed)


def run_suite(suite: Suite, settings: RunSettings | None = None) -> RunResult:
    """Send every request of `suite` and write a run directory (see store.py).

    With `settings.offer_resume`, the latest unfinished run of the same suite and models is
    offered first, and resumed instead if the answer is yes.
    """
    settings = settings or RunSettings()
    offer = settings.offer_resume
    if offer is not None:
        unfinished = _unfinished_run(suite, settings)
        if unfinished is not None and offer(unfinished):
            return resume_run(unfinished, settings)
    targets, judges, keys, providers, planner = _prepare(suite, settings)
    run = RunDir.create(
        Path(settings.out), new_run_id(suite.name or "suite"), _manifest(suite, targets, settings)
    )
    if settings.on_start is not None:
        settings.on_start(run.path)
    return asyncio.run(
        _execute(suite, targets, judges, keys, providers, settings, run, None, planner)
    )


def resume_run(run_dir: Path, settings: RunSettings | None = None) -> RunResult:
    """Continue a killed or interrupted run: what finished is reused, the rest is sent.

    The manifest holds the suite path and the options; `settings` may only add cache and
    progress preferences. A suite edited since is compared case by case (see resume.py).
    """
    from evalkit.load import load_suite

    manifest = read_manifest(run_dir)
    if manifest.get("status") == "complete":
        raise InputError(f"{run_dir}: this run is complete; there is nothing to resume")
    options = manifest.get("options", {})
    base = settings or RunSettings()
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
        out=run_dir.parent,
    )
    suite_path = manifest.get("suite", {}).get("path")
    if not suite_path or not Path(suite_path).exists():
        suite_path = manifest.get("suite", {}).get("abspath")
    suite = load_suite(suite_path, settings.allow_outside_cases)
    targets, judges, keys, providers, planner = _prepare(suite, settings)
    plan = prepare(run_dir, manifest, suite, planner)
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
    return asyncio.run(
        _execute(suite, targets, judges, keys, providers, settings, run, plan, planner)
    )


def dry_run(suite: Suite, settings: RunSettings | None = None) -> DryRun:
    """What the run would send, per model, and its cost bounds; sends nothing, needs no key.

    The cases over a context window are its `problems` (none with `allow_overflow`).
    """
    settings = settings or RunSettings()
    estimates = estimate(_targets(suite, settings)[1])
    problems = [] if settings.allow_overflow else overflow_problems(suite, estimates)
    return DryRun(suite.source, estimates, problems)


def _unfinished_run(suite: Suite, settings: RunSettings) -> Path | None:
    """The latest run of the same suite and models that did not finish, if any."""
    models = settings.models or [m.id for m in suite.models]
    found = unfinished_runs(Path(settings.out), suite.source, models)
    return found[-1] if found else None


def _targets(
    suite: Suite, settings: RunSettings, allow_overflow: bool = True
) -> tuple[list[Target], Planner]:
    """The models to run, and the planner validation walked: the run goes on with it."""
    env = os.environ if settings.environ is None else settings.environ
    specs = [ModelSpec(id=m) for m in settings.models] if settings.models else suite.models
    if not specs:
        raise ConfigError("no models to run: give --model provider/model, or models: in the suite")
    models = specs if settings.models else None
    problems, planner = validated(suite, models, env, allow_overflow, settings.samples)
    if problems:
        raise SuiteError(problems)
    targets = zip(planner.targets, specs, strict=True)
    return [_with_concurrency(t, s, settings) for t, s in targets], planner


def _prepare(
    suite: Suite, settings: RunSettings
) -> tuple[list[Target], list[Target], dict[str, str | None], dict[str, Provider], Planner]:
    """Validate everything and read the keys: all that can fail does so before any request.
    The planner validation walked goes on to plan the run."""
    env = os.environ if settings.environ is None else settings.environ
    targets, planner = _targets(suite, settings, settings.allow_overflow)
    judges = [resolve(ModelSpec(id=m), suite.endpoints, env) for m in _judge_models(suite)]
    keys = _api_keys([*targets, *judges], env)
    folder = Path(suite.source).parent
    return targets, judges, keys, _local_providers([*targets, *judges], folder), planner


def _local_providers(targets: list[Target], folder: Path) -> dict[str, Provider]:
    """Local models are checked (extra installed, GGUF present) before anything is sent."""
    from evalkit.providers.local import LocalProvider, gguf_path

    return {
        t.id: LocalProvider(gguf_path(t.model, t.path, folder), t.info.context_window)
        for t in targets
        if t.provider == "local"
    }


def _judge_models(suite: Suite) -> list[str]:
    """The models that grade judge and moderation checks."""
    found = {
        grader_model(check)
        for check in [*suite.checks, *(c for case in suite.cases for c in case.expect)]
        if check.kind in GRADED_BY_A_MODEL
    }
    return sorted(found)


def _with_concurrency(target: Target, spec: ModelSpec, settings: RunSettings) -> Target:
    if settings.concurrency and not spec.concurrency:
        return replace(target, concurrency=settings.concurrency)
    return target


def _api_keys(targets: list[Target], env: Mapping[str, str]) -> dict[str, str | None]:
    """Each target's key, read now so a missing one fails before any request is sent."""
    keys: dict[str, str | None] = {}
    for target in targets:
        name = target.api_key_env
        if name is None:
            keys[target.id] = None
        elif env.get(name):
            keys[target.id] = env[name]
        else:
            raise ConfigError(
                f"{target.id} needs an API key: set the environment variable {name} "
                "(evalkit reads keys only from the environment and never stores them)"
            )
    return keys


def _manifest(suite: Suite, targets: list[Target], settings: RunSettings) -> dict[str, Any]:
    return {
        "evalkit_version": version("evalkit"),
        "suite": {
            "name": suite.name,
            "path": suite.source,
            "abspath": str(Path(suite.source).resolve()) if suite.source else None,
            "sha256": file_sha256(suite.source) if suite.source else None,
        },
        "models": [
            {
                "id": t.id,
                "label": t.label,
                "base_url": t.base_url,
                "api_key_env": t.api_key_env,  # the variable's name, never its value
                "concurrency": t.concurrency,
                "params": t.params.set_values(),
            }
            for t in targets
        ],
        "options": {
            "models": settings.models,
            "concurrency": settings.concurrency,
            "samples": settings.samples,
            "max_retries": settings.max_retries,
            "max_error_rate": settings.max_error_rate,
            "timeout_s": settings.timeout_s,
            "max_cost": settings.max_cost,
            "allow_overflow": settings.allow_overflow,
        },
        "params": suite.params.set_values(),
        "planned": {t.label: count_requests(suite, settings.samples) for t in targets},
    }


async def _execute(
    suite: Suite,
    targets: list[Target],
    judges: list[Target],
    keys: dict[str, str | None],
    providers: dict[str, Provider],
    settings: RunSettings,
    run: RunDir,
    resume: ResumePlan | None,
    planner: Planner,
) -> RunResult:
    totals = {t.label: count_requests(suite, settings.samples) for t in targets}
    live = settings.progress if settings.progress is not None else _is_terminal()
    progress = Progress(totals, live)
    cache = (
        Cache(cache_dir(settings.cache_dir), read=not settings.refresh) if settings.cache else None
    )
    # the HTTP stack is imported by the run that needs it: `import evalkit` stays light
    from evalkit.providers.openai import OpenAIProvider, make_transport

    in_flight = sum(t.concurrency for t in [*targets, *judges])
    transport = make_transport(in_flight + 4)
    run.open_journal()
    if resume and resume.retired:
        run.append(retire_entry(resume.retired))
    paced: dict[str, Paced] = {}
    for target in [*targets, *judges]:
        if target.id not in paced:
            paced[target.id] = (
                target,
                providers.get(target.id)
                or OpenAIProvider(transport, target.base_url, keys[target.id], settings.timeout_s),
                ModelLimits(target.concurrency, target.rpm, target.tpm),
            )
    state = Dispatcher(
        run,
        SendSettings(settings.max_retries, settings.retry_initial_s),
        progress,
        Path(suite.source).parent,
        {j.id: paced[j.id] for j in judges},
        cache,
        Budget(settings.max_cost, resume.spent if resume else 0.0),
        resume.prior if resume else None,
    )
    workers: list[asyncio.Task[None]] = []
    for target in targets:
        _, sender, limits = paced[target.id]
        work = planner.groups(target)
        workers += [
            asyncio.create_task(state.worker(target, sender, limits, work))
            for _ in range(_workers(target.concurrency))
        ]
    drawing = asyncio.create_task(progress.draw_until_cancelled())
    # the end of the run needs pandas and pyarrow: import them while requests are in flight
    warm_up = asyncio.create_task(asyncio.to_thread(_import_frame_libraries))
    interrupted = False
    loop = asyncio.get_running_loop()

    def on_interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        for task in workers:
            task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
        loop.add_signal_handler(signal.SIGTERM, on_interrupt)
    try:
        results = await asyncio.gather(*workers, return_exceptions=True)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
        drawing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drawing
        await warm_up
        await transport.aclose()
        if cache is not None:
            cache.close()
    failures = [
        r
        for r in results
        if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
    ]
    return _finish(settings, run, state.tally, state.budget, interrupted, failures)


def _finish(
    settings: RunSettings,
    run: RunDir,
    tally: Tally,
    budget: Budget,
    interrupted: bool,
    failures: list[BaseException],
) -> RunResult:
    planned = sum(run.manifest["planned"].values())
    rate = tally.errors / tally.requests if tally.requests else 0.0
    status, reason = "complete", None
    if failures:
        status, reason = "failed", f"{type(failures[0]).__name__}: {failures[0]}"
    elif interrupted:
        status, reason = "interrupted", "interrupted by a signal; finished requests are kept"
    elif budget.exhausted:
        status = "budget"
        reason = (
            f"--max-cost ${settings.max_cost:g} reached: spent ${budget.spent:.4f}; "
            "the next request could have passed the ceiling, so it was not sent"
        )
    elif tally.stopped_models:
        status, reason = "failed", "; ".join(tally.stopped_models.values())
    elif rate > settings.max_error_rate:
        status = "failed"
        reason = (
            f"error rate {rate:.1%} ({tally.errors} of {tally.requests} requests) is above "
            f"--max-error-rate {settings.max_error_rate:.1%}"
        )
    frame = frame_of_journal(run.path, run.manifest, warn=False)  # a resume warned already
    kept = frame[frame["selected"].fillna(True).astype(bool)]
    failed = int((~kept["passed"].fillna(False).astype(bool)).sum())
    counts = {
        "planned": planned,
        "requests": tally.requests,
        "errors": tally.errors,
        "reused": tally.reused,
        "cached": tally.cached,
        "samples": len(frame),
        "failed_samples": failed,
        "spent_usd": budget.spent,
    }
    unwritten = run.write_results(frame)
    if unwritten is not None:
        status, reason = "failed", "; ".join(filter(None, [reason, unwritten]))
    try:
        run.finish(status, reason=reason, counts=counts, per_model=tally.per_model)
    except RunError as exc:  # a full disk: say why the run stopped, and that it can go on
        if failures and not isinstance(failures[0], RunError):
            raise failures[0] from exc
        raise RunError("; ".join(filter(None, [reason, str(exc)]))) from None
    if failures:
        raise failures[0]  # a RunError is exit 3; anything else is a bug (exit 4)
    return RunResult(
        run.path, status, tally.requests, tally.errors, reason, tally.per_model, failed, frame
    )


def _workers(concurrency: int) -> int:
    """More workers than slots: a worker whose request is built waits for the slot another
    frees, so the next request leaves while the previous answer is still being journaled."""
    return concurrency + min(concurrency, 256)


def _import_frame_libraries() -> None:
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401


def _is_terminal() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")
