"""The seam to model servers: one protocol, one method that sends a request.

    Provider.complete(request) -> Completion   or raises ProviderError

`openai.py` speaks to any OpenAI-compatible HTTP server; the embedded local model arrives
with its own module behind the same protocol.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any, Protocol

from evalkit.planning.plan import Request

if "httpx" not in sys.modules:
    # httpx imports its command-line tool (click, rich, pygments: 50-70 ms) whenever those are
    # installed, and evalkit never runs it. Until httpx is imported, its `_main` is a module
    # without `main`, which httpx's own fallback expects when its CLI extra is missing.
    sys.modules.setdefault("httpx._main", types.ModuleType("httpx._main"))


@dataclass(slots=True)
class Choice:
    """One generated answer; a request with `n` > 1 has several."""

    index: int
    text: str
    finish_reason: str | None
    logprobs: Any = None
    tool_calls: list[dict[str, str]] | None = None  # [{id, name, arguments (JSON text)}]


@dataclass(slots=True)
class Completion:
    """What a server answered to one request."""

    choices: list[Choice]
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    system_fingerprint: str | None = None
    latency_s: float = 0.0
    ttft_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    cached_tokens: int | None = None  # of prompt_tokens, read from the provider's prompt cache
    reasoning_tokens: int | None = None  # of completion_tokens, hidden reasoning


class ProviderError(Exception):
    """A request that failed; `retryable` says whether sending it again may help.

    `error_type` is a short stable word for reports (rate_limit, server_error, timeout,
    connection, bad_request, auth, not_found, bad_response, insufficient_quota, ...).
    """

    def __init__(
        self,
        error_type: str,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
        batch_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.batch_id = batch_id  # the Batch API batch whose line this is


class Provider(Protocol):
    """Sends one request and returns what the model answered."""

    async def complete(self, request: Request) -> Completion: ...
