"""The run: plan → limits → provider (with retries) → journal, for every model at once.

Each model gets as many workers as it may have requests in flight; workers pull requests
from that model's stream of the planner, so memory stays flat however large the suite. A
request that finally fails is journaled as an error record and the run goes on. With
`--batch`, a model's share goes through `batch.rounds` instead: its first round written as
batch lines, then the same workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.analysis.summary import summarize_rows
from evalkit.errors import RunError
from evalkit.execution.budget import Budget
from evalkit.execution.dispatch import Dispatcher
from evalkit.execution.limits import ModelLimits
from evalkit.execution.prepare import Prepared
from evalkit.execution.progress import Progress
from evalkit.execution.resume import ResumePlan
from evalkit.execution.send import Paced, SendSettings, Tally
from evalkit.execution.settings import RunResult, RunSettings
from evalkit.models.targets import Target
from evalkit.records.cache import Cache, cache_dir
from evalkit.records.entries import retire_entry
from evalkit.records.rows import journal_rows
from evalkit.records.store import RunDir
from evalkit.suite.spec import Suite

if TYPE_CHECKING:
    from evalkit.batch.provider import BatchProvider


async def execute(
    suite: Suite,
    prepared: Prepared,
    settings: RunSettings,
    run: RunDir,
    resume: ResumePlan | None,
) -> RunResult:
    """Send the run's plan, every model at once, and finish the run directory.

    What is alive when sending starts (the suite, its renders, the imported libraries) lives
    until the run ends, so it is frozen out of the garbage collector's walks meanwhile: a
    run allocates thousands of objects a second, and each full collection would walk it all.
    """
    gc.freeze()
    try:
        return await _execute(suite, prepared, settings, run, resume)
    finally:
        gc.unfreeze()


async def _execute(
    suite: Suite,
    prepared: Prepared,
    settings: RunSettings,
    run: RunDir,
    resume: ResumePlan | None,
) -> RunResult:
    targets, judges, planner = prepared.targets, prepared.judges, prepared.planner
    keys, providers = prepared.keys, prepared.providers
    totals = {t.label: planner.requests_per_model for t in targets}
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
                or OpenAIProvider(
                    transport,
                    target.base_url,
                    keys[target.id],
                    settings.timeout_s,
                    prepared.headers[target.id],
                    target.query,
                    prepared.secrets[target.id],
                ),
                ModelLimits(target.concurrency, target.rpm, target.tpm),
            )
    online: dict[str, Paced] = {}
    senders: dict[str, tuple[Target, BatchProvider, ModelLimits]] = {}
    if settings.batch:  # the models' own requests through the Batch API; graders stay online
        from evalkit.batch.setup import MAX_BATCH_ATTEMPTS, batch_senders

        senders = batch_senders(
            targets,
            keys,
            prepared.headers,
            prepared.secrets,
            run,
            list(resume.prior.batches) if resume else [],
            settings.poll_interval_s,
            settings.retry_initial_s,
            progress.note,
        )
        if settings.batch_topup == "online":
            online = {t.id: paced[t.id] for t in targets}
        paced = {**paced, **senders}
    retries = settings.max_retries
    if settings.batch:
        retries = min(retries, MAX_BATCH_ATTEMPTS)
    state = Dispatcher(
        run,
        SendSettings(retries, settings.retry_initial_s, settings.batch),
        progress,
        Path(suite.source).parent,
        {j.id: paced[j.id] for j in judges},
        cache,
        Budget(settings.max_cost, resume.spent if resume else 0.0),
        resume.prior if resume else None,
        online,
    )
    workers: list[asyncio.Task[None]] = []
    for target in targets:
        _, sender, limits = paced[target.id]
        count = _workers(target.concurrency)
        if target.id in senders:
            from evalkit.batch.rounds import run_model

            batch = senders[target.id][1]
            workers.append(
                asyncio.create_task(run_model(state, target, batch, limits, planner, count))
            )
            continue
        work = planner.groups(target)
        workers += [
            asyncio.create_task(state.worker(target, sender, limits, work)) for _ in range(count)
        ]
    drawing = asyncio.create_task(progress.draw_until_cancelled())
    warm_up = _ResultsLibraries()
    warming = asyncio.create_task(warm_up.import_when_idle())
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
        await warm_up.stop(warming)
        for _, batch, _ in senders.values():
            await batch.aclose()
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
    rows = journal_rows(run.path, run.manifest, warn=False)  # a resume warned already
    failed = sum(1 for r in rows if r["selected"] is not False and not r["passed"])
    counts = {
        "planned": planned,
        "requests": tally.requests,
        "errors": tally.errors,
        "reused": tally.reused,
        "cached": tally.cached,
        "samples": len(rows),
        "failed_samples": failed,
        "spent_usd": budget.spent,
    }
    unwritten = run.write_results(rows)
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
        run.path,
        status,
        tally.requests,
        tally.errors,
        reason,
        tally.per_model,
        failed,
        summarize_rows(rows),
    )


def _workers(concurrency: int) -> int:
    """More workers than slots: a worker whose request is built waits for the slot another
    frees, so the next request leaves while the previous answer is still being journaled."""
    return concurrency + min(concurrency, 256)


class _ResultsLibraries:
    """The end of a run writes `results.parquet` with pyarrow (0.1 s of imports, pandas not
    among them). It is imported in a thread while requests are in flight, but only once the
    process has CPU to spare: when the server answers at once the loop is busy, and an import
    thread fighting it for the GIL slows the run by more than the import costs at the end."""

    IDLE_SHARE = 0.5  # CPU used per second of wall time below which the process is idle
    PERIOD_S = 0.1

    def __init__(self) -> None:
        self.started = False

    async def import_when_idle(self) -> None:
        cpu, wall = time.process_time(), time.monotonic()
        while True:
            await asyncio.sleep(self.PERIOD_S)
            used, passed = time.process_time() - cpu, time.monotonic() - wall
            if used < self.IDLE_SHARE * passed:
                self.started = True
                await asyncio.to_thread(_import_results_libraries)
                return
            cpu, wall = cpu + used, wall + passed

    async def stop(self, task: asyncio.Task[None]) -> None:
        """The run is over: an import under way is awaited, one not started is dropped."""
        if not self.started:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _import_results_libraries() -> None:
    import pyarrow.json
    import pyarrow.parquet  # noqa: F401


def _is_terminal() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")
