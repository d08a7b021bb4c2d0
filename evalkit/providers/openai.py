"""Any OpenAI-compatible HTTP server: chat and legacy completions, plain or streamed.

HTTP goes through httpx's API over an aiohttp transport (`httpx-aiohttp`): plain
`httpx.AsyncClient`'s pool costs ~25 ms of CPU per request at 100 in flight, the aiohttp
transport stays near a bare aiohttp client (see benchmarks/README.md). Responses are parsed
tolerantly (missing usage or fingerprint, extra fields) and strictly where it matters (no
choices is an error). Every string an attempt returns or raises goes through one `Scrubber`
(valid Unicode, no API key, no control characters in messages).
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import httpx

from evalkit.plan import Request
from evalkit.providers import Choice, Completion, ProviderError
from evalkit.providers.scrub import Scrubber
from evalkit.retry import RETRYABLE_STATUS, retry_after

_PATHS = {"chat": "/chat/completions", "completions": "/completions", "moderations": "/moderations"}


def make_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """One shared transport: aiohttp's connection pool, sized for everything in flight."""
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    transport: httpx.AsyncBaseTransport = AiohttpTransport(limits=limits, trust_env=True)
    return transport


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
        self._timeout = {
            "connect": min(timeout_s, 30.0),
            "read": timeout_s,
            "write": timeout_s,
            "pool": timeout_s,
        }
        self._scrub = Scrubber(api_key)

    async def _post(self, url: httpx.URL, content: bytes) -> httpx.Response:
        request = httpx.Request(
            "POST",
            url,
            headers=self._headers,
            content=content,
            extensions={"timeout": self._timeout},
        )
        return await self._transport.handle_async_request(request)

    async def complete(self, request: Request) -> Completion:
        """One attempt; what it returns or raises is scrubbed."""
        try:
            return self._scrub.completion(await self._attempt(request))
        except ProviderError as exc:
            raise self._scrub.error(exc) from None

    async def _attempt(self, request: Request) -> Completion:
        url = self._urls[request.endpoint]
        content = request.wire.encode()
        started = time.perf_counter()
        try:
            if request.body.get("stream"):
                return await self._stream(url, content, request, started)
            response = await self._post(url, content)
            try:
                body = await response.aread()
            finally:
                await response.aclose()
        except (httpx.TransportError, aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(exc) from None
        latency = time.perf_counter() - started
        if response.status_code != 200:
            raise self._http_error(response.status_code, body, response.headers)
        try:
            payload = json.loads(body)
        except ValueError:
            text = body.decode("utf-8", "replace")
            raise ProviderError(
                "bad_response", f"response is not JSON: {text}", retryable=True
            ) from None
        return self._parse(payload, request, latency)

    async def _stream(
        self, url: httpx.URL, content: bytes, request: Request, started: float
    ) -> Completion:
        texts: dict[int, list[str]] = {}
        finish: dict[int, str | None] = {}
        logprobs: dict[int, list[Any]] = {}
        calls: dict[int, _StreamedCalls] = {}
        usage: dict[str, Any] = {}
        fingerprint = None
        ttft = None
        done = False
        resp = await self._post(url, content)
        try:
            if resp.status_code != 200:
                body = await resp.aread()
                raise self._http_error(resp.status_code, body, resp.headers)
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise ProviderError(
                        "bad_response",
                        f"stream chunk is not JSON: {data}",
                        retryable=True,
                    ) from None
                if not isinstance(chunk, dict):
                    continue
                fingerprint = chunk.get("system_fingerprint") or fingerprint
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    index = _index(choice.get("index"), 0)
                    piece = _delta_text(choice, request.endpoint)
                    if piece:
                        if ttft is None:
                            ttft = time.perf_counter() - started
                        texts.setdefault(index, []).append(piece)
                    else:
                        texts.setdefault(index, [])
                    if choice.get("finish_reason"):
                        finish[index] = choice["finish_reason"]
                    if choice.get("logprobs"):
                        logprobs.setdefault(index, []).append(choice["logprobs"])
                    delta = choice.get("delta")
                    if isinstance(delta, dict) and (
                        "tool_calls" in delta or "function_call" in delta
                    ):
                        if ttft is None:
                            ttft = time.perf_counter() - started
                        calls.setdefault(index, _StreamedCalls()).add(delta)
        finally:
            await resp.aclose()
        if not done:
            raise ProviderError(
                "truncated_stream", "the stream ended without [DONE]", retryable=True
            )
        if not texts:
            raise ProviderError("bad_response", "the stream carried no choices")
        choices = [
            Choice(
                i,
                "".join(texts[i]),
                finish.get(i),
                logprobs.get(i),
                calls[i].result() if i in calls else None,
            )
            for i in sorted(texts)
        ]
        return Completion(
            choices,
            _int(usage.get("prompt_tokens")),
            _int(usage.get("completion_tokens")),
            fingerprint,
            time.perf_counter() - started,
            ttft,
        )

    def _parse(self, payload: Any, request: Request, latency: float) -> Completion:
        if not isinstance(payload, dict):
            raise ProviderError("bad_response", "response is not a JSON object")
        if request.endpoint == "moderations":
            results = payload.get("results")
            if not isinstance(results, list) or not results or not isinstance(results[0], dict):
                raise ProviderError("bad_response", "moderation response has no results")
            result = json.dumps(results[0])  # the scrubber reads it as text
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
                message = choice.get("message") or {}
                message = message if isinstance(message, dict) else {}
                text = message.get("content")
                calls = _tool_calls(message)
            else:
                text = choice.get("text")
            choices.append(
                Choice(
                    _index(choice.get("index"), position),
                    text if isinstance(text, str) else "",
                    choice.get("finish_reason"),
                    choice.get("logprobs"),
                    calls,
                )
            )
        usage = payload.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return Completion(
            choices,
            _int(usage.get("prompt_tokens")),
            _int(usage.get("completion_tokens")),
            payload.get("system_fingerprint"),
            latency,
        )

    def _http_error(self, status: int, body: bytes, headers: httpx.Headers) -> ProviderError:
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

    def _transport_error(self, exc: Exception) -> ProviderError:
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
    for call in message.get("tool_calls") or []:
        if isinstance(call, dict):
            function = call.get("function") or {}
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
        for part in delta.get("tool_calls") or []:
            if not isinstance(part, dict):
                continue
            call = self.calls.setdefault(
                _index(part.get("index"), len(self.calls)), {"id": "", "name": "", "arguments": ""}
            )
            call["id"] = str(part.get("id") or call["id"])
            function = part.get("function") or {}
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
        delta = choice.get("delta") or {}
        content = delta.get("content") if isinstance(delta, dict) else None
    else:
        content = choice.get("text")
    return content if isinstance(content, str) else ""


def _error_detail(body: str) -> tuple[str, str | None]:
    """The OpenAI error body's message and code; the raw text when it is not one."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body.strip(), None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return str(error.get("message") or ""), str(code) if code else None
    return body.strip(), None


def _index(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
