"""Per-model pacing: AIMD concurrency on 429, pauses, per-minute budgets."""

from __future__ import annotations

import asyncio

from evalkit.execution.limits import ModelLimits, _Bucket


def test_a_429_halves_the_limit_and_successes_grow_it_back() -> None:
    async def scenario() -> list[int]:
        limits = ModelLimits(8)
        seen = []
        await limits.acquire(1)
        await limits.release(rate_limited_for=0.0)
        seen.append(limits.limit)
        await limits.acquire(1)
        await limits.release(rate_limited_for=0.0)
        seen.append(limits.limit)
        for _ in range(2 + 3 + 4 + 5):  # one success per slot grows the limit by one
            await limits.acquire(1)
            await limits.release()
        seen.append(limits.limit)
        for _ in range(100):
            await limits.acquire(1)
            await limits.release()
        seen.append(limits.limit)
        return seen

    assert asyncio.run(scenario()) == [4, 2, 6, 8]


def test_in_flight_never_exceeds_the_limit() -> None:
    async def scenario() -> int:
        limits = ModelLimits(3)
        peak = 0

        async def one() -> None:
            nonlocal peak
            await limits.acquire(1)
            peak = max(peak, limits.in_flight)
            await asyncio.sleep(0.001)
            await limits.release()

        await asyncio.gather(*(one() for _ in range(30)))
        return peak

    assert asyncio.run(scenario()) == 3


def test_a_pause_holds_every_request_of_the_model() -> None:
    async def scenario() -> tuple[float, float]:
        limits = ModelLimits(4)
        await limits.acquire(1)
        await limits.release(rate_limited_for=0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await limits.acquire(1)
        return loop.time() - started, limits.paused_until

    waited, _ = asyncio.run(scenario())
    assert waited >= 0.04


def test_bucket_gives_its_capacity_then_asks_to_wait() -> None:
    bucket = _Bucket(per_minute=60)  # one per second
    for _ in range(60):
        assert bucket.wait_for(1) == 0
        bucket.take(1)
    assert 0.5 < bucket.wait_for(1) <= 1.0
    big = _Bucket(per_minute=100)
    assert big.wait_for(1000) == 0  # larger than a minute's budget: goes when the bucket is full
