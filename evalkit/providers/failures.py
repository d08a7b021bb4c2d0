"""Which `ProviderError` a failed attempt is: an HTTP status, an error sent with status 200,
a broken connection or a body past its cap.

The kind and `retryable` decide what the runner does next (the retry policy trusts them), so
every failure is named here, in one place, with the server's own message where it sent one.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from evalkit.execution.retry import RETRYABLE_STATUS, retry_after
from evalkit.planning.plan import Request
from evalkit.providers import ProviderError


def http_error(status: int, body: bytes, headers: httpx.Headers) -> ProviderError:
    """An answer with a status other than 200, read from the start of its body."""
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


def error_in(payload: dict[str, Any]) -> ProviderError | None:
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


def transport_error(exc: Exception) -> ProviderError:
    """A timeout or a broken connection; both are worth another try."""
    cause = exc.__cause__ or exc
    name = type(cause).__name__
    if isinstance(cause, TimeoutError) or "Timeout" in name:
        return ProviderError("timeout", f"timed out ({name})", retryable=True)
    what = f"connection failed: {name}: {cause}".rstrip(": ")
    return ProviderError("connection", what, retryable=True)


def too_large(request: Request, cap: int) -> ProviderError:
    """A body past `bodies.body_cap`: no answer to this request, so not worth another try."""
    tokens = f"max_tokens {request.max_tokens}" if request.max_tokens else "no max_tokens"
    return ProviderError(
        "response_too_large",
        f"the response passed {cap:,} bytes, the most evalkit reads for {tokens} and "
        f"n {request.choices} (1 MiB + 4 KiB per token, at most 64 MiB)",
    )


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
