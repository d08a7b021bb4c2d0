"""The check threads: every call gets a thread in the end, however many were abandoned."""

from __future__ import annotations

import asyncio
import time

import pytest

from evalkit.scoring.threads import TimedOut, TimeLimitedThreads


def _spin() -> None:
    while True:  # a Python loop: stopped at once when its thread is abandoned
        pass


def test_a_call_after_the_last_thread_was_abandoned_still_runs() -> None:
    """A thread that finished a call while another waited left the pool believing one more
    thread was idle than was; once that thread was abandoned, the next call waited forever
    in the queue with no thread alive to take it."""

    async def scenario() -> str:
        pool = TimeLimitedThreads(size=1)
        first = pool.submit(lambda: time.sleep(0.1), 5.0)
        queued = pool.submit(lambda: "waited for the busy thread", 5.0)
        await first
        assert await queued == "waited for the busy thread"
        with pytest.raises(TimedOut):
            await pool.submit(_spin, 0.2)  # the pool's only thread is abandoned
        return await asyncio.wait_for(asyncio.shield(pool.submit(lambda: "ran", 5.0)), 10.0)

    assert asyncio.run(scenario()) == "ran"


def test_calls_beyond_the_pool_size_wait_for_a_thread_and_all_finish() -> None:
    async def scenario() -> list[int]:
        pool = TimeLimitedThreads(size=2)
        calls = [pool.submit(lambda i=i: (time.sleep(0.01), i)[1], 5.0) for i in range(20)]
        return list(await asyncio.wait_for(asyncio.gather(*calls), 10.0))

    assert asyncio.run(scenario()) == list(range(20))
