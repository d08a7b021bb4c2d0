"""Scoring a request's samples with the suite's checks, without ever blocking the event loop.

Cheap built-in checks run inline: they cost microseconds, and a thread hop would cost more
(a regex too, when it answers within `INLINE_REGEX_S`). The kinds that may be slow
(`checkspec.TIMED_KINDS`: user code, backtracking patterns, big schemas or texts) run in
the process's check threads, each under its time limit (`timeout_s`, else
`CHECK_TIMEOUT_S`), so the loop keeps sending, timing answers and handling signals. A
`python:` module is loaded once per run, in a thread under the same kind of limit, and a
module that failed to load is not tried again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from evalkit.scoring.checks import Record, Verdict, broken, negated, timed_out
from evalkit.scoring.evaluate import evaluate
from evalkit.scoring.python_checks import call_python, load_module
from evalkit.scoring.text_checks import regex
from evalkit.scoring.threads import TimedOut, TimeLimitedThreads, TooManyStuck, check_threads
from evalkit.suite.checkspec import GRADED_BY_A_MODEL, TIMED_KINDS, Check

INLINE_REGEX_S = 0.002  # a regex is tried this long on the loop (most take microseconds)


class Scorer:
    """The checks of one run: where each runs, and the run's python modules."""

    def __init__(self, folder: Path, threads: TimeLimitedThreads | None = None) -> None:
        self.folder = folder
        self.threads = threads or check_threads()
        self._modules: dict[str, asyncio.Future[ModuleType | str]] = {}

    async def score(self, entry: dict[str, Any], checks: Mapping[str, Check]) -> None:
        """Each choice's verdicts, stored with it (judge and moderation checks come later)."""
        if all(check.kind in GRADED_BY_A_MODEL for check in checks.values()):
            for choice in entry.get("choices") or []:
                choice["checks"] = {}  # nothing to check here: no record to build
            return
        base = {k: v for k, v in entry.items() if k != "choices"}
        timed: list[tuple[dict[str, Any], str, Check, Awaitable[Verdict]]] = []
        for choice in entry.get("choices") or []:
            record = {
                **base,
                "finish_reason": choice.get("finish_reason"),
                "tool_calls": choice.get("tool_calls"),
            }
            output = choice.get("text") or ""
            verdicts: dict[str, Any] = {}
            for name, check in checks.items():
                if check.kind in GRADED_BY_A_MODEL:
                    continue
                verdict = _inline(check, output, record)
                if verdict is None:
                    verdicts[name] = None  # keeps the checks' order; filled in below
                    timed.append((verdicts, name, check, self._start(check, output, record)))
                else:
                    verdicts[name] = _row(verdict)
            choice["checks"] = verdicts
        if timed:
            results = await asyncio.gather(*(t[3] for t in timed), return_exceptions=True)
            for (verdicts, name, check, _), result in zip(timed, results, strict=True):
                verdicts[name] = _row(_verdict(check, result))

    def _start(self, check: Check, output: str, record: dict[str, Any]) -> Awaitable[Verdict]:
        """The check's verdict from a thread (a python check's after its module's load)."""
        if check.kind != "python":
            return self.threads.submit(partial(evaluate, check, output, record), check.time_limit)
        name = check.arg.split(":", 1)[0]
        if name not in self._modules:
            load = partial(load_module, self.folder, name)
            self._modules[name] = self.threads.submit(load, check.time_limit)
        loading = self._modules[name]
        if not loading.done() or loading.exception() is not None:
            return self._python_after_load(check, output, record, name)
        call = partial(_python, check, loading.result(), output, record)
        return self.threads.submit(call, check.time_limit)

    async def _python_after_load(
        self, check: Check, output: str, record: dict[str, Any], name: str
    ) -> Verdict:
        try:
            module = await asyncio.shield(self._modules[name])
        except TimedOut as exc:
            module = f"importing {name} {exc}"
        except TooManyStuck:
            del self._modules[name]  # not tried yet: try again once threads are free
            raise
        call = partial(_python, check, module, output, record)
        return await self.threads.submit(call, check.time_limit)


def _inline(check: Check, output: str, record: dict[str, Any]) -> Verdict | None:
    """The verdict, when it can be had on the loop at once; None when it needs a thread."""
    if check.kind not in TIMED_KINDS:
        return evaluate(check, output, record)
    if check.kind == "regex":
        quick = regex(check.arg, output, record, INLINE_REGEX_S)
        if not quick.error:
            return negated(check, quick)
    return None


def _python(check: Check, module: ModuleType | str, output: str, record: Record) -> Verdict:
    return negated(check, call_python(module, check.arg, output, record))


def _verdict(check: Check, result: Verdict | BaseException) -> Verdict:
    if isinstance(result, TimedOut):
        return timed_out(check.time_limit)
    if isinstance(result, TooManyStuck):
        return broken(str(result))
    if isinstance(result, BaseException):
        raise result  # a bug in a built-in check: the run fails, as it would inline
    return result


def _row(verdict: Verdict) -> list[Any]:
    return [verdict.passed, verdict.score, verdict.reason]
