"""`FakeOpenAI`: the HTTP server, its routes, and the thread or event loop it runs in.

Why a real server instead of mocking the client: it exercises the actual HTTP stack (connection
pooling, timeouts, retries on 429/5xx, SSE parsing, dropped connections) exactly as production does.
What it answers is in `fake_openai.answers`; how it misbehaves, in `fake_openai.faults`.

Usage from pytest::

    with FakeOpenAI(latency_ms=0) as server:
        server.script([{"status": 429, "retry_after": "0.05"}, "ok"])
        ...  # point the client at server.url
        assert server.count("/v1/chat/completions") == 2

From another process: ``python -m fake_openai --port 0 --no-log`` prints
``listening on http://127.0.0.1:PORT``; ``GET /_stats`` returns the request counts,
``POST /_reset`` clears them and ``POST /_script`` (a JSON list of faults) scripts faults.

The Batch API (``/v1/files``, ``/v1/batches``) lives in ``batch_files``, ``batches`` and
``batch_routes``; ``batch_seconds`` sets how long a batch takes, ``script_batches`` its faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from fake_openai import answers, responses
from fake_openai.batch_files import FileStore, add_file_routes
from fake_openai.batch_routes import add_batch_routes
from fake_openai.batches import BatchService
from fake_openai.faults import Fault, FaultScript, early_answer, misreport_usage, truncated
from fake_openai.jobs import BadRequest, Job, parse_job
from fake_openai.wire import (
    JSON_HEADERS,
    SSE_DONE,
    SSE_HEADERS,
    dumps,
    error_body,
    error_response,
    loads,
)

HOST = "127.0.0.1"


@dataclass(frozen=True)
class RequestRecord:
    """One received request, as the client sent it, for assertions in tests."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None when the body was empty or not JSON
    query: dict[str, str] = field(default_factory=dict)  # the URL's query parameters

    @property
    def suffix(self) -> str | None:
        """The insert-mode ``suffix`` of a completions request, if any."""
        if isinstance(self.body, dict):
            value = self.body.get("suffix")
            return value if isinstance(value, str) else None
        return None


class FakeOpenAI:
    """Loopback fake OpenAI server with scriptable faults; see the module docstring.

    Args:
        latency_ms: sleep (``asyncio.sleep``) before answering each completion request.
        model_latency_ms: per-model override of ``latency_ms``.
        api_key: when set, ``/v1/*`` requires ``Authorization: Bearer <api_key>`` (else 401).
        rate_429: probability that a completion request (with no scripted fault pending) gets
            a 429 with ``Retry-After: 0.01``; deterministic given ``seed``.
        seed: seeds the ``rate_429`` draws (re-seeded by ``reset()``).
        record: store every request in ``requests``; ``False`` keeps only counters (benchmarks).
        port: 0 picks a free port.
        models: ids listed by ``GET /v1/models``.
        batch_seconds: how long a batch takes from ``validating`` to ``completed``.

    The attributes ``latency_ms``, ``model_latency_ms``, ``api_key`` and ``rate_429`` may be
    changed while the server runs; each request reads them afresh.
    """

    def __init__(
        self,
        latency_ms: float = 0.0,
        *,
        model_latency_ms: Mapping[str, float] | None = None,
        api_key: str | None = None,
        rate_429: float = 0.0,
        seed: int = 0,
        record: bool = True,
        port: int = 0,
        models: Sequence[str] = ("fake-model",),
        batch_seconds: float = 0.5,
    ) -> None:
        if not 0.0 <= rate_429 <= 1.0:
            raise ValueError("rate_429 must be in [0, 1]")
        self.latency_ms = float(latency_ms)
        self.model_latency_ms: dict[str, float] = dict(model_latency_ms or {})
        self.api_key = api_key
        self.rate_429 = rate_429
        self.seed = seed
        self.record = record
        self.models = list(models)
        self.tokenizer: Callable[[str], int] | None = None  # count prompt tokens like the API
        self._requested_port = port
        self._lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._by_path: dict[str, int] = {}
        self._total = 0
        self._faults = FaultScript(seed)
        self._ids = itertools.count(1)
        self.batches = BatchService(
            FileStore(),
            {
                "/v1/chat/completions": lambda b, rid: answers.answer(b, True, self.tokenizer, rid),
                "/v1/completions": lambda b, rid: answers.answer(b, False, self.tokenizer, rid),
                "/v1/moderations": lambda b, rid: answers.moderation_answer(b),
                "/v1/responses": lambda b, rid: responses.answer(b, self.tokenizer, rid),
            },
            lambda: f"req_{next(self._ids)}",
            seconds=batch_seconds,
            seed=seed,
        )
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        # background-thread mode
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # ----------------------------------------------------------------- addresses

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeOpenAI is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI ``base_url``: ``http://127.0.0.1:PORT/v1``."""
        return self.base_url + "/v1"

    # ----------------------------------------------------------------- test API

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the received requests, oldest first (empty when ``record=False``)."""
        with self._lock:
            return list(self._log)

    def count(self, path: str | None = None) -> int:
        """Requests received, in total or for ``path`` (``"chat/completions"`` means under /v1)."""
        with self._lock:
            if path is None:
                return self._total
            if not path.startswith("/"):
                path = "/v1/" + path
            return self._by_path.get(path, 0)

    def stats(self) -> dict[str, Any]:
        """What ``GET /_stats`` returns: ``{"count": N, "by_path": {...}}``."""
        with self._lock:
            return {"count": self._total, "by_path": dict(self._by_path)}

    def script(self, faults: Sequence[Any]) -> None:
        """Replace the fault script: one entry is consumed per completion request, in order.

        Entries: ``"ok"``, ``"malformed_json"``, ``"no_choices"``, ``"drop"``, ``"hang"``,
        ``"truncated_sse"``, a status int, or a dict with ``status`` (+ ``retry_after``,
        ``retry_after_ms``, ``headers``, ``code``, ``message``, ``type``) and/or ``delay_ms``
        (extra latency), or ``{"fault": <name>, "delay_ms": N}``. ``{"usage": {...}}`` answers
        normally (not streamed) with those usage keys replaced, a key set to None removed.
        Requests to ``/v1/files`` and ``/v1/batches`` consume entries too (a 429 on an upload).
        """
        self._faults.replace(faults)

    def script_batches(self, faults: Sequence[Any]) -> None:
        """Replace the batch fault script, one entry per created batch (see ``batches``)."""
        self.batches.script(faults)

    def batch_stats(self) -> dict[str, int]:
        """What ``GET /_batch_stats`` returns: batches created, lines answered, uploads."""
        return self.batches.stats()

    @property
    def pending_faults(self) -> int:
        """Scripted faults not yet consumed."""
        return self._faults.pending

    def reset(self) -> None:
        """Forget requests, counters, files, batches and the fault scripts; re-seed."""
        with self._lock:
            self._log.clear()
            self._by_path.clear()
            self._total = 0
        self._faults.clear(self.seed)
        self.batches.clear(self.seed)

    # ----------------------------------------------------------------- lifecycle (thread)

    def start(self, timeout: float = 10.0) -> FakeOpenAI:
        """Serve from a daemon thread with its own event loop; returns once listening."""
        if self._thread is not None:
            raise RuntimeError("FakeOpenAI already started")
        ready = threading.Event()
        self._startup_error = None
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="fake-openai", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("FakeOpenAI did not start in time")
        if self._startup_error is not None:
            self._thread.join(timeout)
            self._thread = None
            raise RuntimeError("FakeOpenAI failed to start") from self._startup_error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background server (releasing any ``"hang"``); idempotent."""
        thread, loop, event = self._thread, self._loop, self._thread_stop
        if thread is None:
            return
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(event.set)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError("FakeOpenAI did not stop in time")
        self._thread = None
        self._loop = None
        self._thread_stop = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _thread_main(self, ready: threading.Event) -> None:
        asyncio.run(self._thread_serve(ready))

    async def _thread_serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread_stop = asyncio.Event()
        try:
            await self.start_async()
        except BaseException as exc:  # reported to start()'s caller
            self._startup_error = exc
            ready.set()
            return
        ready.set()
        try:
            await self._thread_stop.wait()
        finally:
            await self.stop_async()

    # ----------------------------------------------------------------- lifecycle (async)

    async def start_async(self) -> None:
        """Start listening in the running loop (used by the CLI and the thread mode)."""
        if self._runner is not None:
            raise RuntimeError("FakeOpenAI already started")
        self._stopping = asyncio.Event()
        # access_log=None: no per-request logging; handler_cancellation: a client that gives up
        # on a "hang" frees the handler at once.
        runner = web.AppRunner(
            self.make_app(), access_log=None, handler_cancellation=True, shutdown_timeout=2.0
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, HOST, self._requested_port, backlog=1024)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop_async(self) -> None:
        """Stop listening and close connections; hung requests are released (dropped)."""
        if self._stopping is not None:
            self._stopping.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def make_app(self) -> web.Application:
        """The aiohttp application (also usable with aiohttp's own test utilities)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._handle_chat)
        app.router.add_post("/v1/completions", self._handle_completions)
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_post("/v1/moderations", self._handle_moderations)
        app.router.add_post("/v1/responses", functools.partial(responses.handle, self))
        app.router.add_get("/_stats", self._handle_stats)
        app.router.add_post("/_reset", self._handle_reset)
        app.router.add_post("/_script", self._handle_script)
        add_file_routes(app, self.batches.files, self._gate)
        add_batch_routes(app, self.batches, self._gate)
        app.router.add_get("/_batch_stats", self._handle_batch_stats)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        return app

    # ----------------------------------------------------------------- request plumbing

    def _record(self, request: web.Request, body: Any) -> None:
        path = request.path
        with self._lock:
            self._total += 1
            self._by_path[path] = self._by_path.get(path, 0) + 1
            if self.record:
                headers = {k.lower(): v for k, v in request.headers.items()}
                query = dict(request.query)
                self._log.append(RequestRecord(request.method, path, headers, body, query))

    def _auth_error(self, request: web.Request) -> web.Response | None:
        key = self.api_key
        if key is None:
            return None
        header = request.headers.get("Authorization", "")
        if header == f"Bearer {key}":
            return None
        if not header:
            message = "You didn't provide an API key in the Authorization header."
        else:
            message = "Incorrect API key provided."
        return error_response(401, error_body(401, message=message, code="invalid_api_key"))

    def _latency_s(self, body: Any) -> float:
        latency = self.latency_ms
        if self.model_latency_ms and isinstance(body, dict):
            model = body.get("model")
            if isinstance(model, str):
                latency = self.model_latency_ms.get(model, latency)
        return latency / 1000.0

    @staticmethod
    async def _read_json(request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        try:
            return loads(raw)
        except ValueError:
            return None

    async def _gate(self, request: web.Request, body: Any) -> web.StreamResponse | None:
        """Record, check the key, wait the latency, play a scripted fault (Batch API routes)."""
        self._record(request, body)
        auth_error = self._auth_error(request)
        if auth_error is not None:
            return auth_error
        fault = self._faults.next(self.rate_429)
        delay = self.latency_ms / 1000.0 + (fault.delay_ms / 1000.0 if fault else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        if fault is None:
            return None
        return await early_answer(request, fault, body, self._stopping)

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle_completion_like(request, chat=True)

    async def _handle_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle_completion_like(request, chat=False)

    async def admit(
        self, request: web.Request, body: Any
    ) -> tuple[web.StreamResponse | None, Fault | None, str]:
        """What every model route does first: record the request, check the key, wait the
        latency, play a scripted fault. The answer when the request ends there, the fault to
        apply to a normal answer, and the request's id."""
        self._record(request, body)
        auth_error = self._auth_error(request)
        if auth_error is not None:
            return auth_error, None, ""
        fault = self._faults.next(self.rate_429)
        delay = self._latency_s(body) + (fault.delay_ms / 1000.0 if fault else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        request_id = f"req_{next(self._ids)}"
        if fault is not None and fault.kind != "ok":
            early = await early_answer(request, fault, body, self._stopping)
            if early is not None:
                return early, fault, request_id
        return None, fault, request_id

    async def _handle_completion_like(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body = await self._read_json(request)
        ended, fault, request_id = await self.admit(request, body)
        if ended is not None:
            return ended
        kind = fault.kind if fault is not None else "ok"
        if (isinstance(body, dict) and body.get("stream") is True) or kind == "truncated_sse":
            try:
                job = parse_job(body, chat, self.tokenizer)
            except BadRequest as exc:
                return error_response(400, error_body(400, message=exc.message, param=exc.param))
            return await self._stream(request, job, answers.generate(job), request_id, kind)
        status, payload = answers.answer(
            body, chat, self.tokenizer, request_id, no_choices=kind == "no_choices"
        )
        if status != 200:
            return error_response(status, dumps(payload))
        misreport_usage(payload, fault)
        headers = {"Content-Type": "application/json", "x-request-id": request_id}
        return web.Response(body=dumps(payload), headers=headers)

    async def _stream(
        self,
        request: web.Request,
        job: Job,
        choices: list[answers.Choice],
        request_id: str,
        kind: str,
    ) -> web.StreamResponse:
        events = answers.stream_events(job, choices, request_id, no_choices=kind == "no_choices")
        if kind == "truncated_sse":
            events = truncated(events)
        else:
            events.append(SSE_DONE)
        resp = web.StreamResponse(headers={**SSE_HEADERS, "x-request-id": request_id})
        await resp.prepare(request)
        try:
            for event in events:
                await resp.write(event)
        except ConnectionError:  # the client went away; nothing left to do
            pass
        return resp

    async def _handle_moderations(self, request: web.Request) -> web.StreamResponse:
        """Flags any input containing ``FLAG_ME`` (as harassment), nothing else."""
        body = await self._read_json(request)
        self._record(request, body)
        auth_error = self._auth_error(request)
        if auth_error is not None:
            return auth_error
        status, payload = answers.moderation_answer(body)
        if status != 200:
            return error_response(status, dumps(payload))
        return web.json_response(payload)

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        self._record(request, None)
        auth_error = self._auth_error(request)
        if auth_error is not None:
            return auth_error
        payload = answers.models_payload(self.models)
        return web.Response(body=dumps(payload), headers=JSON_HEADERS)

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        """OpenAI-style 404 (recorded), so a client building a wrong URL sees it plainly."""
        self._record(request, await self._read_json(request))
        message = f"Unknown request URL: {request.method} {request.path}."
        return error_response(404, error_body(404, message=message, code="unknown_url"))

    async def _handle_stats(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=dumps(self.stats()), headers=JSON_HEADERS)

    async def _handle_batch_stats(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=dumps(self.batch_stats()), headers=JSON_HEADERS)

    async def _handle_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return web.Response(body=dumps(self.stats()), headers=JSON_HEADERS)

    async def _handle_script(self, request: web.Request) -> web.StreamResponse:
        """Script faults from another process: the body is a JSON list of fault entries."""
        body = await self._read_json(request)
        try:
            if not isinstance(body, list):
                raise ValueError("body must be a JSON list of faults")
            self.script(body)
        except (TypeError, ValueError) as exc:
            return error_response(400, error_body(400, message=str(exc)))
        return web.Response(body=dumps({"pending": self.pending_faults}), headers=JSON_HEADERS)
