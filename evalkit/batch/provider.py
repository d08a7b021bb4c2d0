"""`BatchProvider`: the Provider seam over the Batch API — a second transport, not a fork.

A request joins the next batch of its endpoint as one line of its input file, written to disk
as it joins: the batch keeps only the request's key and how to read its answer back. A batch
is sent once it is full (50,000 lines or 200 MB), once no request has joined it for
`settle_s`, or when its model's first round is all written (`drain`).

Two ways in. `add(request)`: a first-round line that nobody waits on; its answer is kept
once its batch has ended, for the worker that asks for it (`complete`) then. And
`complete(request)`: the Provider call, which waits for the request's batch to end; a worker
about to wait says so (`on_park`), so that another can start in its place. So the workers,
resampling, retries, scoring, the cache and the journal are the online run's own: a line
that failed in a way worth retrying (a 5xx, an expired or cancelled batch, a missing line)
is retried by the sender like any failure, at once (the wait is the next batch), and joins
the next batch.

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
from pathlib import Path
from typing import Any, TextIO

from evalkit.batch.client import BatchClient
from evalkit.batch.lines import (
    MAX_BYTES,
    MAX_LINES,
    URLS,
    LineNote,
    Outcome,
    custom_id_of,
    input_line,
    note_of,
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
    """One batch file: the keys of its lines (in line order), and what came back."""

    endpoint: str
    keys: list[str]
    file_id: str | None = None
    batch_id: str | None = None
    status: str | None = None
    notes: dict[str, LineNote] = field(default_factory=dict)  # lines this session reads
    waiting: dict[str, asyncio.Future[Outcome]] = field(default_factory=dict)
    size: int = 0  # bytes of its input file
    path: Path | None = None
    out: TextIO | None = None  # its input file, while it fills
    broken: str | None = None  # why its input file could not be written
    follower: asyncio.Task[None] | None = None
    read: bool = False  # its results were read by this session
    failure: ProviderError | None = None  # the Batch API failed it for good
    # lines of a known batch no request of this session had asked for when they were read
    unread: dict[str, dict[str, Any]] = field(default_factory=dict)


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
        self.on_park: Callable[[], None] = lambda: None  # a worker is about to wait
        self._known = known.by_key() if known else {}
        self._open: dict[str, Batch] = {}  # by endpoint, filling
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)
        self._said: dict[str, tuple[str, str, float]] = {}  # by batch: status, line, when
        # by key, until answered: a batch may carry a custom_id once, so the same request
        # asked again meanwhile (two cases with one prompt) waits for the first
        self._in_flight: dict[str, asyncio.Future[Outcome]] = {}
        # first-round lines: how many requests carry each key, and each answer once its
        # batch has ended, until they have all asked for it
        self._askers: dict[str, int] = {}
        self._answers: dict[str, Outcome] = {}

    def add(self, request: Request) -> None:
        """A first-round request: a line for its key (once), its answer kept for `complete`."""
        key = request.key
        count = self._askers.get(key, 0)
        self._askers[key] = count + 1
        if count:
            return
        earlier = self._known.pop(key, None)
        if earlier is not None:
            self._adopt(earlier, request, None)
        else:
            self._line(request, None)

    async def drain(self) -> None:
        """Send every batch still filling, and wait until all of them have ended."""
        self._send_all()
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def complete(self, request: Request) -> Completion:
        outcome = self._answered(request.key)
        if outcome is None:
            future = self._in_flight.get(request.key)
            shared = future is not None
            if future is None:
                future = asyncio.get_running_loop().create_future()
                self._in_flight[request.key] = future
                future.add_done_callback(lambda _: self._in_flight.pop(request.key, None))
                earlier = self._known.pop(request.key, None)
                if earlier is not None:
                    self._adopt(earlier, request, future)
                else:
                    self._line(request, future)
            if not future.done():
                self.on_park()
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
        for batch in self._open.values():  # never sent: a resumed run writes its lines again
            _close_input(batch)
            if batch.path is not None:
                with contextlib.suppress(OSError):
                    batch.path.unlink()
        await self.client.aclose()

    def _answered(self, key: str) -> Outcome | None:
        """A first-round answer, given to each request that carries its key; a failure worth
        retrying only once (the retry is a new line, which the others then wait for)."""
        outcome = self._answers.get(key)
        if outcome is None:
            return None
        left = self._askers.pop(key, 1) - 1
        if left > 0 and not (isinstance(outcome, ProviderError) and outcome.retryable):
            self._askers[key] = left
        else:
            del self._answers[key]
        return outcome

    # ------------------------------------------------------------- filling and sending

    def _line(self, request: Request, future: asyncio.Future[Outcome] | None) -> None:
        """The request's line, written to the batch of its endpoint that is filling."""
        endpoint = request.endpoint
        batch = self._open.get(endpoint) or self._new_batch(endpoint)
        key = request.key
        batch.keys.append(key)
        batch.notes[key] = note_of(endpoint, request.choices)
        if future is not None:
            batch.waiting[key] = future
        line = input_line(request) + "\n"
        batch.size += len(line) if line.isascii() else len(line.encode())
        if batch.out is not None and batch.broken is None:
            try:
                batch.out.write(line)
            except OSError as exc:
                _unwritable(batch, exc)
        if len(batch.keys) >= MAX_LINES or batch.size >= MAX_BYTES * 0.95:
            self._send(endpoint)
        elif future is not None:  # a first round is sent by `drain`, not by a timer
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_later(self.settle_s, self._send_all)

    def _new_batch(self, endpoint: str) -> Batch:
        folder = self.run.path / FOLDER
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.target.label)
        path = folder / f"{name}-{endpoint}-{next(self._numbers)}.jsonl"
        batch = self._open[endpoint] = Batch(endpoint, [], path=path)
        try:
            folder.mkdir(exist_ok=True)
            batch.out = path.open("w", encoding="utf-8")
        except OSError as exc:
            _unwritable(batch, exc)
        return batch

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
        assert batch.path is not None
        try:
            _close_input(batch)
            if batch.broken is not None:
                self._fail(batch, ProviderError("batch_file", batch.broken))
                return
            batch.file_id = await self.client.upload(batch.path)
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
        finally:
            with contextlib.suppress(OSError):
                batch.path.unlink()
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

    def _adopt(
        self, batch: Batch, request: Request, future: asyncio.Future[Outcome] | None
    ) -> None:
        """A request an earlier session's batch carries: wait for that batch, or read it."""
        key = request.key
        batch.notes[key] = note = note_of(request.endpoint, request.choices)
        if future is not None:
            batch.waiting[key] = future
        if batch.read:  # ended, and read by this session before this request asked
            outcome = batch.failure or self._outcome(batch, _unread(batch, key, note), key)
            self._deliver(batch, key, outcome)
            return
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
        batch.read = True
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
        for key in batch.notes:
            self._deliver(batch, key, self._outcome(batch, outcomes.get(key), key))

    async def _results(self, batch: Batch, state: dict[str, Any]) -> dict[str, Outcome]:
        """Every line of the output and error files that this session reads, by key; a failed
        batch's line errors."""
        outcomes: dict[str, Outcome] = {}
        carried = set(batch.keys)
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
                        note = batch.notes.get(key)
                        if note is not None:
                            outcomes[key] = outcome_of(line, note)
                        elif key in carried:
                            batch.unread[key] = line  # a later round of a resumed run may ask
                        else:
                            unknown += 1
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

    def _outcome(self, batch: Batch, outcome: Outcome | None, key: str) -> Outcome:
        """A line's outcome, named by its batch; no line is a failure worth sending again."""
        if outcome is None:  # never run (expired, cancelled, failed) or lost
            status = batch.status or "ended"
            outcome = ProviderError(
                f"batch_{status}" if status != "completed" else "batch_missing",
                f"batch {batch.batch_id} ({status}) has no line for this request",
                retryable=True,
            )
        if isinstance(outcome, Completion):
            outcome.extra["batch_id"] = batch.batch_id
            return outcome
        outcome.batch_id = batch.batch_id
        if outcome.retryable:
            outcome.retry_after = 0.0  # no back-off: the next batch is the wait
        return outcome

    def _deliver(self, batch: Batch, key: str, outcome: Outcome) -> None:
        """To the request waiting on the line, else kept for the first round's askers."""
        future = batch.waiting.pop(key, None)
        if future is None:
            self._answers[key] = outcome
        elif not future.done():
            future.set_result(outcome)

    def _fail(self, batch: Batch, error: ProviderError) -> None:
        batch.read, batch.failure = True, error
        for key in batch.notes:
            self._deliver(batch, key, error)

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


def _close_input(batch: Batch) -> None:
    if batch.out is None:
        return
    out, batch.out = batch.out, None
    try:
        out.close()
    except OSError as exc:  # the last of it could not be written (a full disk)
        _unwritable(batch, exc)


def _unwritable(batch: Batch, exc: OSError) -> None:
    """The batch's input file failed: the first reason is kept, and the batch fails when sent."""
    batch.broken = batch.broken or f"cannot write {batch.path}: {exc.strerror}"


def _unread(batch: Batch, key: str, note: LineNote) -> Outcome | None:
    line = batch.unread.pop(key, None)
    return outcome_of(line, note) if line is not None else None


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
