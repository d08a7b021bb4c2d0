"""An OpenAI server-sent-event stream → `Completion`, assembled chunk by chunk per choice (a
Responses API stream, event by event, until the event that carries the whole response).

A stream is only an answer once it said `[DONE]` and every choice it carried finished: a
server that cut it short (e.g. to serve another request) would otherwise leave a truncated
row that looks whole. Time to first token is measured here, at the first text or tool call.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import httpx

from evalkit.planning.plan import Request
from evalkit.providers import Choice, Completion, ProviderError
from evalkit.providers.answers import (
    as_dict,
    as_index,
    as_int,
    as_list,
    as_str,
    cached_tokens,
    check_indices,
    parse_json,
    reasoning_tokens,
)
from evalkit.providers.bodies import lines
from evalkit.providers.failures import error_in
from evalkit.providers.responses import StreamedResponse


async def read_stream(response: httpx.Response, request: Request, started: float) -> Completion:
    """The completion in a streamed body, whose `data:` lines are JSON chunks."""
    answer = _Streamed(request, started)
    async with contextlib.aclosing(lines(response, request)) as stream:
        async for line in stream:
            if line.startswith("data:"):
                data = line[5:].strip()
                if data == "[DONE]":
                    return answer.completion()
                answer.add(parse_json(data.encode(), "stream chunk"))
    raise ProviderError("truncated_stream", "the stream ended without [DONE]", retryable=True)


async def read_events(response: httpx.Response, request: Request, started: float) -> Completion:
    """The completion in a Responses API stream: typed events (`data:` lines, each naming its
    `type`), whole once an event carries the final response; there is no [DONE]."""
    answer = StreamedResponse(started)
    async with contextlib.aclosing(lines(response, request)) as stream:
        async for line in stream:
            if line.startswith("data:"):
                done = answer.add(parse_json(line[5:].strip().encode(), "stream event"))
                if done is not None:
                    return done
    raise ProviderError(
        "truncated_stream", "the stream ended before the response was complete", retryable=True
    )


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
        error = error_in(chunk)
        if error is not None:
            raise error
        self.fingerprint = as_str(chunk.get("system_fingerprint")) or self.fingerprint
        self.usage = as_dict(chunk.get("usage")) or self.usage
        for choice in as_list(chunk.get("choices")):
            if not isinstance(choice, dict):
                raise ProviderError("bad_response", "a streamed choice is not a JSON object")
            index = as_index(choice.get("index"), 0)
            text = self.texts.setdefault(index, [])
            piece = _delta_text(choice, self.request.endpoint)
            if piece:
                self._first_token()
                text.append(piece)
            reason = as_str(choice.get("finish_reason"))
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
        check_indices(indices, self.request)
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
            as_int(self.usage.get("prompt_tokens")),
            as_int(self.usage.get("completion_tokens")),
            self.fingerprint,
            time.perf_counter() - self.started,
            self.ttft,
            cached_tokens=cached_tokens(self.usage),
            reasoning_tokens=reasoning_tokens(self.usage),
        )


class _StreamedCalls:
    """Tool-call deltas of one streamed choice, assembled by their index."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, str]] = {}

    def add(self, delta: dict[str, Any]) -> None:
        for part in as_list(delta.get("tool_calls")):
            if not isinstance(part, dict):
                continue
            call = self.calls.setdefault(
                as_index(part.get("index"), len(self.calls)),
                {"id": "", "name": "", "arguments": ""},
            )
            call["id"] = str(part.get("id") or call["id"])
            function = as_dict(part.get("function"))
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
        content = as_dict(choice.get("delta")).get("content")
    else:
        content = choice.get("text")
    return content if isinstance(content, str) else ""
