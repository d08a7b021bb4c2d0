"""A model's part of a batch run: its first round written as batch lines, then its workers.

Online, each worker has one request in flight. A batch holds a whole round in flight, and a
worker waiting on each of its requests would cost kilobytes apiece (the worker's coroutines,
its request and body): 250 MB for 50,000 lines. So the first round is one walk of the
model's stream that writes each request as a line (`BatchProvider.add`: a key in memory, the
body on disk) and waits for those batches to end; then the workers walk the stream again, as
online, and find each answer there. Rendering each case twice is the price of that memory.

A request that must wait for a later batch (a line sent again, a raised `max_tokens` round,
the next sample of `until_stop`) parks its worker, and one more worker starts in its place:
so every such request of the run joins the same next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from evalkit.batch.provider import BatchProvider
from evalkit.execution.dispatch import Dispatcher
from evalkit.execution.limits import ModelLimits
from evalkit.models.targets import Target
from evalkit.planning.plan import Group
from evalkit.planning.planner import Planner

YIELD_EVERY = 500  # lines written between two turns of the event loop (progress, signals)


async def run_model(
    state: Dispatcher,
    target: Target,
    provider: BatchProvider,
    limits: ModelLimits,
    planner: Planner,
    workers: int,
) -> None:
    """Send `target`'s share of the run through `provider`, then score and journal it."""
    await send_first_round(state, provider, planner.groups(target))
    work = planner.groups(target)
    crew = Crew(lambda: state.worker(target, provider, limits, work))
    provider.on_park = crew.spawn
    for _ in range(workers):
        crew.spawn()
    await crew.finish()


async def send_first_round(
    state: Dispatcher, provider: BatchProvider, groups: Iterator[Group]
) -> None:
    """Each group's first-round requests as lines (those the sender would send, as far as
    `--max-cost` reaches at their most), and wait for their batches to end."""
    budget, sender = state.budget, state.sender
    planned, written = 0.0, 0
    for group in groups:
        numbers = range(1) if group.select == "until_stop" else range(group.samples)
        for number in numbers:
            request = group.request(number, group.params.max_tokens)
            if not sender.would_send(request):
                continue
            if budget.limit is not None:
                planned += sender.most_cost(request)
                if budget.spent + planned > budget.limit:
                    await provider.drain()  # the workers stop at the same request
                    return
            provider.add(request)
            written += 1
            if written % YIELD_EVERY == 0:
                await asyncio.sleep(0)
    await provider.drain()


class Crew:
    """Workers that may grow: one more starts whenever one parks on a batch."""

    def __init__(self, start: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._start = start
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures: list[BaseException] = []

    def spawn(self) -> None:
        task = asyncio.get_running_loop().create_task(self._start())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self._failures.append(error)

    async def finish(self) -> None:
        """Wait for every worker; the first one that failed raises here, once all are done."""
        try:
            while self._tasks:
                await asyncio.wait(set(self._tasks))
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._failures:
            raise self._failures[0]
