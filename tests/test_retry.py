"""evalkit.execution.retry: the back-off between attempts and the loop that decides what is sent again.

Header parsing (`retry_after`, `parse_duration`) and the provider's classification of
failures are tested in test_openai_provider.py and test_hostile_server.py; here: `wait_after`
(the server's hint vs exponential back-off, jitter, caps), `policy` (what it retries, when
it stops) and `with_retries` (the first attempt, then the policy), each with real
`ProviderError`s and no server.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence

import httpx
import pytest
from tenacity import AsyncRetrying

from evalkit.execution.retry import (
    MAX_HINT_S,
    MAX_WAIT_S,
    policy,
    retry_after,
    wait_after,
    with_retries,
)
from evalkit.providers import ProviderError


def _error(retryable: bool = True, hint: float | None = None) -> ProviderError:
    return ProviderError("server_error", "boom", retryable=retryable, status=503, retry_after=hint)


@pytest.mark.parametrize("attempts", [1, 2, 3, 4, 5])
def test_backoff_doubles_with_jitter_below_one_initial_wait(attempts: int) -> None:
    floor = 0.5 * 2 ** (attempts - 1)
    waits = [wait_after(_error(), attempts, 0.5) for _ in range(200)]
    assert all(floor <= w <= floor + 0.5 for w in waits)
    assert len(set(waits)) > 1  # jittered, not a fixed step


def test_backoff_is_reproducible_under_a_seed() -> None:
    random.seed(7)
    first = [wait_after(None, k, 1.0) for k in range(1, 6)]
    random.seed(7)
    assert [wait_after(None, k, 1.0) for k in range(1, 6)] == first
    assert first == sorted(first)  # each wait longer than the one before (jitter < step)


def test_backoff_is_capped_at_max_wait() -> None:
    assert wait_after(_error(), 30, 0.5) == MAX_WAIT_S
    assert wait_after(ValueError("not a provider error"), 12, 1.0) == MAX_WAIT_S


def test_server_hint_replaces_backoff_and_is_capped_at_max_wait() -> None:
    assert wait_after(_error(hint=2.5), 6, 0.5) == 2.5  # not 16 s of back-off
    assert wait_after(_error(hint=0.0), 3, 0.5) == 0.0
    assert wait_after(_error(hint=MAX_HINT_S), 1, 0.5) == MAX_WAIT_S


def test_a_non_provider_error_gets_plain_backoff() -> None:
    wait = wait_after(TimeoutError(), 1, 0.25)
    assert 0.25 <= wait <= 0.5


def test_hint_from_real_response_headers_feeds_the_wait() -> None:
    response = httpx.Response(429, headers={"Retry-After": "4", "x-ratelimit-reset-tokens": "9s"})
    hint = retry_after(response.headers)
    assert hint == 4.0
    assert wait_after(_error(hint=hint), 1, 0.5) == 4.0


def test_reset_header_longer_than_max_hint_is_capped() -> None:
    headers = httpx.Headers({"x-ratelimit-reset-requests": "2h", "x-ratelimit-reset-tokens": "1s"})
    assert retry_after(headers) == MAX_HINT_S


def _run(loop_policy: AsyncRetrying, failures: Sequence[BaseException]) -> tuple[int, str | None]:
    """Attempts made by `policy` when the attempts raise `failures` in turn, then succeed."""
    calls = 0

    async def main() -> str | None:
        nonlocal calls
        async for attempt in loop_policy:
            with attempt:
                calls += 1
                if calls <= len(failures):
                    raise failures[calls - 1]
                return "ok"
        return None

    result = asyncio.run(main())
    return calls, result


def test_policy_retries_retryable_errors_until_success() -> None:
    calls, result = _run(policy(5, initial_wait_s=0.0), [_error(), _error()])
    assert (calls, result) == (3, "ok")


def test_policy_stops_at_max_attempts_and_reraises_the_last_error() -> None:
    errors = [_error() for _ in range(5)]
    with pytest.raises(ProviderError) as raised:
        _run(policy(3, initial_wait_s=0.0), errors)
    assert raised.value is errors[2]


@pytest.mark.parametrize(
    "error",
    [
        ProviderError("insufficient_quota", "pay up", retryable=False, status=429),
        ProviderError("bad_request", "nope", retryable=False, status=400),
        ValueError("a bug, not a provider failure"),
    ],
)
def test_policy_does_not_retry_what_is_not_retryable(error: BaseException) -> None:
    attempts = 0

    async def main() -> None:
        nonlocal attempts
        async for attempt in policy(5, initial_wait_s=0.0):
            with attempt:
                attempts += 1
                raise error

    with pytest.raises(type(error)):
        asyncio.run(main())
    assert attempts == 1


def test_policy_makes_at_least_one_attempt() -> None:
    with pytest.raises(ProviderError):
        _run(policy(0, initial_wait_s=0.0), [_error(), _error()])


def test_policy_counts_earlier_attempts_in_the_backoff() -> None:
    """The runner's own first attempt counts: the loop's first wait is back-off step two."""

    class _Outcome:
        def exception(self) -> BaseException:
            return _error()

    class _State:
        attempt_number = 1
        outcome = _Outcome()

    fresh = policy(3, initial_wait_s=1.0).wait(_State())  # type: ignore[arg-type]
    after_one = policy(3, initial_wait_s=1.0, earlier_attempts=1).wait(_State())  # type: ignore[arg-type]
    assert 1.0 <= fresh <= 2.0  # 1 * 2**0 + jitter in [0, 1]
    assert 2.0 <= after_one <= 3.0  # 1 * 2**1 + jitter in [0, 1]


def _attempts(*outcomes: BaseException | str) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    """A call that raises or returns `outcomes` in turn, and the list of its calls."""
    calls: list[int] = []

    async def call() -> str:
        calls.append(len(calls) + 1)
        outcome = outcomes[len(calls) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return calls, call


def test_with_retries_returns_the_first_success_and_the_attempts_made() -> None:
    calls, call = _attempts("ok")
    assert asyncio.run(with_retries(call, 5, 0.001)) == ("ok", 1) and calls == [1]
    calls, call = _attempts(_error(hint=0.0), _error(hint=0.0), "ok")
    assert asyncio.run(with_retries(call, 5, 0.001)) == ("ok", 3) and len(calls) == 3


def test_with_retries_returns_the_last_error_when_attempts_run_out() -> None:
    last = _error(hint=0.0)
    calls, call = _attempts(_error(hint=0.0), _error(hint=0.0), last)
    assert asyncio.run(with_retries(call, 3, 0.001)) == (last, 3) and len(calls) == 3


@pytest.mark.parametrize("max_attempts", [1, 5])
def test_with_retries_sends_what_is_not_retryable_once(max_attempts: int) -> None:
    refused = _error(retryable=False)
    calls, call = _attempts(refused, "never")
    assert asyncio.run(with_retries(call, max_attempts, 0.001)) == (refused, 1)
    retryable = _error(hint=0.0)
    calls, call = _attempts(retryable, "never")
    assert asyncio.run(with_retries(call, 1, 0.001)) == (retryable, 1) and calls == [1]


def test_with_retries_stops_at_an_error_that_is_not_retryable_after_a_retry() -> None:
    refused = _error(retryable=False)
    calls, call = _attempts(_error(hint=0.0), refused, "never")
    assert asyncio.run(with_retries(call, 5, 0.001)) == (refused, 2) and len(calls) == 2


def test_with_retries_lets_other_exceptions_through() -> None:
    _, call = _attempts(_error(hint=0.0), KeyError("bug"))
    with pytest.raises(KeyError):
        asyncio.run(with_retries(call, 5, 0.001))
