"""Any OpenAI-compatible HTTP server: chat and legacy completions, plain or streamed.

HTTP goes through httpx's API over an aiohttp transport (`httpx-aiohttp`): plain
`httpx.AsyncClient`'s pool costs ~25 ms of CPU per request at 100 in flight, the aiohttp
transport stays near a bare aiohttp client (see benchmarks/README.md). Responses are parsed
tolerantly (missing usage or fingerprint, extra fields) and strictly where it matters (no
choices is an error).

The server is not trusted. One attempt is bounded in time (`--timeout`, all of it: a drip
fed body or a stream of keep-alive comments cannot outlast it) and in size (`body_cap`, of
the decoded body); an answer that would make a wrong row (a duplicate or out-of-range
choice index, a streamed choice that never finished) is an error; and every string an
attempt returns or raises goes through one `Scrubber` (valid Unicode, no API key, no control
characters in messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import AsyncGenerator, Awaitable
from typing import Any

import aiohttp
import httpx
import yarl
from httpx_aiohttp.transport import (
    AiohttpResponseStream,
    AiohttpTransport,
    map_aiohttp_exceptions,
)

from evalkit.plan import Request
from evalkit.providers import Choice, Completion, ProviderError
from evalkit.providers.scrub import Scrubber
from evalkit.retry import RETRYABLE_STATUS, retry_after

_PATHS = {"chat": "/chat/completions", "completions": "/completions", "moderations": "/moderations"}
BODY_BASE_BYTES = 1 << 20  # 1 MiB: the envelope, usage, a long refusal
BODY_PER_TOKEN_BYTES = 4 << 10  # 4 KiB: a streamed chunk of one token with 20 top logprobs
MAX_BODY_BYTES = 64 << 20  # 64 MiB, whatever max_tokens says
ERROR_BODY_BYTES = 64 << 10  # of an error response, only the start is read: its message
_LINE_END = re.compile(rb"\r\n|\r|\n")


def make_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """One shared transport: aiohttp's connection pool, sized for everything in flight."""
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    transport: httpx.AsyncBaseTransport = AiohttpTransport(limits=limits, trust_env=True)
    return transport


def body_cap(request: Request) -> int:
    """The most bytes the decoded answer to `request` may have: 1 MiB plus 4 KiB per token
    it may hold (`max_tokens`, else the model's context window, times `n`), at most 64 MiB.

    Far past that, the body is no answer to this request but a runaway or hostile server
    (a gzip bomb, 100 MB for `max_tokens: 8`), which would be held in memory and stored.
    """
    tokens = request.max_tokens or request.target.info.context_window
    per_token = BODY_PER_TOKEN_BYTES * tokens * max(1, request.choices)
    return min(MAX_BODY_BYTES, BODY_BASE_BYTES + per_token)


class OpenAIProvider:
    """Sends requests for one base URL and key; the key lives only in this object's headers.

    Requests go straight to an httpx transport (`handle_async_request`): httpx's request and
    response types and its transport seam, without the client layer's per-request URL
    merging, cookie jar and redirect handling, which cost more CPU than the HTTP itself.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        base_url: str,
        api_key: str | None,
        timeout_s: float = 120.0,
    ) -> None:
        self._transport = transport
        base = base_url.rstrip("/")
        self._urls = {kind: httpx.URL(base + path) for kind, path in _PATHS.items()}
        self._headers = [("content-type", "application/json")]
        if api_key and api_key.strip():
            self._headers.append(("authorization", f"Bearer {api_key.strip()}"))
        self._timeout_s = timeout_s  # the whole attempt; a connection may take at most 30 s of it
        self._timeout = {"connect": min(timeout_s, 30.0)}
        self._scrub = Scrubber(api_key)
        # over httpx-aiohttp's own transport, the request goes to its aiohttp session with
        # what that transport would pass it, without building httpx's request and headers
        self._aiohttp = type(transport) is AiohttpTransport and transport.proxy is None
        self._yarl_urls = {kind: yarl.URL(str(url)) for kind, url in self._urls.items()}
        self._plain_headers = dict(self._headers)
        self._client_timeout = aiohttp.ClientTimeout(sock_connect=self._timeout["connect"])

    async def complete(self, request: Request) -> Completion:
        """One attempt, whole within `timeout_s`; what it returns or raises is scrubbed."""
        try:
            completion = await _within(self._attempt(request), self._timeout_s)
            return self._scrub.completion(completion)
        except asyncio.TimeoutError:
            raise ProviderError(
                "timeout",
                f"no whole answer within --timeout {self._timeout_s:g} s",
                retryable=True,
            ) from None
        except ProviderError as exc:
            raise self._scrub.error(exc) from None

    async def _attempt(self, request: Request) -> Completion:
        started = time.perf_counter()
        try:
            if self._aiohttp:
                response = await self._send_aiohttp(request)
            else:
                http = httpx.Request(
                    "POST",
                    self._urls[request.endpoint],
                    headers=self._headers,
                    content=request.wire.encode(),
                    extensions={"timeout": self._timeout},
                )
                response = await self._transport.handle_async_request(http)
            try:
                return await _read(response, request, started)
            finally:
                await response.aclose()
        except httpx.DecodingError:
            raise ProviderError(
                "bad_response", "the response's content-encoding is corrupt", retryable=True
            ) from None
        except (httpx.TransportError, aiohttp.ClientError, OSError) as exc:
            raise _transport_error(exc) from None

    async def _send_aiohttp(self, request: Request) -> httpx.Response:
        """What `AiohttpTransport.handle_async_request` does for this request (the same
        session, options and error mapping), with the URL, headers and timeout built once."""
        transport = self._transport
        assert isinstance(transport, AiohttpTransport)
        if not isinstance(transport.client, aiohttp.ClientSession):
            transport.client = transport.get_client()
        with map_aiohttp_exceptions():
            raw = await transport.client.request(
                method="POST",
                url=self._yarl_urls[request.endpoint],
                headers=self._plain_headers,
                data=request.wire.encode(),
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=self._client_timeout,
                server_hostname=None,
                proxy=None,
                proxy_auth=None,
                proxy_headers=None,
            ).__aenter__()
        extensions = {"http_version": b"HTTP/1.1"}
        if raw.reason:
            extensions["reason_phrase"] = raw.reason.encode()
        return httpx.Response(
            status_code=raw.status,
            headers=raw.raw_headers,
            stream=AiohttpResponseStream(raw),
            extensions=extensions,
        )


async def _within(attempt: Awaitable[Completion], seconds: float) -> Completion:
    """`attempt` awaited for at most `seconds` (asyncio.TimeoutError past them): in the
    calling task with `asyncio.timeout` (3.11+), not in a task of its own as `wait_for`."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await attempt
    return await asyncio.wait_for(attempt, seconds)  # pragma: no cover  (3.10)


async def _read(response: httpx.Response, request: Request, started: float) -> Completion:
    """The answer in `response`: an error status, a stream, or a JSON body (also when the
    server ignored `stream: true`)."""
    if response.status_code != 200:
        body = await _body(response, ERROR_BODY_BYTES, request, cut=True)
        raise _http_error(response.status_code, body, response.headers)
    is_json = "json" in response.headers.get("content-type", "")
    if request.body.get("stream") and not is_json:
        return await _stream(response, request, started)
    payload = _json(await _body(response, body_cap(request), request), "response")
    return _parse(payload, request, time.perf_counter() - started)


async def _body(response: httpx.Response, cap: int, request: Request, cut: bool = False) -> bytes:
    """The decoded body; past `cap` bytes, a `response_too_large` error, or with `cut` its
    first `cap` bytes."""
    whole = _whole_body(response, cap)
    if whole is not None:
        with map_aiohttp_exceptions():  # as the stream would raise them
            return await whole.read()
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size > cap:
            if cut:
                break
            raise _too_large(request, cap)
    return b"".join(parts)[:cap]


def _whole_body(response: httpx.Response, cap: int) -> aiohttp.ClientResponse | None:
    """The aiohttp response under `response` when its body can be read in one call: not
    encoded (the bytes on the wire are the body) and announced at most `cap` bytes long
    (aiohttp reads exactly Content-Length bytes, whatever the server sends after them)."""
    stream = response.stream
    if type(stream) is not AiohttpResponseStream:
        return None
    headers = response.headers
    length = headers.get("content-length")
    if length is None or not (length.isascii() and length.isdigit()) or int(length) > cap:
        return None
    if headers.get("content-encoding", "identity").strip().lower() != "identity":
        return None
    raw = getattr(stream, "_aiohttp_response", None)
    return raw if isinstance(raw, aiohttp.ClientResponse) else None


async def _lines(response: httpx.Response, request: Request) -> AsyncGenerator[str, None]:
    """The lines of a streamed body (ended by CRLF, LF or CR), at most `body_cap` in all."""
    cap = body_cap(request)
    pending = bytearray()
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise _too_large(request, cap)
        pending += chunk
        if b"\n" not in chunk and b"\r" not in chunk:
            continue  # a line still under way: split only when one ends
        *lines, rest = _LINE_END.split(pending)
        pending = bytearray(rest)
        for line in lines:
            yield line.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")


def _too_large(request: Request, cap: int) -> ProviderError:
    tokens = f"max_tokens {request.max_tokens}" if request.max_tokens else "no max_tokens"
    return ProviderError(
        "response_too_large",
        f"the response passed {cap:,} bytes, the most evalkit reads for {tokens} and "
        f"n {request.choices} (1 MiB + 4 KiB per token, at most 64 MiB)",
    )


async def _stream(response: httpx.Response, request: Request, started: float) -> Completion:
    answer = _Streamed(request, started)
    async with contextlib.aclosing(_lines(response, request)) as lines:
        async for line in lines:
            if line.startswith("data:"):
                data = line[5:].strip()
                if data == "[DONE]":
                    return answer.completion()
                answer.add(_json(data.encode(), "stream chunk"))
    raise ProviderError("truncated_stream", "the stream ended without [DONE]", retryable=True)


class _Streamed:
    """A streamed answer, assembled chunk by chunk, per choice index."""

    def __init__(self, request: Request, started: float) -> None:
        self.request = request
        self.started = started
        self.texts: dict[int, list[str]] = {}
        self.finish: dict[int, str] = {}
        self.logprobs: dict[int, list[Any]] = {}
        self.calls: dict[int, _StreamedCalls] = {}
        self.usage: dict[str, Any] = {}
        self.fingerprint: str | None = None
        self.ttft: float | None = None

    def add(self, chunk: Any) -> None:
        if not isinstance(chunk, dict):
            return
        error = _error_in(chunk)
        if error is not None:
            raise error
        self.fingerprint = _str(chunk.get("system_fingerprint")) or self.fingerprint
        self.usage = _dict(chunk.get("usage")) or self.usage
        for choice in _list(chunk.get("choices")):
            if not isinstance(choice, dict):
                raise ProviderError("bad_response", "a streamed choice is not a JSON object")
            index = _index(choice.get("index"), 0)
            text = self.texts.setdefault(index, [])
            piece = _delta_text(choice, self.request.endpoint)
            if piece:
                self._first_token()
                text.append(piece)
            reason = _str(choice.get("finish_reason"))
            if reason:
                self.finish[index] = reason
            if choice.get("logprobs"):
                self.logprobs.setdefault(index, []).append(choice["logprobs"])
            delta = choice.get("delta")
            if isinstance(delta, dict) and ("tool_calls" in delta or "function_call" in delta):
                self._first_token()
                self.calls.setdefault(index, _StreamedCalls()).add(delta)

    def _first_token(self) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.started

    def completion(self) -> Completion:
        """The answer, once the stream said [DONE]: every choice must have finished."""
        if not self.texts:
            raise ProviderError("bad_response", "the stream carried no choices")
        indices = sorted(self.texts)
        _check_indices(indices, self.request)
        unfinished = [i for i in indices if i not in self.finish]
        if unfinished:  # a server that cut the stream short (e.g. to serve another request)
            raise ProviderError(
                "truncated_stream",
                f"the stream ended before choice {unfinished[0]} finished (no finish_reason)",
                retryable=True,
            )
        choices = [
            Choice(
                i,
                "".join(self.texts[i]),
                self.finish[i],
                self.logprobs.get(i),
                self.calls[i].result() if i in self.calls else None,
            )
            for i in indices
        ]
        return Completion(
            choices,
            _int(self.usage.get("prompt_tokens")),
            _int(self.usage.get("completion_tokens")),
            self.fingerprint,
            time.perf_counter() - self.started,
            self.ttft,
        )


def _parse(payload: Any, request: Request, latency: float) -> Completion:
    if not isinstance(payload, dict):
        raise ProviderError("bad_response", "response is not a JSON object")
    error = _error_in(payload)
    if error is not None:
        raise error
    if request.endpoint == "moderations":
        results = payload.get("results")
        if not isinstance(results, list) or not results or not isinstance(results[0], dict):
            raise ProviderError("bad_response", "moderation response has no results")
        result = json.dumps(results[0])
        return Completion([Choice(0, result, None)], latency_s=latency)
    raw = payload.get("choices")
    if not isinstance(raw, list) or not raw:
        raise ProviderError("bad_response", "response has no choices")
    choices = []
    for position, choice in enumerate(raw):
        if not isinstance(choice, dict):
            raise ProviderError("bad_response", "a choice is not a JSON object")
        calls = None
        if request.endpoint == "chat":
            message = _dict(choice.get("message"))
            text = message.get("content")
            calls = _tool_calls(message)
        else:
            text = choice.get("text")
        choices.append(
            Choice(
                _index(choice.get("index"), position),
                text if isinstance(text, str) else "",
                _str(choice.get("finish_reason")) or None,
                choice.get("logprobs"),
                calls,
            )
        )
    _check_indices([c.index for c in choices], request)
    usage = _dict(payload.get("usage"))
    return Completion(
        choices,
        _int(usage.get("prompt_tokens")),
        _int(usage.get("completion_tokens")),
        _str(payload.get("system_fingerprint")),
        latency,
    )


def _check_indices(indices: list[int], request: Request) -> None:
    """Each choice is one row numbered by its index: two alike, or one past `n`, would
    silently drop or renumber a row."""
    n = max(1, request.choices)
    if len(set(indices)) != len(indices):
        twice = next(i for i in indices if indices.count(i) > 1)
        raise ProviderError("bad_response", f"two choices have the same index {twice}")
    for index in indices:
        if not 0 <= index < n:
            raise ProviderError("bad_response", f"choice index {index} is out of range for n {n}")


def _json(body: bytes, what: str) -> Any:
    text = body.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ProviderError("bad_response", f"{what} is not JSON: {text}", retryable=True) from None


def _error_in(payload: dict[str, Any]) -> ProviderError | None:
    """An error sent with status 200 (by a proxy, or by vLLM), with the server's message;
    retried like a 5xx."""
    error = payload if payload.get("object") == "error" else payload.get("error")
    if isinstance(error, dict):
        error = error.get("message") or json.dumps(error)
    if not error:
        return None
    return ProviderError(
        "server_error", f"HTTP 200 with an error: {error}", retryable=True, status=200
    )


def _http_error(status: int, body: bytes, headers: httpx.Headers) -> ProviderError:
    message, code = _error_detail(body.decode("utf-8", "replace"))
    text = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    if status == 429 and code == "insufficient_quota":
        return ProviderError("insufficient_quota", text, status=status)
    if status in RETRYABLE_STATUS:
        kind = "rate_limit" if status == 429 else "server_error"
        return ProviderError(
            kind, text, retryable=True, status=status, retry_after=retry_after(headers)
        )
    kind = {400: "bad_request", 401: "auth", 403: "auth", 404: "not_found"}.get(
        status, f"http_{status}"
    )
    return ProviderError(kind, text, status=status)


def _transport_error(exc: Exception) -> ProviderError:
    """A timeout or a broken connection; both are worth another try."""
    cause = exc.__cause__ or exc
    name = type(cause).__name__
    if isinstance(cause, TimeoutError) or "Timeout" in name:
        return ProviderError("timeout", f"timed out ({name})", retryable=True)
    what = f"connection failed: {name}: {cause}".rstrip(": ")
    return ProviderError("connection", what, retryable=True)


def _tool_calls(message: dict[str, Any]) -> list[dict[str, str]] | None:
    """Tool calls (or a legacy function_call) of a chat message, flattened."""
    calls = []
    for call in _list(message.get("tool_calls")):
        if isinstance(call, dict):
            function = _dict(call.get("function"))
            calls.append(
                {
                    "id": str(call.get("id") or ""),
                    "name": str(function.get("name") or ""),
                    "arguments": str(function.get("arguments") or ""),
                }
            )
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        calls.append(
            {
                "id": "",
                "name": str(legacy.get("name") or ""),
                "arguments": str(legacy.get("arguments") or ""),
            }
        )
    return calls or None


class _StreamedCalls:
    """Tool-call deltas of one streamed choice, assembled by their index."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, str]] = {}

    def add(self, delta: dict[str, Any]) -> None:
        for part in _list(delta.get("tool_calls")):
            if not isinstance(part, dict):
                continue
            call = self.calls.setdefault(
                _index(part.get("index"), len(self.calls)), {"id": "", "name": "", "arguments": ""}
            )
            call["id"] = str(part.get("id") or call["id"])
            function = _dict(part.get("function"))
            call["name"] += str(function.get("name") or "")
            call["arguments"] += str(function.get("arguments") or "")
        legacy = delta.get("function_call")
        if isinstance(legacy, dict):
            call = self.calls.setdefault(-1, {"id": "", "name": "", "arguments": ""})
            call["name"] += str(legacy.get("name") or "")
            call["arguments"] += str(legacy.get("arguments") or "")

    def result(self) -> list[dict[str, str]] | None:
        return [self.calls[i] for i in sorted(self.calls)] or None


def _delta_text(choice: dict[str, Any], endpoint: str) -> str:
    if endpoint == "chat":
        content = _dict(choice.get("delta")).get("content")
    else:
        content = choice.get("text")
    return content if isinstance(content, str) else ""


def _error_detail(body: str) -> tuple[str, str | None]:
    """The OpenAI error body's message and code; the raw text when it is not one."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return body.strip(), None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return str(error.get("message") or ""), str(code) if code else None
    return body.strip(), None


# a server's JSON may hold anything anywhere: each field is read as the type it should be


def _index(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
