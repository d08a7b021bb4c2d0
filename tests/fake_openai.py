"""A real, loopback-only fake of the OpenAI HTTP API for tests and benchmarks.

Why a real server instead of mocking the client: it exercises the actual HTTP stack (connection
pooling, timeouts, retries on 429/5xx, SSE parsing, dropped connections) exactly as production does.

Answers are deterministic so tests can predict them:

* If the last user message (chat) or the prompt (completions) has a line ``ANSWER: <text>``
  (the last such line wins), the output is ``<text>``; otherwise it is ``"echo: "`` plus the
  first ``ECHO_MAX_CHARS`` characters of that message.
* Tokens are whitespace-separated words. An output longer than ``max_tokens`` words is cut to
  ``max_tokens`` words with ``finish_reason="length"``, otherwise ``"stop"``.
* ``LENGTH_UNTIL_MAX=<N>`` in the prompt: ``finish_reason`` is ``"length"`` whenever
  ``max_tokens < N``, else ``"stop"`` (an unset ``max_tokens`` is unlimited), for resampling tests.
* ``FILTER_ME`` in the prompt: ``finish_reason="content_filter"``.
* ``n > 1`` with ``temperature > 0`` (OpenAI's default is 1): choice ``i`` gets ``" #i"`` appended
  (before the ``max_tokens`` cut) so samples differ.

Usage from pytest::

    with FakeOpenAI(latency_ms=0) as server:
        server.script([{"status": 429, "retry_after": "0.05"}, "ok"])
        ...  # point the client at server.url
        assert server.count("/v1/chat/completions") == 2

From another process: ``python -m tests.fake_openai --port 0 --no-log`` prints
``listening on http://127.0.0.1:PORT``; ``GET /_stats`` returns the request counts,
``POST /_reset`` clears them and ``POST /_script`` (a JSON list of faults) scripts faults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

try:  # orjson is several times faster; it only matters for the 100k-request benchmark.
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None  # type: ignore[assignment]

__all__ = [
    "ECHO_MAX_CHARS",
    "FAULT_NAMES",
    "FakeOpenAI",
    "Fault",
    "RequestRecord",
    "main",
]

HOST = "127.0.0.1"
ECHO_MAX_CHARS = 200
"""How much of the prompt the ``echo:`` answer repeats, so huge prompts give small answers."""
HANG_SECONDS = 3600.0
"""``"hang"`` waits this long or until the server stops: far beyond any client timeout."""
RATE_429_RETRY_AFTER = "0.01"
FINGERPRINT = "fp_fake_openai"
COMPLETION_PATHS = ("/v1/chat/completions", "/v1/completions")

FAULT_NAMES = frozenset({"ok", "malformed_json", "no_choices", "drop", "hang", "truncated_sse"})
"""Named faults; HTTP errors are spelled ``{"status": 429, ...}`` or a bare int (kind "status")."""

_FAULT_KEYS = frozenset(
    {
        "fault",
        "status",
        "delay_ms",
        "retry_after",
        "retry_after_ms",
        "headers",
        "code",
        "message",
        "type",
        "usage",
    }
)
_ANSWER_RE = re.compile(r"^[ \t]*ANSWER:[ \t]*(.*?)[ \t\r]*$", re.MULTILINE)
_UNTIL_MAX_RE = re.compile(r"LENGTH_UNTIL_MAX=(\d+)")
_CALL_RE = re.compile(r"^[ \t]*CALL:[ \t]*([A-Za-z0-9_-]+)[ \t]*(.*?)[ \t\r]*$", re.MULTILINE)
"""``CALL: name {json}`` in the prompt, with tools (or functions) declared: a tool call."""
_TOKEN_RE = re.compile(r"\s*\S+")
_JSON_HEADERS = {"Content-Type": "application/json"}
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_SSE_DONE = b"data: [DONE]\n\n"

# status -> (type, code, message): what OpenAI sends for each, so clients can classify errors.
_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    408: ("timeout", None, "Request timed out."),
    409: ("invalid_request_error", None, "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("rate_limit_exceeded", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}
_QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."


def _dumps(obj: Any) -> bytes:
    """Serialise compactly; orjson when available because this runs on every request."""
    if orjson is not None:
        return orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _loads(raw: bytes) -> Any:
    """Parse a request body; bad JSON raises ValueError with either parser."""
    if orjson is not None:
        return orjson.loads(raw)
    return json.loads(raw)


@dataclass(frozen=True)
class RequestRecord:
    """One received request, as the client sent it, for assertions in tests."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None when the body was empty or not JSON

    @property
    def suffix(self) -> str | None:
        """The insert-mode ``suffix`` of a completions request, if any."""
        if isinstance(self.body, dict):
            value = self.body.get("suffix")
            return value if isinstance(value, str) else None
        return None


@dataclass(frozen=True)
class Fault:
    """A normalised fault-script entry (see ``FakeOpenAI.script`` for the accepted spellings)."""

    kind: str = "ok"
    status: int = 200
    delay_ms: float = 0.0
    retry_after: str | None = None
    retry_after_ms: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    code: str | None = None
    message: str | None = None
    type: str | None = None
    usage: Mapping[str, Any] | None = None  # replaces these usage keys; a key set to None drops it

    @classmethod
    def parse(cls, spec: Any) -> Fault:
        """Accept ``"drop"``, ``429``, ``{"status": 429, ...}``, ``{"fault": "hang", ...}``.

        Validates eagerly so a typo in a test's script fails at ``script()``, not mid-request.
        """
        if isinstance(spec, Fault):
            return spec
        if isinstance(spec, bool):
            raise ValueError(f"invalid fault: {spec!r}")
        if isinstance(spec, int):
            spec = {"status": spec}
        if isinstance(spec, str):
            if spec not in FAULT_NAMES:
                raise ValueError(f"unknown fault {spec!r}; expected one of {sorted(FAULT_NAMES)}")
            return cls(kind=spec)
        if not isinstance(spec, Mapping):
            raise ValueError(f"invalid fault: {spec!r}")
        unknown = set(spec) - _FAULT_KEYS
        if unknown:
            raise ValueError(f"unknown fault keys {sorted(unknown)} in {spec!r}")
        if "fault" in spec and "status" in spec:
            raise ValueError(f"give either 'fault' or 'status', not both: {spec!r}")
        kind = spec.get("fault", "status" if "status" in spec else "ok")
        if kind != "status" and kind not in FAULT_NAMES:
            raise ValueError(f"unknown fault {kind!r}")
        status = spec.get("status", 200)
        if kind == "status" and (not isinstance(status, int) or not 100 <= status <= 599):
            raise ValueError(f"invalid status in {spec!r}")
        delay = spec.get("delay_ms", 0.0)
        if not isinstance(delay, int | float) or delay < 0:
            raise ValueError(f"invalid delay_ms in {spec!r}")
        headers = spec.get("headers") or {}
        if not isinstance(headers, Mapping):
            raise ValueError(f"headers must be a mapping in {spec!r}")
        usage = spec.get("usage")
        if usage is not None and not isinstance(usage, Mapping):
            raise ValueError(f"usage must be a mapping in {spec!r}")

        def opt_str(key: str) -> str | None:
            value = spec.get(key)
            return None if value is None else str(value)

        return cls(
            kind=kind,
            status=status if kind == "status" else 200,
            delay_ms=float(delay),
            retry_after=opt_str("retry_after"),
            retry_after_ms=opt_str("retry_after_ms"),
            headers={str(k): str(v) for k, v in headers.items()},
            code=opt_str("code"),
            message=opt_str("message"),
            type=opt_str("type"),
            usage=usage,
        )


_RATE_429_FAULT = Fault(kind="status", status=429, retry_after=RATE_429_RETRY_AFTER)


class _BadRequest(Exception):
    """A 400 the real API would give; carries the offending parameter name."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class _Job:
    """The parts of a completion request that decide the answer."""

    chat: bool
    model: str
    prompts: list[str]  # chat: [last user message]; completions: one per prompt
    prompt_tokens: int
    n: int
    temperature: float
    max_tokens: int | None
    logprobs: int | None  # completions: top-k; chat: top_logprobs when logprobs is true
    stream: bool
    include_usage: bool
    calling: str = ""  # "tools" or "functions" when the request declares them


@dataclass(slots=True)
class _Choice:
    index: int
    text: str
    finish_reason: str
    tokens: list[str]
    call: tuple[str, str] | None = None  # (name, arguments JSON text) when the model calls a tool


def _words(text: str) -> int:
    return len(text.split())


def _tokenize(text: str) -> list[str]:
    """Split into word tokens that concatenate back to ``text`` (leading spaces kept)."""
    tokens: list[str] = _TOKEN_RE.findall(text)
    consumed = sum(map(len, tokens))
    if consumed < len(text) and tokens:  # trailing whitespace rides on the last token
        tokens[-1] += text[consumed:]
    return tokens


def _logprob(token: str) -> float:
    """Deterministic per-token logprob; ``+ 0.0`` turns ``-0.0`` into ``0.0``."""
    return round(-0.1 * (len(token) % 5), 4) + 0.0


def _alternatives(token: str, k: int) -> list[tuple[str, float]]:
    """``k`` deterministic top alternatives, the sampled token first."""
    lp = _logprob(token)
    return [(token if j == 0 else f"{token}~{j}", round(lp - 0.5 * j, 4) + 0.0) for j in range(k)]


def _chat_logprob_entry(token: str, top: int) -> dict[str, Any]:
    return {
        "token": token,
        "logprob": _logprob(token),
        "bytes": list(token.encode()),
        "top_logprobs": [
            {"token": t, "logprob": lp, "bytes": list(t.encode())}
            for t, lp in _alternatives(token, top)
        ],
    }


def _completion_logprobs(tokens: list[str], k: int, start: int = 0) -> dict[str, Any]:
    """The legacy completions shape; ``text_offset`` counts from the start of the choice text."""
    offsets = []
    pos = start
    for tok in tokens:
        offsets.append(pos)
        pos += len(tok)
    return {
        "tokens": list(tokens),
        "token_logprobs": [_logprob(t) for t in tokens],
        "top_logprobs": [dict(_alternatives(t, k)) for t in tokens],
        "text_offset": offsets,
    }


def _base_output(prompt: str) -> str:
    if "ANSWER:" in prompt:
        matches = _ANSWER_RE.findall(prompt)
        if matches:
            return str(matches[-1])
    return "echo: " + prompt[:ECHO_MAX_CHARS]


def _generate(job: _Job) -> list[_Choice]:
    """Apply the deterministic output rules (module docstring) to every prompt and sample."""
    choices: list[_Choice] = []
    vary = job.n > 1 and job.temperature > 0
    for p_idx, prompt in enumerate(job.prompts):
        base = _base_output(prompt)
        until_match = _UNTIL_MAX_RE.search(prompt) if "LENGTH_UNTIL_MAX=" in prompt else None
        filtered = "FILTER_ME" in prompt
        call = _CALL_RE.search(prompt) if job.calling else None
        for i in range(job.n):
            if call is not None:
                finish = "tool_calls" if job.calling == "tools" else "function_call"
                choices.append(
                    _Choice(p_idx * job.n + i, "", finish, [], (call.group(1), call.group(2)))
                )
                continue
            text = (f"{base} #{i}" if base else f"#{i}") if vary else base
            finish = "stop"
            if job.max_tokens is not None:
                words = text.split()
                if len(words) > job.max_tokens:
                    text = " ".join(words[: job.max_tokens])
                    finish = "length"
            if until_match is not None:
                needed = int(until_match.group(1))
                limited = job.max_tokens is not None and job.max_tokens < needed
                finish = "length" if limited else "stop"
            if filtered:
                finish = "content_filter"
            choices.append(_Choice(p_idx * job.n + i, text, finish, _tokenize(text)))
    return choices


def _message_text(content: Any) -> str:
    """Text of a chat message's content: a string or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _int_param(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _BadRequest(f"Invalid value for '{name}': expected an integer in [{lo}, {hi}].", name)
    return value


def _parse_job(body: Any, chat: bool, tokens: Callable[[str], int] | None = None) -> _Job:
    """Validate like the real API does, so client bugs surface as 400s in tests.

    `tokens` counts prompt tokens like the real API (a tokenizer, plus the chat format's
    per-message overhead); without it, prompt tokens are whitespace-separated words.
    """
    if not isinstance(body, dict):
        raise _BadRequest("We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("You must provide a model parameter.", "model")
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("'messages' must be a non-empty array.", "messages")
        last_user = ""
        prompt_tokens = 0
        for msg in messages:
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                raise _BadRequest("Each message must be an object with a 'role'.", "messages")
            text = _message_text(msg.get("content"))
            if tokens is None:
                prompt_tokens += _words(text)
            else:  # the chat format: <|start|>role<|message|>content<|end|>, name costs one more
                prompt_tokens += 3 + tokens(msg["role"]) + tokens(text)
                if isinstance(msg.get("name"), str):
                    prompt_tokens += 1 + tokens(msg["name"])
            if msg["role"] == "user":
                last_user = text
        prompts = [last_user]
        if tokens is not None:
            prompt_tokens += 3  # every reply is primed with <|start|>assistant<|message|>
        max_tokens = _int_param(body, "max_completion_tokens", 1, 10**9)
        if max_tokens is None:
            max_tokens = _int_param(body, "max_tokens", 1, 10**9)
        logprobs: int | None = None
        if body.get("logprobs") is True:
            logprobs = _int_param(body, "top_logprobs", 0, 20) or 0
        elif body.get("logprobs") not in (None, False):
            raise _BadRequest("'logprobs' must be a boolean.", "logprobs")
    else:
        prompt = body.get("prompt", "")
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            prompts = list(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
            prompts = [" ".join(map(str, prompt))]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
            prompts = [" ".join(map(str, p)) for p in prompt]
        else:
            raise _BadRequest("'prompt' must be a string or an array.", "prompt")
        prompt_tokens = sum(map(tokens or _words, prompts))
        max_tokens = _int_param(body, "max_tokens", 1, 10**9)
        logprobs = _int_param(body, "logprobs", 0, 5)
        suffix = body.get("suffix")
        if suffix is not None and not isinstance(suffix, str):
            raise _BadRequest("'suffix' must be a string.", "suffix")
        if suffix and tokens is not None:
            prompt_tokens += tokens(suffix)
    n = _int_param(body, "n", 1, 128) or 1
    temperature = body.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise _BadRequest("'temperature' must be a number.", "temperature")
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    calling = ""
    if chat and isinstance(body.get("tools"), list) and body["tools"]:
        calling = "tools"
    elif chat and isinstance(body.get("functions"), list) and body["functions"]:
        calling = "functions"
    elif not chat and ("tools" in body or "functions" in body):
        raise _BadRequest("Unrecognized request argument supplied: tools", "tools")
    return _Job(
        chat=chat,
        model=model,
        prompts=prompts,
        prompt_tokens=prompt_tokens,
        n=n,
        temperature=float(temperature),
        max_tokens=max_tokens,
        logprobs=logprobs,
        stream=body.get("stream") is True,
        include_usage=include_usage,
        calling=calling,
    )


def _usage(job: _Job, choices: Sequence[_Choice]) -> dict[str, int]:
    completion = sum(len(c.tokens) for c in choices)
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": job.prompt_tokens + completion,
    }


def _sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


def _error_body(
    status: int,
    message: str | None = None,
    type_: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    d_type, d_code, d_message = _ERROR_DEFAULTS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
    )
    if code == "insufficient_quota":
        d_type, d_message = "insufficient_quota", _QUOTA_MESSAGE
    return _dumps(
        {
            "error": {
                "message": message or d_message,
                "type": type_ or d_type,
                "param": param,
                "code": code if code is not None else d_code,
            }
        }
    )


def _error_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> web.Response:
    all_headers = dict(_JSON_HEADERS)
    if headers:
        all_headers.update(headers)
    return web.Response(status=status, body=body, headers=all_headers)


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
        self._faults: deque[Fault] = deque()
        self._rng = random.Random(seed)
        self._ids = itertools.count(1)
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
        """
        if isinstance(faults, str | bytes | Mapping):
            raise TypeError("script() takes a list of faults")
        parsed = [Fault.parse(spec) for spec in faults]
        with self._lock:
            self._faults = deque(parsed)

    @property
    def pending_faults(self) -> int:
        """Scripted faults not yet consumed."""
        with self._lock:
            return len(self._faults)

    def reset(self) -> None:
        """Forget requests, counters and the fault script; re-seed the 429 draws."""
        with self._lock:
            self._log.clear()
            self._by_path.clear()
            self._total = 0
            self._faults.clear()
            self._rng = random.Random(self.seed)

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
        app.router.add_get("/_stats", self._handle_stats)
        app.router.add_post("/_reset", self._handle_reset)
        app.router.add_post("/_script", self._handle_script)
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
                self._log.append(RequestRecord(request.method, path, headers, body))

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
        return _error_response(401, _error_body(401, message=message, code="invalid_api_key"))

    def _next_fault(self) -> Fault | None:
        if not self._faults and self.rate_429 <= 0.0:  # fast path, no lock needed
            return None
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if self.rate_429 > 0.0 and self._rng.random() < self.rate_429:
                return _RATE_429_FAULT
        return None

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
            return _loads(raw)
        except ValueError:
            return None

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle_completion_like(request, chat=True)

    async def _handle_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle_completion_like(request, chat=False)

    async def _handle_completion_like(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body = await self._read_json(request)
        self._record(request, body)
        auth_error = self._auth_error(request)
        if auth_error is not None:
            return auth_error
        fault = self._next_fault()
        delay = self._latency_s(body) + (fault.delay_ms / 1000.0 if fault else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        request_id = f"req_{next(self._ids)}"
        if fault is not None and fault.kind != "ok":
            early = await self._apply_fault(request, fault, chat, body)
            if early is not None:
                return early
        try:
            job = _parse_job(body, chat, self.tokenizer)
        except _BadRequest as exc:
            return _error_response(400, _error_body(400, message=exc.message, param=exc.param))
        choices = _generate(job)
        kind = fault.kind if fault is not None else "ok"
        if job.stream or kind == "truncated_sse":
            return await self._stream(request, job, choices, request_id, kind)
        if kind == "no_choices":
            choices = []
        payload = self._completion_payload(job, choices, request_id)
        if fault is not None and fault.usage is not None:  # a server that misreports usage
            usage = {**payload["usage"], **fault.usage}
            payload["usage"] = {k: v for k, v in usage.items() if v is not None}
        headers = {"Content-Type": "application/json", "x-request-id": request_id}
        return web.Response(body=_dumps(payload), headers=headers)

    async def _apply_fault(
        self, request: web.Request, fault: Fault, chat: bool, body: Any
    ) -> web.StreamResponse | None:
        """Answer for faults that do not need a valid request; None for the others."""
        if fault.kind == "status":
            headers = dict(fault.headers)
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = fault.retry_after_ms
            err = _error_body(
                fault.status, message=fault.message, type_=fault.type, code=fault.code
            )
            return _error_response(fault.status, err, headers)
        if fault.kind == "drop":
            return self._drop(request)
        if fault.kind == "hang":
            if self._stopping is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), HANG_SECONDS)
            return self._drop(request)
        if fault.kind == "malformed_json":
            broken = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{'
            if isinstance(body, dict) and body.get("stream") is True:
                resp = web.StreamResponse(headers=_SSE_HEADERS)
                await resp.prepare(request)
                with contextlib.suppress(ConnectionError):
                    await resp.write(b"data: " + broken + b"\n\n" + _SSE_DONE)
                return resp
            return web.Response(body=broken, headers=_JSON_HEADERS)
        return None

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        """Close the socket without a response; aiohttp then quietly skips writing this one."""
        transport = request.transport
        if transport is not None:
            transport.close()
        return web.Response(status=500)

    def _completion_payload(
        self, job: _Job, choices: list[_Choice], request_id: str
    ) -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        if job.chat:
            for c in choices:
                logprobs = None
                if job.logprobs is not None:
                    entries = [_chat_logprob_entry(t, job.logprobs) for t in c.tokens]
                    logprobs = {"content": entries, "refusal": None}
                message: dict[str, Any] = {"role": "assistant", "content": c.text, "refusal": None}
                if c.call is not None:
                    message["content"] = None
                    name, arguments = c.call
                    if job.calling == "tools":
                        message["tool_calls"] = [
                            {
                                "id": f"call_{request_id}_{c.index}",
                                "type": "function",
                                "function": {"name": name, "arguments": arguments},
                            }
                        ]
                    else:
                        message["function_call"] = {"name": name, "arguments": arguments}
                out.append(
                    {
                        "index": c.index,
                        "message": message,
                        "logprobs": logprobs,
                        "finish_reason": c.finish_reason,
                    }
                )
        else:
            for c in choices:
                out.append(
                    {
                        "text": c.text,
                        "index": c.index,
                        "logprobs": (
                            _completion_logprobs(c.tokens, job.logprobs)
                            if job.logprobs is not None
                            else None
                        ),
                        "finish_reason": c.finish_reason,
                    }
                )
        return {
            "id": ("chatcmpl-" if job.chat else "cmpl-") + request_id,
            "object": "chat.completion" if job.chat else "text_completion",
            "created": int(time.time()),
            "model": job.model,
            "choices": out,
            "usage": _usage(job, choices),
            "system_fingerprint": FINGERPRINT,
        }

    def _stream_events(
        self, job: _Job, choices: list[_Choice], request_id: str, kind: str
    ) -> list[bytes]:
        """The SSE events (without ``[DONE]``) in the chunk shapes of the real API."""
        envelope: dict[str, Any] = {
            "id": ("chatcmpl-" if job.chat else "cmpl-") + request_id,
            "object": "chat.completion.chunk" if job.chat else "text_completion",
            "created": int(time.time()),
            "model": job.model,
            "system_fingerprint": FINGERPRINT,
        }
        if job.include_usage:
            envelope["usage"] = None
        events: list[bytes] = []

        def emit(choice: dict[str, Any]) -> None:
            events.append(_sse({**envelope, "choices": [choice]}))

        if kind == "no_choices":
            events.append(_sse({**envelope, "choices": []}))
            return events
        k = job.logprobs
        for c in choices:
            if job.chat:
                emit(
                    {
                        "index": c.index,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                )
                if c.call is not None:
                    name, arguments = c.call
                    half = len(arguments) // 2
                    for part, first in ((arguments[:half], True), (arguments[half:], False)):
                        if job.calling == "tools":
                            piece: dict[str, Any] = {"index": 0, "function": {"arguments": part}}
                            if first:
                                piece.update(id=f"call_{request_id}_{c.index}", type="function")
                                piece["function"]["name"] = name
                            delta: dict[str, Any] = {"tool_calls": [piece]}
                        else:
                            function = {"arguments": part, **({"name": name} if first else {})}
                            delta = {"function_call": function}
                        emit({"index": c.index, "delta": delta, "finish_reason": None})
                for tok in c.tokens:
                    lp = None
                    if k is not None:
                        lp = {"content": [_chat_logprob_entry(tok, k)], "refusal": None}
                    emit(
                        {
                            "index": c.index,
                            "delta": {"content": tok},
                            "logprobs": lp,
                            "finish_reason": None,
                        }
                    )
                emit(
                    {
                        "index": c.index,
                        "delta": {},
                        "logprobs": None,
                        "finish_reason": c.finish_reason,
                    }
                )
            else:
                offset = 0
                for tok in c.tokens:
                    lp = _completion_logprobs([tok], k, offset) if k is not None else None
                    offset += len(tok)
                    emit({"text": tok, "index": c.index, "logprobs": lp, "finish_reason": None})
                emit(
                    {
                        "text": "",
                        "index": c.index,
                        "logprobs": None,
                        "finish_reason": c.finish_reason,
                    }
                )
        if job.include_usage:
            events.append(_sse({**envelope, "choices": [], "usage": _usage(job, choices)}))
        return events

    async def _stream(
        self, request: web.Request, job: _Job, choices: list[_Choice], request_id: str, kind: str
    ) -> web.StreamResponse:
        events = self._stream_events(job, choices, request_id, kind)
        if kind == "truncated_sse":  # some chunks, never the last finish chunk nor [DONE]
            events = events[: max(1, len(events) // 2)]
        else:
            events.append(_SSE_DONE)
        resp = web.StreamResponse(headers={**_SSE_HEADERS, "x-request-id": request_id})
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
        given = body.get("input") if isinstance(body, dict) else None
        inputs = given if isinstance(given, list) else [given]
        if not all(isinstance(i, str) for i in inputs):
            return _error_response(400, _error_body(400, "'input' must be a string or a list."))
        results = []
        for text in inputs:
            flagged = "FLAG_ME" in text
            categories = {"harassment": flagged, "violence": False, "self-harm": False}
            scores = {k: (0.97 if v else 0.001) for k, v in categories.items()}
            results.append(
                {"flagged": flagged, "categories": categories, "category_scores": scores}
            )
        payload = {"id": "modr-fake", "model": body.get("model"), "results": results}
        return web.json_response(payload)

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        self._record(request, None)
        auth_error = self._auth_error(request)
        if auth_error is not None:
            return auth_error
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "evalkit-fake"}
            for m in self.models
        ]
        return web.Response(body=_dumps({"object": "list", "data": data}), headers=_JSON_HEADERS)

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        """OpenAI-style 404 (recorded), so a client building a wrong URL sees it plainly."""
        self._record(request, await self._read_json(request))
        message = f"Unknown request URL: {request.method} {request.path}."
        return _error_response(404, _error_body(404, message=message, code="unknown_url"))

    async def _handle_stats(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=_dumps(self.stats()), headers=_JSON_HEADERS)

    async def _handle_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return web.Response(body=_dumps(self.stats()), headers=_JSON_HEADERS)

    async def _handle_script(self, request: web.Request) -> web.StreamResponse:
        """Script faults from another process: the body is a JSON list of fault entries."""
        body = await self._read_json(request)
        try:
            if not isinstance(body, list):
                raise ValueError("body must be a JSON list of faults")
            self.script(body)
        except (TypeError, ValueError) as exc:
            return _error_response(400, _error_body(400, message=str(exc)))
        return web.Response(body=_dumps({"pending": self.pending_faults}), headers=_JSON_HEADERS)


# --------------------------------------------------------------------------- CLI


def _model_latency(spec: str) -> tuple[str, float]:
    model, sep, ms = spec.rpartition("=")
    if not sep or not model:
        raise argparse.ArgumentTypeError(f"expected MODEL=MS, got {spec!r}")
    try:
        return model, float(ms)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MODEL=MS, got {spec!r}") from None


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_openai",
        description="Fake OpenAI-compatible server on 127.0.0.1 for tests and benchmarks.",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each answer")
    parser.add_argument(
        "--model-latency",
        type=_model_latency,
        action="append",
        default=[],
        metavar="MODEL=MS",
        help="per-model latency override (repeatable)",
    )
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--rate-429", type=float, default=0.0, help="fraction answered with 429")
    parser.add_argument("--seed", type=int, default=0, help="seed for --rate-429")
    parser.add_argument(
        "--no-log", action="store_true", help="do not store requests, only count them"
    )
    parser.add_argument(
        "--model", action="append", default=None, help="id listed by /v1/models (repeatable)"
    )
    return parser.parse_args(argv)


async def _serve_cli(args: argparse.Namespace) -> None:
    server = FakeOpenAI(
        latency_ms=args.latency_ms,
        model_latency_ms=dict(args.model_latency),
        api_key=args.api_key,
        rate_429=args.rate_429,
        seed=args.seed,
        record=not args.no_log,
        port=args.port,
        models=args.model or ("fake-model",),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start_async()
    try:
        print(f"listening on {server.base_url}", flush=True)
        await stop.wait()
    finally:
        await server.stop_async()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the first stdout line tells the port."""
    args = _parse_args(argv)
    if not 0.0 <= args.rate_429 <= 1.0:
        print("--rate-429 must be in [0, 1]", file=sys.stderr)
        return 2
    asyncio.run(_serve_cli(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
