"""How bytes look on the wire: JSON, server-sent events and OpenAI's error bodies.

Why apart: answers, faults and the server all speak these shapes, and the encoder runs on
every request (orjson when installed; it only matters for the 100k-request benchmark).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

try:  # orjson is several times faster; it only matters for the 100k-request benchmark.
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None  # type: ignore[assignment]

JSON_HEADERS = {"Content-Type": "application/json"}
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
SSE_DONE = b"data: [DONE]\n\n"

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


def dumps(obj: Any) -> bytes:
    """Serialise compactly; orjson when available because this runs on every request."""
    if orjson is not None:
        return orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def loads(raw: bytes) -> Any:
    """Parse a request body; bad JSON raises ValueError with either parser."""
    if orjson is not None:
        return orjson.loads(raw)
    return json.loads(raw)


def sse(obj: Any) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return b"data: " + dumps(obj) + b"\n\n"


def error_body(
    status: int,
    message: str | None = None,
    type_: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    """OpenAI's ``{"error": {...}}`` for ``status``, its defaults filled in."""
    d_type, d_code, d_message = _ERROR_DEFAULTS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
    )
    if code == "insufficient_quota":
        d_type, d_message = "insufficient_quota", _QUOTA_MESSAGE
    return dumps(
        {
            "error": {
                "message": message or d_message,
                "type": type_ or d_type,
                "param": param,
                "code": code if code is not None else d_code,
            }
        }
    )


def error_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON error response, with extra ``headers`` (Retry-After, ...) when given."""
    all_headers = dict(JSON_HEADERS)
    if headers:
        all_headers.update(headers)
    return web.Response(status=status, body=body, headers=all_headers)
