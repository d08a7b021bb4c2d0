"""Per-model pacing: requests in flight, requests and tokens per minute, back-off on 429.

Concurrency is additive-increase / multiplicative-decrease: a 429 halves the number of
requests allowed in flight and pauses the whole model for the time the server asked; each
run of successes as long as the current limit grows it by one, back to the configured cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque


class _Bucket:
    """A token bucket refilled continuously at `per_minute`."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self.rate = per_minute / 60.0
        self.stamp = time.monotonic()

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 when it is now)."""
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        amount = min(amount, self.capacity)  # a request larger than a minute's budget still goes
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= min(amount, self.capacity)


class ModelLimits:
    """The gate every request to one model passes before it is sent.

    Single-threaded (one event loop): a request that finds a free slot, no pause and no
    per-minute limit takes it at once, without a lock; one that finds none waits in line,
    first come first served, and a release wakes only as many waiters as there are free
    slots (not every waiter, each to find the slot taken).
    """

    def __init__(self, concurrency: int, rpm: int | None = None, tpm: int | None = None) -> None:
        self.cap = concurrency
        self.limit = concurrency
        self.in_flight = 0
        self.paused_until = 0.0
        self._successes = 0
        self._rpm = _Bucket(rpm) if rpm else None
        self._tpm = _Bucket(tpm) if tpm else None
        self.counts_tokens = self._tpm is not None  # only then is a request's size estimated
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._woken = 0  # waiters woken for a free slot that have not run yet

    async def acquire(self, tokens: int) -> None:
        """Wait for a slot, the end of any pause, and room in the per-minute budgets."""
        try:
            await self._acquire(tokens)
        except BaseException:
            self._wake()  # a waiter cancelled on its way: any slot it leaves goes to the next
            raise

    async def _acquire(self, tokens: int) -> None:
        woken = False  # once woken, a waiter goes before those still in line
        while True:
            if self.paused_until:
                pause = self.paused_until - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                    continue
            if woken:
                blocked = self.in_flight >= self.limit
            else:  # a newcomer neither takes a slot a woken waiter was given, nor jumps the line
                blocked = self.in_flight + self._woken >= self.limit or bool(self._waiters)
            if blocked:
                await self._wait_for_slot()
                woken = True
                continue
            wait = max(
                self._rpm.wait_for(1) if self._rpm else 0.0,
                self._tpm.wait_for(tokens) if self._tpm else 0.0,
            )
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if self._rpm:
                self._rpm.take(1)
            if self._tpm:
                self._tpm.take(tokens)
            self.in_flight += 1
            self._wake()  # a slot still free goes to the next in line
            return

    async def _wait_for_slot(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._woken -= 1
                self._wake()  # woken, then cancelled: the wake-up goes to the next in line
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        self._woken -= 1

    def _wake(self) -> None:
        """Wake as many waiters as there are free slots."""
        free = self.limit - self.in_flight - self._woken
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1
                free -= 1

    async def release(self, rate_limited_for: float | None = None, ok: bool = True) -> None:
        """Give the slot back; after a 429, shrink and pause (`rate_limited_for` seconds)."""
        self.in_flight -= 1
        if rate_limited_for is not None:
            self.limit = max(1, self.limit // 2)
            self._successes = 0
            until = time.monotonic() + rate_limited_for
            self.paused_until = max(self.paused_until, until)
        elif ok and self.limit < self.cap:
            self._successes += 1
            if self._successes >= self.limit:
                self.limit += 1
                self._successes = 0
        self._wake()
