"""`BatchProvider`: the Provider seam over the Batch API — a second transport, not a fork.

Each `complete(request)` joins the next batch of its endpoint and waits for the batch to end.
A batch is sent once no request has joined it for `settle_s` (every worker of the run is then
waiting on one) or once it is full (50,000 lines or 200 MB). So the workers, resampling,
retries, scoring, the cache and the journal are the online run's own: a request whose line
failed in a way worth retrying (a 5xx, an expired or cancelled batch, a missing line) is
retried by the sender like any failure, and joins the next batch.

Journal first: the file id and the keys it carries (in line order) are journaled before the
batch is created, the batch id before it is waited on. A later session (`--resume`) is given
what the journal holds (`Known`): a request whose key a known batch carries waits for that
batch instead of being sent again; a file that was uploaded but whose batch id was never
written is looked up by its id before a batch is made from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from evalkit.batch.client import BatchClient
from evalkit.batch.lines import (
    MAX_BYTES,
    MAX_LINES,
    URLS,
    Outcome,
    custom_id_of,
    input_line,
    outcome_of,
)
from evalkit.models.targets import Target
from evalkit.planning.plan import Request
from evalkit.providers import Completion, ProviderError
from evalkit.records.entries import batch_entry
from evalkit.records.store import RunDir

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
FOLDER = "batches"  # in the run directory: input files until uploaded, results until read
SETTLE_S = 0.5
SAY_EVERY_S = 30.0


@dataclass
class Batch:
    """One batch file: the requests it carries by key (in line order), and what came back."""

    endpoint: str
    keys: list[str]
    file_id: str | None = None
    batch_id: str | None = None
    status: str | None = None
    requests: dict[str, Request] = field(default_factory=dict)
    waiting: dict[str, asyncio.Future[Outcome]] = field(default_factory=dict)
    outcomes: dict[str, Outcome] | None = None  # once ended
    size: int = 0  # bytes of its input file, about (while it fills)
    follower: asyncio.Task[None] | None = None


@dataclass
class Known:
    """The batches an earlier session of the run journaled, for one model."""

    batches: list[Batch] = field(default_factory=list)

    def by_key(self) -> dict[str, Batch]:
        """The latest batch that carries each key."""
        return {key: batch for batch in self.batches for key in batch.keys}


def known_batches(entries: list[Mapping[str, Any]]) -> dict[str, Known]:
    """What the journal's batch entries say, per model label."""
    by_file: dict[str, Batch] = {}
    known: dict[str, Known] = {}
    for entry in entries:
        event, file_id = entry.get("event"), str(entry.get("file_id"))
        if event == "uploaded":
            batch = Batch(str(entry.get("endpoint")), list(entry.get("keys") or []), file_id)
            by_file[file_id] = batch
            known.setdefault(str(entry.get("model")), Known()).batches.append(batch)
        elif file_id in by_file and event == "submitted":
            by_file[file_id].batch_id = str(entry.get("batch_id"))
        elif file_id in by_file and event == "ended":
            by_file[file_id].status = str(entry.get("status"))
    return known


class BatchProvider:
    """Sends one model's requests as batches; see the module docstring."""

    def __init__(
        self,
        client: BatchClient,
        target: Target,
        run: RunDir,
        poll_s: float,
        known: Known | None = None,
        on_status: Callable[[str], None] | None = None,
        settle_s: float = SETTLE_S,
    ) -> None:
        self.client = client
        self.target = target
        self.run = run
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.on_status = on_status or (lambda line: None)
        self._known = known.by_key() if known else {}
        self._open: dict[str, Batch] = {}  # by endpoint, filling
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)
        self._said: dict[str, tuple[str, str, float]] = {}  # by batch: status, line, when
        # by key, until answered: a batch may carry a custom_id once, so the same request
        # asked again meanwhile (two cases with one prompt) waits for the first
        self._in_flight: dict[str, asyncio.Future[Outcome]] = {}

    async def complete(self, request: Request) -> Completion:
        future = self._in_flight.get(request.key)
        shared = future is not None
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._in_flight[request.key] = future
            future.add_done_callback(lambda _: self._in_flight.pop(request.key, None))
            earlier = self._known.pop(request.key, None)
            if earlier is not None:
                self._attach(earlier, request, future)
            else:
                self._join(request, future)
        # a second asker of the same request must not cancel the first one's wait
        outcome = await (asyncio.shield(future) if shared else future)
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome

    async def aclose(self) -> None:
        """Stop waiting (the batches go on remotely; a resumed run re-attaches to them)."""
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.aclose()

    # ------------------------------------------------------------- filling and sending

    def _join(self, request: Request, future: asyncio.Future[Outcome]) -> None:
        endpoint = request.endpoint
        batch = self._open.get(endpoint)
        if batch is None:
            batch = self._open[endpoint] = Batch(endpoint, [])
        batch.keys.append(request.key)
        batch.requests[request.key] = request
        batch.waiting[request.key] = future
        batch.size += len(request.wire) + 100  # the line's envelope beside its body
        if len(batch.keys) >= MAX_LINES or batch.size >= MAX_BYTES * 0.95:
            self._send(endpoint)
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.settle_s, self._send_all)

    def _send_all(self) -> None:
        self._timer = None
        for endpoint in list(self._open):
            self._send(endpoint)

    def _send(self, endpoint: str) -> None:
        batch = self._open.pop(endpoint)
        self._start(self._submit(batch))

    def _start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _submit(self, batch: Batch) -> None:
        folder = self.run.path / FOLDER
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.target.label)
        path = folder / f"{name}-{batch.endpoint}-{next(self._numbers)}.jsonl"
        try:
            folder.mkdir(exist_ok=True)
            with path.open("w", encoding="utf-8") as out:
                for key in batch.keys:
                    out.write(input_line(batch.requests[key]) + "\n")
            batch.file_id = await self.client.upload(path)
            self.run.append(
                batch_entry(
                    "uploaded",
                    batch.file_id,
                    model=self.target.label,
                    endpoint=batch.endpoint,
                    keys=batch.keys,
                )
            )
            await self._create(batch)
        except ProviderError as exc:
            self._fail(batch, _final(exc))
            return
        except OSError as exc:
            self._fail(batch, ProviderError("batch_file", f"cannot write {path}: {exc.strerror}"))
            return
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        await self._follow(batch)

    async def _create(self, batch: Batch) -> None:
        assert batch.file_id is not None
        made = await self.client.create(
            batch.file_id, URLS[batch.endpoint], {"evalkit_run": str(self.run.path.name)}
        )
        batch.batch_id = str(made["id"])
        self.run.append(batch_entry("submitted", batch.file_id, batch_id=batch.batch_id))
        self._say(made)

    # ------------------------------------------------------------- a batch of an earlier session

    def _attach(self, batch: Batch, request: Request, future: asyncio.Future[Outcome]) -> None:
        batch.requests[request.key] = request
        if batch.outcomes is not None:
            future.set_result(self._outcome(batch, request.key))
            return
        batch.waiting[request.key] = future
        if batch.follower is None:
            batch.follower = self._start(self._reattach(batch))

    async def _reattach(self, batch: Batch) -> None:
        try:
            if batch.batch_id is None and batch.file_id is not None:
                found = await self.client.find(batch.file_id)
                if found is not None:
                    batch.batch_id = str(found["id"])
                    self.run.append(
                        batch_entry("submitted", batch.file_id, batch_id=batch.batch_id)
                    )
                else:
                    await self._create(batch)
        except ProviderError as exc:
            self._fail(batch, _final(exc))
            return
        await self._follow(batch)

    # ------------------------------------------------------------- waiting and reading

    async def _follow(self, batch: Batch) -> None:
        assert batch.batch_id is not None
        try:
            while True:
                state = await self.client.get(batch.batch_id)
                self._say(state)
                if state.get("status") in TERMINAL:
                    break
                await asyncio.sleep(self.poll_s)
            outcomes = await self._results(batch, state)
        except ProviderError as exc:
            self._fail(batch, _final(exc))
            return
        batch.status = str(state.get("status"))
        batch.outcomes = outcomes
        counts = state.get("request_counts") or {}
        self.run.append(
            batch_entry(
                "ended",
                batch.file_id or "",
                batch_id=batch.batch_id,
                status=batch.status,
                counts=counts,
            )
        )
        for key, future in batch.waiting.items():
            if not future.done():
                future.set_result(self._outcome(batch, key))
        batch.waiting.clear()

    async def _results(self, batch: Batch, state: dict[str, Any]) -> dict[str, Outcome]:
        """Every line of the output and error files, by key; a failed batch's line errors."""
        outcomes: dict[str, Outcome] = {}
        unknown = 0
        for name in ("output_file_id", "error_file_id"):
            file_id = state.get(name)
            if not isinstance(file_id, str):
                continue
            path = self.run.path / FOLDER / f"{file_id}.jsonl"
            path.parent.mkdir(exist_ok=True)
            await self.client.download(file_id, path)
            try:
                with path.open("rb") as lines:
                    for raw in lines:
                        read = custom_id_of(raw)
                        if read is None:
                            continue  # a torn line: its request counts as missing
                        key, line = read
                        request = batch.requests.get(key)
                        if request is None:
                            unknown += 1
                            continue
                        outcomes[key] = outcome_of(line, request)
            finally:
                with contextlib.suppress(OSError):
                    path.unlink()
        if unknown:
            self.on_status(
                f"warning: batch {batch.batch_id}: {unknown} line(s) for requests this run "
                "never sent were ignored"
            )
        if state.get("status") == "failed":
            outcomes.update(_invalid_lines(batch, state))
        return outcomes

    def _outcome(self, batch: Batch, key: str) -> Outcome:
        assert batch.outcomes is not None
        outcome = batch.outcomes.get(key)
        if outcome is None:  # never run (expired, cancelled, failed) or lost: worth sending again
            status = batch.status or "ended"
            outcome = ProviderError(
                f"batch_{status}" if status != "completed" else "batch_missing",
                f"batch {batch.batch_id} ({status}) has no line for this request",
                retryable=True,
            )
        if isinstance(outcome, Completion):
            outcome.extra["batch_id"] = batch.batch_id
        else:
            outcome.batch_id = batch.batch_id
        return outcome

    def _fail(self, batch: Batch, error: ProviderError) -> None:
        for future in batch.waiting.values():
            if not future.done():
                future.set_result(error)
        batch.waiting.clear()

    def _say(self, state: dict[str, Any]) -> None:
        """A batch's status when it changes, and its counts at most every SAY_EVERY_S."""
        counts = state.get("request_counts") or {}
        status, batch_id = str(state.get("status")), str(state.get("id"))
        line = (
            f"batch {batch_id} ({self.target.label}): {status}, "
            f"{counts.get('completed', 0)} completed, {counts.get('failed', 0)} failed "
            f"of {counts.get('total', 0)}"
        )
        said_status, said, at = self._said.get(batch_id, ("", "", 0.0))
        now = time.monotonic()
        if status != said_status or (line != said and now - at >= SAY_EVERY_S):
            self._said[batch_id] = (status, line, now)
            self.on_status(line)


def _invalid_lines(batch: Batch, state: dict[str, Any]) -> dict[str, Outcome]:
    """A batch that failed validation: each line it names is that request's error; the other
    requests were not run and go in a new batch."""
    errors = (state.get("errors") or {}).get("data") or []
    out: dict[str, Outcome] = {}
    for error in errors:
        line = error.get("line") if isinstance(error, dict) else None
        if isinstance(line, int) and 1 <= line <= len(batch.keys):
            code = str(error.get("code") or "invalid_request")
            out[batch.keys[line - 1]] = ProviderError(
                "bad_request", f"batch {batch.batch_id} line {line}: {error.get('message') or code}"
            )
    return out


def _final(error: ProviderError) -> ProviderError:
    """A Batch API call that failed after its own retries: not retried again per request."""
    return ProviderError(error.error_type, f"Batch API: {error.message}", status=error.status)
