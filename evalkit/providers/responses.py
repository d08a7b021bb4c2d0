"""A Responses API answer (a `response` object, whole or streamed) → `Completion`.

Why apart from `answers.py`: a response has no choices but output items, says how it ended
in `status` and `incomplete_details`, and names its usage differently; mapped here onto the
records chat produces (text, finish_reason, tool calls, cached and reasoning tokens), so
every check, column and resampling rule works on it unchanged.
"""

from __future__ import annotations

import time
from typing import Any

from evalkit.providers import Choice, Completion, ProviderError
from evalkit.providers.answers import as_dict, as_int, as_list, as_str
from evalkit.providers.failures import error_in

# incomplete_details.reason → the finish_reason chat would have given
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}
# stream events that end a stream, each carrying the final response object
FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
# stream events whose arrival is the first token
FIRST_TOKEN_EVENTS = frozenset(
    {"response.output_text.delta", "response.function_call_arguments.delta"}
)


def parse_response(payload: Any, latency: float, ttft: float | None = None) -> Completion:
    """The completion in a response object; a failed or unfinished response is an error."""
    if not isinstance(payload, dict):
        raise ProviderError("bad_response", "response is not a JSON object")
    status = payload.get("status")
    if status == "failed":
        raise _failed(as_dict(payload.get("error")))
    error = error_in(payload)
    if error is not None:
        raise error
    if status not in ("completed", "incomplete"):
        shown = status if isinstance(status, str) else "missing"
        raise ProviderError("bad_response", f"the response's status is {shown[:40]!r}")
    texts: list[str] = []
    calls: list[dict[str, str]] = []
    answered = False  # a message or a call: a completed response without either is no answer
    for item in as_list(payload.get("output")):
        item = as_dict(item)
        answered = answered or item.get("type") in ("message", "function_call")
        if item.get("type") == "message":
            texts += [
                part["text"]
                for part in as_list(item.get("content"))
                if isinstance(part, dict)
                and part.get("type") == "output_text"
                and isinstance(part.get("text"), str)
            ]
        elif item.get("type") == "function_call":
            calls.append(
                {
                    "id": str(item.get("call_id") or ""),
                    "name": str(item.get("name") or ""),
                    "arguments": str(item.get("arguments") or ""),
                }
            )
    if status == "completed" and not answered:
        raise ProviderError("bad_response", "the completed response has no message and no call")
    if status == "completed":
        finish = "tool_calls" if calls else "stop"
    else:
        reason = as_str(as_dict(payload.get("incomplete_details")).get("reason")) or "incomplete"
        finish = _INCOMPLETE.get(reason, reason)
    usage = as_dict(payload.get("usage"))
    return Completion(
        [Choice(0, "".join(texts), finish, None, calls or None)],
        as_int(usage.get("input_tokens")),
        as_int(usage.get("output_tokens")),
        None,
        latency,
        ttft,
        cached_tokens=as_int(as_dict(usage.get("input_tokens_details")).get("cached_tokens")),
        reasoning_tokens=as_int(
            as_dict(usage.get("output_tokens_details")).get("reasoning_tokens")
        ),
    )


class StreamedResponse:
    """A streamed response, event by event: the first delta is the first token, the final
    event carries the whole response."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.ttft: float | None = None

    def add(self, event: Any) -> Completion | None:
        """The completion once `event` ends the stream; None while it goes on."""
        if not isinstance(event, dict):
            return None
        kind = event.get("type")
        if kind in FIRST_TOKEN_EVENTS and self.ttft is None:
            self.ttft = time.perf_counter() - self.started
        if kind == "error":
            message = as_str(event.get("message")) or as_str(event.get("code")) or "no message"
            raise ProviderError(
                "server_error", f"the stream sent an error: {message}", retryable=True
            )
        if kind in FINAL_EVENTS:
            if not isinstance(event.get("response"), dict):
                raise ProviderError("bad_response", f"{kind} carries no response object")
            return parse_response(event["response"], time.perf_counter() - self.started, self.ttft)
        return None


def _failed(error: dict[str, Any]) -> ProviderError:
    """A response with status `failed`: the server's code and message; a server error or a
    rate limit may pass on another try."""
    code = as_str(error.get("code")) or "unknown"
    message = as_str(error.get("message")) or "no message"
    retryable = code in ("server_error", "rate_limit_exceeded")
    return ProviderError(
        "response_failed", f"the response failed ({code}): {message}", retryable=retryable
    )
