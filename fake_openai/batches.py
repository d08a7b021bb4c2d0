"""The Batch API's lifecycle: a batch moves on wall-clock time, its lines answered as online.

Why wall-clock and lazy: a test polls a batch that takes ``batch_seconds`` (default 0.5 s) the
way evalkit polls one that takes hours, and a client killed mid-batch re-attaches by id to the
same state (it lives in the server). Each read of a batch advances it to the present:

* ``validating`` for the first 10% of the time; a bad input file (see ``batch_input``) then
  ends in ``failed`` with ``errors``; else ``in_progress`` until 80%, lines answered in order
  as time passes (``request_counts`` grows); ``finalizing``; ``completed`` at 100%.
* ``POST /cancel`` gives ``cancelling`` and, 10% of ``batch_seconds`` later, ``cancelled``;
  cancelling a finished (or finalizing) batch is a 409. Lines done are kept in the output file.
* When finished, the output file (``batch_output``) holds each 200 line, the error file each
  non-200 line (``response.status_code`` != 200, ``error`` null, as the real API writes HTTP
  failures) and, for an expired or cancelled batch, each line never run (``response`` null,
  ``error.code`` ``batch_expired`` / ``batch_cancelled``); both in a shuffled (seeded) order.
  A file with no lines is not written (its id stays null); ``request_counts.failed`` counts
  every line of the error file.

A line's answer is what the same body gets online (the server's ``answer`` per endpoint);
``stream: true`` has no place in a batch and gets a 400 line.

Faults, one per created batch in order (``FakeOpenAI.script_batches`` or ``POST
/_batch_script`` with a JSON list): ``"ok"`` or a dict combining ``seconds`` (this batch's
duration), ``fail_validation`` (fails with a ``token_limit_exceeded`` error),
``invalid_lines: [N, ...]`` (fails validation naming those 1-based lines),
``expire_after: F`` (runs a fraction F of its lines, then ``expired``), ``stuck_after: F``
(runs F, then stays ``in_progress`` until cancelled), ``error_rate: F`` (that fraction of
lines, seeded, answer 500), ``truncate_output`` (the output file ends mid-line) and
``extra_custom_id: ID`` (an extra output line for a request never sent).
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fake_openai.batch_files import FileStore
from fake_openai.batch_input import check_create, parse_input
from fake_openai.batch_state import Batch, BatchFault, Done, line_id, output_line
from fake_openai.jobs import BadRequest
from fake_openai.wire import dumps, error_body, loads

LineAnswer = Callable[[Any, str], tuple[int, dict[str, Any]]]
"""(body, request_id) -> (status, JSON): what the online route answers for that body."""
_VALIDATING, _RUNNING = 0.1, 0.8  # fractions of a batch's duration
_CANCELLING = 0.1  # a fraction of the server's batch_seconds, whatever the batch's own
_FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_UNRUN = {
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    "cancelled": (
        "batch_cancelled",
        "This request could not be executed before the batch was cancelled.",
    ),
}


class Conflict(Exception):
    """A 409: the batch cannot do that in its present state."""


class BatchService:
    """Every batch of the server, its fault script and counters; thread-safe."""

    def __init__(
        self,
        files: FileStore,
        answers: Mapping[str, LineAnswer],
        request_id: Callable[[], str],
        *,
        seconds: float,
        seed: int,
    ) -> None:
        if seconds <= 0:
            raise ValueError("batch_seconds must be > 0")
        self.files = files
        self.answers = answers
        self.seconds = seconds
        self.seed = seed
        self._request_id = request_id
        self._lock = threading.RLock()
        self._batches: dict[str, Batch] = {}
        self._faults: deque[BatchFault] = deque()
        self.lines_answered = 0

    # ----------------------------------------------------------------- test API

    def script(self, faults: Sequence[Any]) -> None:
        """Replace the batch fault script: one entry is consumed per created batch."""
        if isinstance(faults, str | bytes | Mapping):
            raise TypeError("script_batches() takes a list of batch faults")
        parsed = [BatchFault.parse(spec) for spec in faults]
        with self._lock:
            self._faults = deque(parsed)

    def stats(self) -> dict[str, int]:
        """Batches created, input lines answered, files uploaded."""
        with self._lock:
            return {
                "created": len(self._batches),
                "lines": self.lines_answered,
                "uploads": self.files.uploads,
            }

    def clear(self, seed: int) -> None:
        with self._lock:
            self._batches.clear()
            self._faults.clear()
            self.lines_answered = 0
            self.seed = seed
        self.files.clear()

    # ----------------------------------------------------------------- API

    def create(self, body: Any) -> dict[str, Any]:
        """``POST /v1/batches``; raises ``BadRequest`` as the real API refuses at once."""
        request = check_create(body, self.answers)
        stored = self.files.get(request["input_file_id"])
        if stored is None:
            message = f"No such File object: {request['input_file_id']}"
            raise BadRequest(message, "input_file_id")
        if stored.purpose != "batch":
            message = "The input file must be uploaded with purpose 'batch'."
            raise BadRequest(message, "input_file_id")
        lines, model, errors = parse_input(stored.data, request["endpoint"])
        with self._lock:
            fault = self._faults.popleft() if self._faults else BatchFault()
            if fault.fail_validation and not errors:
                message = (
                    f"Enqueued token limit reached for {model} in organization org-fake. "
                    "Please try again once some in_progress batches have been completed."
                )
                errors = [
                    {
                        "code": "token_limit_exceeded",
                        "message": message,
                        "param": None,
                        "line": None,
                    }
                ]
            if fault.invalid_lines and not errors:
                errors = [
                    {
                        "code": "invalid_value",
                        "message": f"Line {n}: the body is not valid for this endpoint.",
                        "param": "body",
                        "line": n,
                    }
                    for n in fault.invalid_lines
                ]
            batch_id = f"batch_{uuid.uuid4().hex[:24]}"
            rng = random.Random(f"{self.seed}:{batch_id}")
            count = round(fault.error_rate * len(lines))
            batch = Batch(
                batch_id,
                dict(request),
                lines,
                model,
                errors,
                fault,
                fault.seconds if fault.seconds is not None else self.seconds,
                failing=frozenset(rng.sample(range(len(lines)), count)),
            )
            self._batches[batch_id] = batch
            return batch.object()

    def get(self, batch_id: str) -> dict[str, Any] | None:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return None
            self._advance(batch)
            return batch.object()

    def listing(self, limit: int, after: str | None) -> dict[str, Any]:
        """``GET /v1/batches``: newest first, ``after`` a batch id of the previous page."""
        with self._lock:
            batches = list(reversed(self._batches.values()))
            if after is not None:
                ids = [b.id for b in batches]
                batches = batches[ids.index(after) + 1 :] if after in ids else []
            page = batches[:limit]
            for batch in page:
                self._advance(batch)
            data = [b.object() for b in page]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(batches) > len(page),
        }

    def cancel(self, batch_id: str) -> dict[str, Any] | None:
        """``POST /v1/batches/{id}/cancel``; raises ``Conflict`` once the batch is final."""
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return None
            self._advance(batch)
            if batch.status in _FINAL or batch.status == "finalizing":
                raise Conflict(f"Cannot cancel a batch with status '{batch.status}'.")
            if batch.status != "cancelling":
                batch.cancel_offset = time.monotonic() - batch.started
                batch.status = "cancelling"
                batch._stamp("cancelling", batch.cancel_offset)
            return batch.object()

    # ----------------------------------------------------------------- lifecycle

    def _advance(self, batch: Batch) -> None:
        d = batch.seconds
        t = time.monotonic() - batch.started
        fault = batch.fault
        if batch.status == "validating":
            if t < _VALIDATING * d:
                return
            if batch.errors:
                batch.status = "failed"
                batch._stamp("failed", _VALIDATING * d)
                return
            batch.status = "in_progress"
            batch._stamp("in_progress", _VALIDATING * d)
        if batch.status == "in_progress":
            cap = fault.expire_after if fault.expire_after is not None else fault.stuck_after
            share = min(
                1.0 if cap is None else cap, (t / d - _VALIDATING) / (_RUNNING - _VALIDATING)
            )
            self._run(batch, math.floor(share * len(batch.lines)))
            if fault.stuck_after is not None:
                return
            if fault.expire_after is not None:
                if t >= d:
                    self._finish(batch, "expired", d)
                return
            if t < _RUNNING * d:
                return
            self._run(batch, len(batch.lines))
            batch.status = "finalizing"
            batch._stamp("finalizing", _RUNNING * d)
        if batch.status == "finalizing" and t >= d:
            self._finish(batch, "completed", d)
        if batch.status == "cancelling" and batch.cancel_offset is not None:
            end = batch.cancel_offset + _CANCELLING * self.seconds
            if t >= end:
                self._finish(batch, "cancelled", end)

    def _run(self, batch: Batch, upto: int) -> None:
        """Answer the lines up to index ``upto`` (exclusive) that have not run yet."""
        answer = self.answers[batch.request["endpoint"]]
        for index in range(len(batch.done), upto):
            line = batch.lines[index]
            request_id = self._request_id()
            if index in batch.failing:
                status, body = 500, loads(error_body(500))
            elif isinstance(line.body, dict) and line.body.get("stream") is True:
                message = "Streaming is not supported in the Batch API."
                status, body = 400, loads(error_body(400, message=message, param="stream"))
            else:
                status, body = answer(line.body, request_id)
            if status == 200:
                usage = body.get("usage") or {}
                batch.usage["input"] += usage.get("prompt_tokens", usage.get("input_tokens", 0))
                batch.usage["output"] += usage.get(
                    "completion_tokens", usage.get("output_tokens", 0)
                )
            batch.done.append(
                Done(status == 200, output_line(line.custom_id, status, request_id, body))
            )
            self.lines_answered += 1

    def _finish(self, batch: Batch, status: str, offset: float) -> None:
        """Write the output and error files, then enter the final ``status``."""
        outputs = [d.record for d in batch.done if d.ok]
        errors = [d.record for d in batch.done if not d.ok]
        if status in _UNRUN:
            code, message = _UNRUN[status]
            for line in batch.lines[len(batch.done) :]:
                error = {"code": code, "message": message}
                errors.append(
                    {
                        "id": line_id(),
                        "custom_id": line.custom_id,
                        "response": None,
                        "error": error,
                    }
                )
        if batch.fault.extra_custom_id is not None and batch.lines:
            request_id = self._request_id()
            status_code, body = self.answers[batch.request["endpoint"]](
                batch.lines[0].body, request_id
            )
            outputs.append(output_line(batch.fault.extra_custom_id, status_code, request_id, body))
        rng = random.Random(f"{self.seed}:{batch.id}:order")
        rng.shuffle(outputs)
        rng.shuffle(errors)
        if outputs:
            data = b"".join(dumps(r) + b"\n" for r in outputs)
            if batch.fault.truncate_output:
                last = len(dumps(outputs[-1])) + 1
                data = data[: len(data) - last + last // 2]
            name = f"batch_{batch.id}_output.jsonl"
            batch.output_file_id = self.files.add(data, name, "batch_output").id
        if errors:
            data = b"".join(dumps(r) + b"\n" for r in errors)
            name = f"batch_{batch.id}_error.jsonl"
            batch.error_file_id = self.files.add(data, name, "batch_output").id
        if status == "completed":
            batch._stamp("finalizing", _RUNNING * batch.seconds)
        batch.status = status
        batch._stamp(status, offset)
