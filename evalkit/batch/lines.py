"""A batch's files: the input line of each request, and what each output or error line says.

An input line carries the request's body exactly as it would be sent online (less `stream`,
which a batch cannot do) under `custom_id`, the request's key: so an answer joins back to its
request whatever order the output file lists it in, and is the same cache row an online run
would have written. An output line is read by the same parsers as an online answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx

from evalkit.planning.plan import Request
from evalkit.providers import Completion, ProviderError
from evalkit.providers.answers import Asked, parse
from evalkit.providers.failures import http_error
from evalkit.providers.responses import parse_response

URLS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "responses": "/v1/responses",
    "moderations": "/v1/moderations",
}
MAX_LINES = 50_000  # the API's limits per batch
MAX_BYTES = 200 * 2**20
# what a line's `error.code` (a line the batch never ran) means: sent again in a new batch
RETRYABLE_CODES = frozenset({"batch_expired", "batch_cancelled", "batch_failed"})
_NOT_IN_A_BATCH = ("stream", "stream_options")

Outcome = Completion | ProviderError


@dataclass(frozen=True, slots=True)
class LineNote:
    """What a batch keeps of a request it carries, to read its line back: not the request
    (its body is on disk, in the input file), so 50,000 waiting lines cost kilobytes."""

    endpoint: str
    choices: int


@cache
def note_of(endpoint: str, choices: int) -> LineNote:
    """One shared note per kind of request."""
    return LineNote(endpoint, choices)


def input_line(request: Request) -> str:
    """The request as one line of a batch's input file (no newline)."""
    body = request.wire
    if any(name in request.body for name in _NOT_IN_A_BATCH):
        kept = {k: v for k, v in request.body.items() if k not in _NOT_IN_A_BATCH}
        body = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    url = URLS[request.endpoint]
    return f'{{"custom_id":{json.dumps(request.key)},"method":"POST","url":"{url}","body":{body}}}'


def custom_id_of(line: bytes) -> tuple[str, dict[str, Any]] | None:
    """An output or error line's custom_id and the line itself; None for a torn line."""
    try:
        parsed = json.loads(line)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("custom_id"), str):
        return None
    return parsed["custom_id"], parsed


def outcome_of(line: dict[str, Any], request: Asked) -> Outcome:
    """What one output or error line answered to `request`."""
    response = line.get("response")
    error = line.get("error")
    if isinstance(response, dict) and response.get("status_code") == 200:
        body = response.get("body")
        try:
            if request.endpoint == "responses":
                return parse_response(body, 0.0)
            return parse(body, request, 0.0)
        except ProviderError as exc:
            return exc
    if isinstance(response, dict) and isinstance(response.get("status_code"), int):
        raw = json.dumps(response.get("body")).encode()
        return http_error(response["status_code"], raw, httpx.Headers())
    if isinstance(error, dict):
        code = str(error.get("code") or "batch_error")
        message = str(error.get("message") or code)
        return ProviderError(code, f"{code}: {message}", retryable=code in RETRYABLE_CODES)
    return ProviderError("bad_response", "a batch line with neither a response nor an error")
