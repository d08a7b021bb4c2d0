"""Daemon threads that run the event loop's slow calls (checks), each under a time limit.

Python cannot kill a thread, so a call past its limit is abandoned: its future fails with
`TimedOut` at once, a fresh thread takes the stuck one's place, and the stuck one is asked to
stop (an exception raised in it: a Python loop ends at once, a blocking C call when it
returns) and ends whenever it does, if ever. Daemon threads never keep the process alive.
Past `MAX_ABANDONED` stuck threads a new call fails at once (`TooManyStuck`) instead of
leaking threads without bound. The limit counts from when the call starts, not while it
waits for a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

THREADS = min(32, (os.cpu_count() or 1) + 4)  # as concurrent.futures sizes its pools
MAX_ABANDONED = 32  # stuck threads tolerated before further calls are refused

_QUEUED, _RUNNING, _DONE, _CANCELLED, _ABANDONED = range(5)


class TimedOut(Exception):
    """The call ran past its time limit; its thread was abandoned."""


class TooManyStuck(Exception):
    """Too many earlier calls are still running past their limits: this one was not started."""


class _Job(Generic[T]):
    __slots__ = ("fn", "future", "limit_s", "loop", "started", "state", "thread", "timer")

    def __init__(self, fn: Callable[[], T], limit_s: float, loop: asyncio.AbstractEventLoop):
        self.fn = fn
        self.limit_s = limit_s
        self.loop = loop
        self.future: asyncio.Future[T] = loop.create_future()
        self.state = _QUEUED
        self.started = 0.0
        self.thread = 0  # the ident of the thread running it
        self.timer: asyncio.TimerHandle | None = None


class TimeLimitedThreads:
    """A pool of daemon threads whose calls each get `limit_s` seconds of running time."""

    def __init__(self, size: int = THREADS, max_abandoned: int = MAX_ABANDONED) -> None:
        self._size = size
        self._max_abandoned = max_abandoned
        self._jobs: queue.SimpleQueue[_Job[Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the counts below
        self._threads = 0  # live threads, abandoned ones not counted
        self._idle = 0  # threads waiting for a job that no call has claimed yet
        self._backlog = 0  # queued calls that found no idle thread and could start none
        self._abandoned = 0  # threads still running a call past its limit

    def submit(self, fn: Callable[[], T], limit_s: float) -> asyncio.Future[T]:
        """`fn()` in a thread; the future fails with TimedOut once it has run `limit_s`."""
        loop = asyncio.get_running_loop()
        job = _Job(fn, limit_s, loop)
        if self._abandoned >= self._max_abandoned:
            job.future.set_exception(self._refusal())
            return job.future
        job.timer = loop.call_later(limit_s, self._overdue, job)
        job.future.add_done_callback(lambda _: self._forget(job))
        self._jobs.put(job)
        with self._lock:
            if self._idle:
                self._idle -= 1  # an idle thread takes it
            elif not self._grow():
                self._backlog += 1  # the next thread to finish a call takes it
        return job.future

    def _refusal(self) -> TooManyStuck:
        return TooManyStuck(f"not run: {self._abandoned} checks are still running past their limit")

    def _grow(self) -> bool:
        """(With the lock held.) Start a thread for one queued call, unless the pool is full."""
        if self._threads >= self._size:
            return False
        self._threads += 1
        threading.Thread(target=self._work, name="evalkit-check", daemon=True).start()
        return True

    def _work(self) -> None:
        """Take one queued call per claim: each queued call is claimed exactly once, by an
        idle thread, a new thread, or (backlog) the next thread that finishes a call."""
        while True:
            job = self._jobs.get()
            with contextlib.suppress(_Stop):  # a stop that came as the call was ending
                self._run(job)
            with self._lock:
                if job.state == _ABANDONED:
                    self._abandoned -= 1
                    return  # another thread has taken this one's place
                if self._backlog:
                    self._backlog -= 1  # a call is waiting: take it
                else:
                    self._idle += 1

    def _run(self, job: _Job[Any]) -> None:
        with self._lock:
            if job.state != _QUEUED:
                return  # cancelled while it waited
            refused = self._abandoned >= self._max_abandoned
            if refused:
                job.state = _DONE
            else:
                job.state, job.started, job.thread = (
                    _RUNNING,
                    time.monotonic(),
                    threading.get_ident(),
                )
        outcome: tuple[bool, Any]
        if refused:
            outcome = (False, self._refusal())
        else:
            try:
                outcome = (True, job.fn())
            except BaseException as exc:  # fn should not raise; if it does, the caller sees it
                outcome = (False, exc if isinstance(exc, Exception) else RuntimeError(exc))
            with self._lock:
                if job.state == _ABANDONED:
                    return  # its caller has been told it timed out
                job.state = _DONE
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            job.loop.call_soon_threadsafe(_settle, job.future, outcome)

    def _overdue(self, job: _Job[Any]) -> None:
        """On the loop, when the job may have run out of time: abandon it, or look again later."""
        with self._lock:
            if job.state == _QUEUED:
                left = job.limit_s  # not started yet: its time has not begun
            elif job.state == _RUNNING:
                left = job.limit_s - (time.monotonic() - job.started)
                if left <= 0:
                    self._abandon(job)
            else:
                return  # finished: its result is on its way
        if job.state != _ABANDONED:
            job.timer = job.loop.call_later(left, self._overdue, job)
            return
        if not job.future.done():
            job.future.set_exception(TimedOut(f"timed out after {job.limit_s:g} s"))
        self._replace()

    def _forget(self, job: _Job[Any]) -> None:
        """The future is done: stop its timer. If it was cancelled (the run is stopping), a
        queued call will not start and a running one is abandoned now."""
        if job.timer is not None:
            job.timer.cancel()
        with self._lock:
            if job.state == _QUEUED:
                job.state = _CANCELLED
            elif job.state == _RUNNING:
                self._abandon(job)
        self._replace()

    def _abandon(self, job: _Job[Any]) -> None:
        """(With the lock held.) The job's thread no longer counts as one of the pool's, and
        is asked to stop: Python code stops at its next instruction (unless it swallows the
        exception), code blocked in C when it comes back (see `_ask_to_stop`)."""
        job.state = _ABANDONED
        self._threads -= 1
        self._abandoned += 1
        _ask_to_stop(job.thread)

    def _replace(self) -> None:
        """A thread was abandoned: the calls waiting for a busy thread get a new one."""
        with self._lock:
            if self._backlog and self._grow():
                self._backlog -= 1


class _Stop(BaseException):
    """Raised inside a call past its limit (a BaseException: `except Exception` won't hold it)."""


def _ask_to_stop(thread: int) -> None:
    """Raise `_Stop` in `thread` at its next bytecode: CPython's PyThreadState_SetAsyncExc,
    which threading itself uses no API for; a no-op where there is no such call."""
    import ctypes  # rarely needed: not imported with evalkit

    set_async_exc = getattr(ctypes.pythonapi, "PyThreadState_SetAsyncExc", None)
    if set_async_exc is not None:
        set_async_exc(ctypes.c_ulong(thread), ctypes.py_object(_Stop))


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


_shared: TimeLimitedThreads | None = None


def check_threads() -> TimeLimitedThreads:
    """The process's one pool: its threads and its count of stuck ones span every run."""
    global _shared
    if _shared is None:
        _shared = TimeLimitedThreads()
    return _shared
