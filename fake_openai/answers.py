"""How an answer is built, deterministically, so tests can predict it.

* If the last user message (chat) or the prompt (completions) has a line ``ANSWER: <text>``
  (the last such line wins), the output is ``<text>``; otherwise it is ``"echo: "`` plus the
  first ``ECHO_MAX_CHARS`` characters of that message.
* Tokens are whitespace-separated words. An output longer than ``max_tokens`` words is cut to
  ``max_tokens`` words with ``finish_reason="length"``, otherwise ``"stop"``.
* ``LENGTH_UNTIL_MAX=<N>`` in the prompt: ``finish_reason`` is ``"length"`` whenever
  ``max_tokens < N``, else ``"stop"`` (an unset ``max_tokens`` is unlimited), for resampling tests.
* ``FILTER_ME`` in the prompt: ``finish_reason="content_filter"``.
* ``n > 1`` with ``temperature > 0`` (OpenAI's default is 1): choice ``i`` gets ``" #i"`` appended
  (before the ``max_tokens`` cut) so samples differ.
* ``CALL: name {json}`` in the prompt, with tools (or functions) declared: a tool call.
* Moderations flag any input containing ``FLAG_ME`` (as harassment), nothing else.

The payloads and stream chunks have the shapes of the real API, logprobs and usage included.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fake_openai.jobs import BadRequest, Job, parse_job
from fake_openai.wire import error_body, loads, sse

ECHO_MAX_CHARS = 200
"""How much of the prompt the ``echo:`` answer repeats, so huge prompts give small answers."""
FINGERPRINT = "fp_fake_openai"

_ANSWER_RE = re.compile(r"^[ \t]*ANSWER:[ \t]*(.*?)[ \t\r]*$", re.MULTILINE)
_UNTIL_MAX_RE = re.compile(r"LENGTH_UNTIL_MAX=(\d+)")
_CALL_RE = re.compile(r"^[ \t]*CALL:[ \t]*([A-Za-z0-9_-]+)[ \t]*(.*?)[ \t\r]*$", re.MULTILINE)
"""``CALL: name {json}`` in the prompt, with tools (or functions) declared: a tool call."""
_TOKEN_RE = re.compile(r"\s*\S+")


@dataclass(slots=True)
class Choice:
    """One generated choice: its text, word tokens and, for a tool call, name and arguments."""

    index: int
    text: str
    finish_reason: str
    tokens: list[str]
    call: tuple[str, str] | None = None  # (name, arguments JSON text) when the model calls a tool


def _tokenize(text: str) -> list[str]:
    """Split into word tokens that concatenate back to ``text`` (leading spaces kept)."""
    tokens: list[str] = _TOKEN_RE.findall(text)
    consumed = sum(map(len, tokens))
    if consumed < len(text) and tokens:  # trailing whitespace rides on the last token
        tokens[-1] += text[consumed:]
    return tokens


def _logprob(token: str) -> float:
    """Deterministic per-token logprob; ``+ 0.0`` turns ``-0.0`` into ``0.0``."""
    return round(-0.1 * (len(token) % 5), 4) + 0.0


def _alternatives(token: str, k: int) -> list[tuple[str, float]]:
    """``k`` deterministic top alternatives, the sampled token first."""
    lp = _logprob(token)
    return [(token if j == 0 else f"{token}~{j}", round(lp - 0.5 * j, 4) + 0.0) for j in range(k)]


def _chat_logprob_entry(token: str, top: int) -> dict[str, Any]:
    return {
        "token": token,
        "logprob": _logprob(token),
        "bytes": list(token.encode()),
        "top_logprobs": [
            {"token": t, "logprob": lp, "bytes": list(t.encode())}
            for t, lp in _alternatives(token, top)
        ],
    }


def _completion_logprobs(tokens: list[str], k: int, start: int = 0) -> dict[str, Any]:
    """The legacy completions shape; ``text_offset`` counts from the start of the choice text."""
    offsets = []
    pos = start
    for tok in tokens:
        offsets.append(pos)
        pos += len(tok)
    return {
        "tokens": list(tokens),
        "token_logprobs": [_logprob(t) for t in tokens],
        "top_logprobs": [dict(_alternatives(t, k)) for t in tokens],
        "text_offset": offsets,
    }


def _base_output(prompt: str) -> str:
    if "ANSWER:" in prompt:
        matches = _ANSWER_RE.findall(prompt)
        if matches:
            return str(matches[-1])
    return "echo: " + prompt[:ECHO_MAX_CHARS]


def generate(job: Job) -> list[Choice]:
    """Apply the deterministic output rules (module docstring) to every prompt and sample."""
    choices: list[Choice] = []
    vary = job.n > 1 and job.temperature > 0
    for p_idx, prompt in enumerate(job.prompts):
        base = _base_output(prompt)
        until_match = _UNTIL_MAX_RE.search(prompt) if "LENGTH_UNTIL_MAX=" in prompt else None
        filtered = "FILTER_ME" in prompt
        call = _CALL_RE.search(prompt) if job.calling else None
        for i in range(job.n):
            if call is not None:
                finish = "tool_calls" if job.calling == "tools" else "function_call"
                choices.append(
                    Choice(p_idx * job.n + i, "", finish, [], (call.group(1), call.group(2)))
                )
                continue
            text = (f"{base} #{i}" if base else f"#{i}") if vary else base
            finish = "stop"
            if job.max_tokens is not None:
                words = text.split()
                if len(words) > job.max_tokens:
                    text = " ".join(words[: job.max_tokens])
                    finish = "length"
            if until_match is not None:
                needed = int(until_match.group(1))
                limited = job.max_tokens is not None and job.max_tokens < needed
                finish = "length" if limited else "stop"
            if filtered:
                finish = "content_filter"
            choices.append(Choice(p_idx * job.n + i, text, finish, _tokenize(text)))
    return choices


def usage(job: Job, choices: Sequence[Choice]) -> dict[str, Any]:
    """Prompt tokens from the request, completion tokens the sum over the choices, and the
    details the API reports beside them (nothing cached, no hidden reasoning)."""
    completion = sum(len(c.tokens) for c in choices)
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": job.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def completion_payload(job: Job, choices: list[Choice], request_id: str) -> dict[str, Any]:
    """The non-streamed chat or completions body."""
    out: list[dict[str, Any]] = []
    if job.chat:
        for c in choices:
            logprobs = None
            if job.logprobs is not None:
                entries = [_chat_logprob_entry(t, job.logprobs) for t in c.tokens]
                logprobs = {"content": entries, "refusal": None}
            message: dict[str, Any] = {"role": "assistant", "content": c.text, "refusal": None}
            if c.call is not None:
                message["content"] = None
                name, arguments = c.call
                if job.calling == "tools":
                    message["tool_calls"] = [
                        {
                            "id": f"call_{request_id}_{c.index}",
                            "type": "function",
                            "function": {"name": name, "arguments": arguments},
                        }
                    ]
                else:
                    message["function_call"] = {"name": name, "arguments": arguments}
            out.append(
                {
                    "index": c.index,
                    "message": message,
                    "logprobs": logprobs,
                    "finish_reason": c.finish_reason,
                }
            )
    else:
        for c in choices:
            out.append(
                {
                    "text": c.text,
                    "index": c.index,
                    "logprobs": (
                        _completion_logprobs(c.tokens, job.logprobs)
                        if job.logprobs is not None
                        else None
                    ),
                    "finish_reason": c.finish_reason,
                }
            )
    return {
        "id": ("chatcmpl-" if job.chat else "cmpl-") + request_id,
        "object": "chat.completion" if job.chat else "text_completion",
        "created": int(time.time()),
        "model": job.model,
        "choices": out,
        "usage": usage(job, choices),
        "system_fingerprint": FINGERPRINT,
    }


def answer(
    body: Any,
    chat: bool,
    tokenizer: Callable[[str], int] | None,
    request_id: str,
    *,
    no_choices: bool = False,
) -> tuple[int, dict[str, Any]]:
    """A non-streamed chat or completions body's answer: ``(200, payload)`` or ``(400, error)``.

    Why one function: the online route and every Batch API line answer through it, so a batch
    line's answer is by construction what the same body gets online.
    """
    try:
        job = parse_job(body, chat, tokenizer)
    except BadRequest as exc:
        return 400, loads(error_body(400, message=exc.message, param=exc.param))
    choices = [] if no_choices else generate(job)
    return 200, completion_payload(job, choices, request_id)


def stream_events(
    job: Job, choices: list[Choice], request_id: str, *, no_choices: bool = False
) -> list[bytes]:
    """The SSE events (without ``[DONE]``) in the chunk shapes of the real API."""
    envelope: dict[str, Any] = {
        "id": ("chatcmpl-" if job.chat else "cmpl-") + request_id,
        "object": "chat.completion.chunk" if job.chat else "text_completion",
        "created": int(time.time()),
        "model": job.model,
        "system_fingerprint": FINGERPRINT,
    }
    if job.include_usage:
        envelope["usage"] = None
    events: list[bytes] = []

    def emit(choice: dict[str, Any]) -> None:
        events.append(sse({**envelope, "choices": [choice]}))

    if no_choices:
        events.append(sse({**envelope, "choices": []}))
        return events
    k = job.logprobs
    for c in choices:
        if job.chat:
            emit(
                {
                    "index": c.index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            )
            if c.call is not None:
                name, arguments = c.call
                half = len(arguments) // 2
                for part, first in ((arguments[:half], True), (arguments[half:], False)):
                    if job.calling == "tools":
                        piece: dict[str, Any] = {"index": 0, "function": {"arguments": part}}
                        if first:
                            piece.update(id=f"call_{request_id}_{c.index}", type="function")
                            piece["function"]["name"] = name
                        delta: dict[str, Any] = {"tool_calls": [piece]}
                    else:
                        function = {"arguments": part, **({"name": name} if first else {})}
                        delta = {"function_call": function}
                    emit({"index": c.index, "delta": delta, "finish_reason": None})
            for tok in c.tokens:
                lp = None
                if k is not None:
                    lp = {"content": [_chat_logprob_entry(tok, k)], "refusal": None}
                emit(
                    {
                        "index": c.index,
                        "delta": {"content": tok},
                        "logprobs": lp,
                        "finish_reason": None,
                    }
                )
            emit(
                {
                    "index": c.index,
                    "delta": {},
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
            )
        else:
            offset = 0
            for tok in c.tokens:
                lp = _completion_logprobs([tok], k, offset) if k is not None else None
                offset += len(tok)
                emit({"text": tok, "index": c.index, "logprobs": lp, "finish_reason": None})
            emit(
                {
                    "text": "",
                    "index": c.index,
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
            )
    if job.include_usage:
        events.append(sse({**envelope, "choices": [], "usage": usage(job, choices)}))
    return events


def moderation_results(inputs: Sequence[str]) -> list[dict[str, Any]]:
    """One result per input: flagged (as harassment) when it contains ``FLAG_ME``."""
    results = []
    for text in inputs:
        flagged = "FLAG_ME" in text
        categories = {"harassment": flagged, "violence": False, "self-harm": False}
        scores = {k: (0.97 if v else 0.001) for k, v in categories.items()}
        results.append({"flagged": flagged, "categories": categories, "category_scores": scores})
    return results


def moderation_answer(body: Any) -> tuple[int, dict[str, Any]]:
    """A moderations body's answer, online or as a batch line: ``(200, payload)`` or 400."""
    given = body.get("input") if isinstance(body, dict) else None
    inputs = given if isinstance(given, list) else [given]
    texts = [i for i in inputs if isinstance(i, str)]
    if len(texts) != len(inputs):
        return 400, loads(error_body(400, "'input' must be a string or a list."))
    return 200, {
        "id": "modr-fake",
        "model": body.get("model"),
        "results": moderation_results(texts),
    }


def models_payload(models: Sequence[str]) -> dict[str, Any]:
    """``GET /v1/models``: the configured ids."""
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "evalkit-fake"} for m in models]
    return {"object": "list", "data": data}
