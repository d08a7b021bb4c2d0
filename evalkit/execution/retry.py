"""What is retried, and how long to wait: the server's hint first, else exponential + jitter.

Retried: 429 (not `insufficient_quota`), 500/502/503/504, timeouts, dropped connections,
truncated or garbled responses. Not retried: other 4xx. Each wait is capped at 60 s; a
server's hint, which also pauses the model after a 429, at 10 minutes.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from evalkit.providers import ProviderError

MAX_WAIT_S = 60.0
MAX_HINT_S = 600.0  # per-minute limits reset well within it; a longer hint would stall the run
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})

T = TypeVar("T")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """Seconds in an OpenAI reset header: '1s', '6m0s', '20ms', '1h2m3.5s', or a bare '0.5'."""
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """How long the server asked us to wait, in seconds (at most `MAX_HINT_S`), or None if it
    did not say.

    `retry-after-ms` is the most precise, then `retry-after` (seconds or an HTTP date), then
    the later of `x-ratelimit-reset-requests` / `-tokens`. Capped where it is read: a 429's
    hint pauses the whole model, and a hint of a day (or of `1e400` s) would stall the run.
    """
    hint = _asked_wait(headers)
    return None if hint is None else min(hint, MAX_HINT_S)


def _asked_wait(headers: Mapping[str, str]) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    after = headers.get("retry-after")
    if after is not None:
        seconds = parse_duration(after)
        if seconds is not None:
            return seconds
        try:
            when = email.utils.parsedate_to_datetime(after)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError, OverflowError):
            pass
    resets = [
        parse_duration(headers[name])
        for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
        if name in headers
    ]
    known = [r for r in resets if r is not None]
    return max(known) if known else None


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


def wait_after(error: BaseException | None, failed_attempts: int, initial_s: float) -> float:
    """Seconds to wait after `failed_attempts` attempts: the server's hint (capped), else
    exponential back-off with jitter."""
    hint = error.retry_after if isinstance(error, ProviderError) else None
    if hint is not None:
        return min(float(hint), MAX_WAIT_S)
    exponential: float = initial_s * 2.0 ** (failed_attempts - 1)
    return min(MAX_WAIT_S, exponential + random.uniform(0.0, initial_s))


class _ServerHintOrBackoff:
    def __init__(self, initial_s: float, earlier_attempts: int) -> None:
        self._initial_s = initial_s
        self._earlier = earlier_attempts

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return wait_after(exc, self._earlier + state.attempt_number, self._initial_s)


def policy(
    max_attempts: int, initial_wait_s: float = 0.5, earlier_attempts: int = 0
) -> AsyncRetrying:
    """A retry loop for one request: `async for attempt in policy(...): with attempt:`.

    `with_retries` makes the first attempt itself and enters this loop only after a
    retryable failure (`earlier_attempts=1`): building a tenacity loop for every request cost
    more CPU than the request's HTTP.
    """
    return AsyncRetrying(
        stop=stop_after_attempt(max(1, max_attempts)),
        wait=_ServerHintOrBackoff(initial_wait_s, earlier_attempts),
        retry=retry_if_exception(_is_retryable),
        reraise=True,
    )


async def with_retries(
    attempt: Callable[[], Awaitable[T]], max_attempts: int, initial_wait_s: float = 0.5
) -> tuple[T | ProviderError, int]:
    """The first success of `attempt`, or its last ProviderError, and the attempts made.

    The first attempt goes without tenacity (most requests need no retry); after a retryable
    failure, `policy` waits and tries again, up to `max_attempts` in all. Any other exception
    (a cancellation, a bug) propagates.
    """
    made = 1
    try:
        return await attempt(), made
    except ProviderError as first:
        if not first.retryable or max_attempts <= 1:
            return first, made
        await asyncio.sleep(wait_after(first, 1, initial_wait_s))
    try:
        async for trying in policy(max_attempts - 1, initial_wait_s, earlier_attempts=1):
            with trying:
                made += 1
                result = await attempt()
    except ProviderError as last:
        return last, made
    return result, made
