"""Progress per model: a live bar on a terminal, a plain line every few seconds in CI.

Workers only bump counters (cheap); a separate task draws them, so drawing never slows the
requests down.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import IO, Any


@dataclass
class Tally:
    total: int
    done: int = 0
    errors: int = 0
    cached: int = 0
    tokens: int = 0
    cost: float = 0.0


class Progress:
    """Counters per model, drawn live (rich) or as periodic plain lines."""

    def __init__(
        self,
        totals: dict[str, int],
        live: bool,
        stream: IO[str] | None = None,
        every_s: float = 10.0,
    ) -> None:
        self.tallies = {model: Tally(total) for model, total in totals.items()}
        self._live = live
        self._stream = stream or sys.stderr
        self._every_s = every_s
        self._started = time.monotonic()
        self._rich: Any = None
        self._tasks: dict[str, Any] = {}

    def record(self, model: str, tokens: int, cost: float, error: bool, cached: bool) -> None:
        tally = self.tallies[model]
        tally.done += 1
        tally.tokens += tokens
        tally.cost += cost
        tally.errors += error
        tally.cached += cached

    def note(self, line: str) -> None:
        """A line of its own (a batch's status): above the live bars, or printed as it is."""
        if self._rich is not None:
            self._rich.console.print(line, markup=False, highlight=False)
            return
        elapsed = time.monotonic() - self._started
        print(f"[{elapsed:7.1f}s] {line}", file=self._stream, flush=True)

    async def draw_until_cancelled(self) -> None:
        if self._live:
            self._start_rich()
        try:
            while True:
                await asyncio.sleep(0.2 if self._live else self._every_s)
                self._draw()
        finally:
            self._draw()
            if self._rich is not None:
                self._rich.stop()

    def _start_rich(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._rich = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        for model, tally in self.tallies.items():
            self._tasks[model] = self._rich.add_task(model, total=tally.total, detail="")
        self._rich.start()

    def _draw(self) -> None:
        if self._rich is not None:
            for model, tally in self.tallies.items():
                self._rich.update(self._tasks[model], completed=tally.done, detail=_detail(tally))
            return
        elapsed = time.monotonic() - self._started
        for model, tally in self.tallies.items():
            eta = ""
            if 0 < tally.done < tally.total:
                eta = f", ETA {elapsed / tally.done * (tally.total - tally.done):.0f}s"
            line = f"{model}: {tally.done}/{tally.total} done, {_detail(tally)}{eta}"
            print(
                f"[{elapsed:7.1f}s] {line}",
                file=self._stream,
                flush=True,
            )


def _detail(tally: Tally) -> str:
    return (
        f"{tally.errors} errors, {tally.cached} cached, {tally.tokens:,} tokens, ${tally.cost:.4f}"
    )
