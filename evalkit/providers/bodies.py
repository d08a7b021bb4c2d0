"""How much of a server's answer is read: the decoded body, whole or as lines, within a cap.

The server is not trusted, so a body is read up to `body_cap` bytes of what it decodes to
(what the request could make, not what the server announces), and an error body only up to
its start: its message is all evalkit shows of it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator

import aiohttp
import httpx
from httpx_aiohttp.transport import AiohttpResponseStream, map_aiohttp_exceptions

from evalkit.planning.plan import Request
from evalkit.providers.failures import too_large

BODY_BASE_BYTES = 1 << 20  # 1 MiB: the envelope, usage, a long refusal
BODY_PER_TOKEN_BYTES = 4 << 10  # 4 KiB: a streamed chunk of one token with 20 top logprobs
MAX_BODY_BYTES = 64 << 20  # 64 MiB, whatever max_tokens says
ERROR_BODY_BYTES = 64 << 10  # of an error response, only the start is read: its message
_LINE_END = re.compile(rb"\r\n|\r|\n")


def body_cap(request: Request) -> int:
    """The most bytes the decoded answer to `request` may have: 1 MiB plus 4 KiB per token
    it may hold (`max_tokens`, else the model's context window, times `n`), at most 64 MiB.

    Far past that, the body is no answer to this request but a runaway or hostile server
    (a gzip bomb, 100 MB for `max_tokens: 8`), which would be held in memory and stored.
    """
    tokens = request.max_tokens or request.target.info.context_window
    per_token = BODY_PER_TOKEN_BYTES * tokens * max(1, request.choices)
    return min(MAX_BODY_BYTES, BODY_BASE_BYTES + per_token)


async def read_body(
    response: httpx.Response, cap: int, request: Request, cut: bool = False
) -> bytes:
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
            raise too_large(request, cap)
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


async def lines(response: httpx.Response, request: Request) -> AsyncGenerator[str, None]:
    """The lines of a streamed body (ended by CRLF, LF or CR), at most `body_cap` in all."""
    cap = body_cap(request)
    pending = bytearray()
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise too_large(request, cap)
        pending += chunk
        if b"\n" not in chunk and b"\r" not in chunk:
            continue  # a line still under way: split only when one ends
        *done, rest = _LINE_END.split(pending)
        pending = bytearray(rest)
        for line in done:
            yield line.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")
