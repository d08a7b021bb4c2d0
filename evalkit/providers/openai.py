"""Any OpenAI-compatible HTTP server: chat, legacy completions and the Responses API, plain or
streamed.

This module sends an attempt and bounds it; reading the answer is split by what it is: the
body within its cap (`bodies.py`), a JSON answer (`answers.py`; a Responses API one,
`responses.py`), a stream (`streams.py`), and a failure named as a `ProviderError`
(`failures.py`).

HTTP goes through httpx's API over an aiohttp transport (`httpx-aiohttp`): plain
`httpx.AsyncClient`'s pool costs ~25 ms of CPU per request at 100 in flight, the aiohttp
transport stays near a bare aiohttp client (see benchmarks/README.md).

The server is not trusted. One attempt is bounded in time (`--timeout`, all of it: a drip
fed body or a stream of keep-alive comments cannot outlast it) and in size
(`bodies.body_cap`, of the decoded body); an answer that would make a wrong row (a duplicate
or out-of-range choice index, a streamed choice that never finished) is an error; and every
string an attempt returns or raises goes through one `Scrubber` (valid Unicode, no API key,
no control characters in messages).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Sequence

import aiohttp
import httpx
import yarl
from httpx_aiohttp.transport import (
    AiohttpResponseStream,
    AiohttpTransport,
    map_aiohttp_exceptions,
)

from evalkit.planning.plan import Request
from evalkit.providers import Completion, ProviderError
from evalkit.providers.answers import parse, parse_json
from evalkit.providers.bodies import ERROR_BODY_BYTES, body_cap, read_body
from evalkit.providers.failures import http_error, transport_error
from evalkit.providers.responses import parse_response
from evalkit.providers.scrub import Scrubber
from evalkit.providers.streams import read_events, read_stream

_PATHS = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "moderations": "/moderations",
    "responses": "/responses",
}


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
        headers: Sequence[tuple[str, str]] = (),
        query: str = "",
        secrets: Sequence[str] = (),
    ) -> None:
        """`headers`: an endpoint's own, its values already read; `query`: URL-encoded, on
        every request; `secrets`: header values from the environment, scrubbed like the key."""
        self._transport = transport
        base = base_url.rstrip("/")
        tail = f"?{query}" if query else ""
        self._urls = {kind: httpx.URL(base + path + tail) for kind, path in _PATHS.items()}
        self._headers = [("content-type", "application/json")]
        if api_key and api_key.strip():
            self._headers.append(("authorization", f"Bearer {api_key.strip()}"))
        self._headers += [(name.lower(), value) for name, value in headers]
        self._timeout_s = timeout_s  # the whole attempt; a connection may take at most 30 s of it
        self._timeout = {"connect": min(timeout_s, 30.0)}
        self._scrub = Scrubber(api_key, secrets)
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
            raise transport_error(exc) from None

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
        body = await read_body(response, ERROR_BODY_BYTES, request, cut=True)
        raise http_error(response.status_code, body, response.headers)
    is_json = "json" in response.headers.get("content-type", "")
    if request.body.get("stream") and not is_json:
        if request.endpoint == "responses":
            return await read_events(response, request, started)
        return await read_stream(response, request, started)
    payload = parse_json(await read_body(response, body_cap(request), request), "response")
    if request.endpoint == "responses":
        return parse_response(payload, time.perf_counter() - started)
    return parse(payload, request, time.perf_counter() - started)
