"""An OpenAI JSON answer → `Completion`: chat, legacy completions and moderations.

Parsed tolerantly (missing usage or fingerprint, extra fields) and strictly where it matters:
no choices, or a choice numbered twice or past `n`, would make a wrong row, so it is an
error. A server's JSON may hold anything anywhere: each field is read as the type it should
be (`as_int`, `as_str`, ...), which the stream reader (`streams.py`) shares.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from evalkit.providers import Choice, Completion, ProviderError
from evalkit.providers.failures import error_in


class Asked(Protocol):
    """What reading an answer needs of its request (a `Request`, or a batch line's note of
    it): the endpoint it went to, and how many choices it asked for."""

    @property
    def endpoint(self) -> str: ...

    @property
    def choices(self) -> int: ...


def parse(payload: Any, request: Asked, latency: float) -> Completion:
    """The completion in a whole JSON answer (also one to `stream: true` sent unstreamed)."""
    if not isinstance(payload, dict):
        raise ProviderError("bad_response", "response is not a JSON object")
    error = error_in(payload)
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
            message = as_dict(choice.get("message"))
            text = message.get("content")
            calls = _tool_calls(message)
        else:
            text = choice.get("text")
        choices.append(
            Choice(
                as_index(choice.get("index"), position),
                text if isinstance(text, str) else "",
                as_str(choice.get("finish_reason")) or None,
                choice.get("logprobs"),
                calls,
            )
        )
    check_indices([c.index for c in choices], request)
    usage = as_dict(payload.get("usage"))
    return Completion(
        choices,
        as_int(usage.get("prompt_tokens")),
        as_int(usage.get("completion_tokens")),
        as_str(payload.get("system_fingerprint")),
        latency,
        cached_tokens=cached_tokens(usage),
        reasoning_tokens=reasoning_tokens(usage),
    )


def cached_tokens(usage: dict[str, Any]) -> int | None:
    """`usage.prompt_tokens_details.cached_tokens`: prompt tokens billed at the cached rate."""
    return as_int(as_dict(usage.get("prompt_tokens_details")).get("cached_tokens"))


def reasoning_tokens(usage: dict[str, Any]) -> int | None:
    """`usage.completion_tokens_details.reasoning_tokens`: hidden tokens, billed as output."""
    return as_int(as_dict(usage.get("completion_tokens_details")).get("reasoning_tokens"))


def check_indices(indices: list[int], request: Asked) -> None:
    """Each choice is one row numbered by its index: two alike, or one past `n`, would
    silently drop or renumber a row."""
    n = max(1, request.choices)
    if len(set(indices)) != len(indices):
        twice = next(i for i in indices if indices.count(i) > 1)
        raise ProviderError("bad_response", f"two choices have the same index {twice}")
    for index in indices:
        if not 0 <= index < n:
            raise ProviderError("bad_response", f"choice index {index} is out of range for n {n}")


def parse_json(body: bytes, what: str) -> Any:
    """`body` as JSON; not JSON (a proxy's HTML page, a cut body) is worth another try."""
    text = body.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ProviderError("bad_response", f"{what} is not JSON: {text}", retryable=True) from None


def _tool_calls(message: dict[str, Any]) -> list[dict[str, str]] | None:
    """Tool calls (or a legacy function_call) of a chat message, flattened."""
    calls = []
    for call in as_list(message.get("tool_calls")):
        if isinstance(call, dict):
            function = as_dict(call.get("function"))
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


# a server's JSON may hold anything anywhere: each field is read as the type it should be


def as_index(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
