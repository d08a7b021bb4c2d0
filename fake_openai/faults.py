"""Fault modes: how the fake misbehaves when a test scripts it to, or at random.

Why: evalkit must survive what real servers do (429 with Retry-After, 5xx, quota errors,
malformed JSON, an empty ``choices``, a dropped or hung connection, a stream cut short,
misreported usage, slow answers), so each is a named, validated fault a test can script.
A script is consumed one entry per completion request; ``rate_429`` adds seeded random 429s.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fake_openai.wire import (
    JSON_HEADERS,
    SSE_DONE,
    SSE_HEADERS,
    error_body,
    error_response,
)

HANG_SECONDS = 3600.0
"""``"hang"`` waits this long or until the server stops: far beyond any client timeout."""
RATE_429_RETRY_AFTER = "0.01"

FAULT_NAMES = frozenset({"ok", "malformed_json", "no_choices", "drop", "hang", "truncated_sse"})
"""Named faults; HTTP errors are spelled ``{"status": 429, ...}`` or a bare int (kind "status")."""

_FAULT_KEYS = frozenset(
    {
        "fault",
        "status",
        "delay_ms",
        "retry_after",
        "retry_after_ms",
        "headers",
        "code",
        "message",
        "type",
        "usage",
    }
)


@dataclass(frozen=True)
class Fault:
    """A normalised fault-script entry (see ``FakeOpenAI.script`` for the accepted spellings)."""

    kind: str = "ok"
    status: int = 200
    delay_ms: float = 0.0
    retry_after: str | None = None
    retry_after_ms: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    code: str | None = None
    message: str | None = None
    type: str | None = None
    usage: Mapping[str, Any] | None = None  # replaces these usage keys; a key set to None drops it

    @classmethod
    def parse(cls, spec: Any) -> Fault:
        """Accept ``"drop"``, ``429``, ``{"status": 429, ...}``, ``{"fault": "hang", ...}``.

        Validates eagerly so a typo in a test's script fails at ``script()``, not mid-request.
        """
        if isinstance(spec, Fault):
            return spec
        if isinstance(spec, bool):
            raise ValueError(f"invalid fault: {spec!r}")
        if isinstance(spec, int):
            spec = {"status": spec}
        if isinstance(spec, str):
            if spec not in FAULT_NAMES:
                raise ValueError(f"unknown fault {spec!r}; expected one of {sorted(FAULT_NAMES)}")
            return cls(kind=spec)
        if not isinstance(spec, Mapping):
            raise ValueError(f"invalid fault: {spec!r}")
        unknown = set(spec) - _FAULT_KEYS
        if unknown:
            raise ValueError(f"unknown fault keys {sorted(unknown)} in {spec!r}")
        if "fault" in spec and "status" in spec:
            raise ValueError(f"give either 'fault' or 'status', not both: {spec!r}")
        kind = spec.get("fault", "status" if "status" in spec else "ok")
        if kind != "status" and kind not in FAULT_NAMES:
            raise ValueError(f"unknown fault {kind!r}")
        status = spec.get("status", 200)
        if kind == "status" and (not isinstance(status, int) or not 100 <= status <= 599):
            raise ValueError(f"invalid status in {spec!r}")
        delay = spec.get("delay_ms", 0.0)
        if not isinstance(delay, int | float) or delay < 0:
            raise ValueError(f"invalid delay_ms in {spec!r}")
        headers = spec.get("headers") or {}
        if not isinstance(headers, Mapping):
            raise ValueError(f"headers must be a mapping in {spec!r}")
        usage = spec.get("usage")
        if usage is not None and not isinstance(usage, Mapping):
            raise ValueError(f"usage must be a mapping in {spec!r}")

        def opt_str(key: str) -> str | None:
            value = spec.get(key)
            return None if value is None else str(value)

        return cls(
            kind=kind,
            status=status if kind == "status" else 200,
            delay_ms=float(delay),
            retry_after=opt_str("retry_after"),
            retry_after_ms=opt_str("retry_after_ms"),
            headers={str(k): str(v) for k, v in headers.items()},
            code=opt_str("code"),
            message=opt_str("message"),
            type=opt_str("type"),
            usage=usage,
        )


_RATE_429_FAULT = Fault(kind="status", status=429, retry_after=RATE_429_RETRY_AFTER)


class FaultScript:
    """The scripted faults not yet consumed, and the seeded draws of ``rate_429``."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._rng = random.Random(seed)

    def replace(self, faults: Sequence[Any]) -> None:
        """Parse every entry first (a typo fails here), then replace the script."""
        if isinstance(faults, str | bytes | Mapping):
            raise TypeError("script() takes a list of faults")
        parsed = [Fault.parse(spec) for spec in faults]
        with self._lock:
            self._faults = deque(parsed)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._faults)

    def clear(self, seed: int) -> None:
        """Drop the script and re-seed the 429 draws."""
        with self._lock:
            self._faults.clear()
            self._rng = random.Random(seed)

    def next(self, rate_429: float) -> Fault | None:
        """The fault for this request: the next scripted one, else a 429 with ``rate_429``."""
        if not self._faults and rate_429 <= 0.0:  # fast path, no lock needed
            return None
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if rate_429 > 0.0 and self._rng.random() < rate_429:
                return _RATE_429_FAULT
        return None


def drop(request: web.Request) -> web.Response:
    """Close the socket without a response; aiohttp then quietly skips writing this one."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=500)


async def early_answer(
    request: web.Request, fault: Fault, body: Any, stopping: asyncio.Event | None
) -> web.StreamResponse | None:
    """Answer for faults that do not need a valid request; None for the others.

    ``stopping`` is set when the server stops, which releases a ``"hang"``.
    """
    if fault.kind == "status":
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = fault.retry_after_ms
        err = error_body(fault.status, message=fault.message, type_=fault.type, code=fault.code)
        return error_response(fault.status, err, headers)
    if fault.kind == "drop":
        return drop(request)
    if fault.kind == "hang":
        if stopping is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), HANG_SECONDS)
        return drop(request)
    if fault.kind == "malformed_json":
        broken = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{'
        if isinstance(body, dict) and body.get("stream") is True:
            resp = web.StreamResponse(headers=SSE_HEADERS)
            await resp.prepare(request)
            with contextlib.suppress(ConnectionError):
                await resp.write(b"data: " + broken + b"\n\n" + SSE_DONE)
            return resp
        return web.Response(body=broken, headers=JSON_HEADERS)
    return None


def truncated(events: list[bytes]) -> list[bytes]:
    """``"truncated_sse"``: some chunks, never the last finish chunk nor ``[DONE]``."""
    return events[: max(1, len(events) // 2)]


def misreport_usage(payload: dict[str, Any], fault: Fault | None) -> None:
    """``{"usage": {...}}``: replace those usage keys in ``payload``; a key set to None drops."""
    if fault is not None and fault.usage is not None:
        usage = {**payload["usage"], **fault.usage}
        payload["usage"] = {k: v for k, v in usage.items() if v is not None}
