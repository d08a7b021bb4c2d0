"""What a completion request asks for, validated like the real API into a `Job`.

Why: a client bug (a missing model, a bad ``max_tokens``) must surface as the 400 the real API
gives, and prompt tokens are counted here, by words or by the tokenizer a test installs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class BadRequest(Exception):
    """A 400 the real API would give; carries the offending parameter name."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class Job:
    """The parts of a completion request that decide the answer."""

    chat: bool
    model: str
    prompts: list[str]  # chat: [last user message]; completions: one per prompt
    prompt_tokens: int
    n: int
    temperature: float
    max_tokens: int | None
    logprobs: int | None  # completions: top-k; chat: top_logprobs when logprobs is true
    stream: bool
    include_usage: bool
    calling: str = ""  # "tools" or "functions" when the request declares them


def _words(text: str) -> int:
    return len(text.split())


def _message_text(content: Any) -> str:
    """Text of a chat message's content: a string or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _int_param(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"Invalid value for '{name}': expected an integer in [{lo}, {hi}].", name)
    return value


REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")  # reasoning models, as the real API treats them


def is_reasoning_model(model: str) -> bool:
    return model.startswith(REASONING_PREFIXES)


def _reasoning_checks(body: dict[str, Any], model: str) -> None:
    """What the real API refuses from a reasoning model's chat request, in its words."""
    if "max_tokens" in body:
        raise BadRequest(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "max_tokens",
        )
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        raise BadRequest(
            f"Unsupported value: 'temperature' does not support {temperature} with this model. "
            "Only the default (1) value is supported.",
            "temperature",
        )


def parse_job(body: Any, chat: bool, tokens: Callable[[str], int] | None = None) -> Job:
    """Validate like the real API does, so client bugs surface as 400s in tests.

    `tokens` counts prompt tokens like the real API (a tokenizer, plus the chat format's
    per-message overhead); without it, prompt tokens are whitespace-separated words.
    """
    if not isinstance(body, dict):
        raise BadRequest("We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("You must provide a model parameter.", "model")
    if chat and is_reasoning_model(model):
        _reasoning_checks(body, model)
    elif "reasoning_effort" in body:
        raise BadRequest(
            "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
            "reasoning_effort",
        )
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty array.", "messages")
        last_user = ""
        prompt_tokens = 0
        for msg in messages:
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                raise BadRequest("Each message must be an object with a 'role'.", "messages")
            text = _message_text(msg.get("content"))
            if tokens is None:
                prompt_tokens += _words(text)
            else:  # the chat format: <|start|>role<|message|>content<|end|>, name costs one more
                prompt_tokens += 3 + tokens(msg["role"]) + tokens(text)
                if isinstance(msg.get("name"), str):
                    prompt_tokens += 1 + tokens(msg["name"])
            if msg["role"] == "user":
                last_user = text
        prompts = [last_user]
        if tokens is not None:
            prompt_tokens += 3  # every reply is primed with <|start|>assistant<|message|>
        max_tokens = _int_param(body, "max_completion_tokens", 1, 10**9)
        if max_tokens is None:
            max_tokens = _int_param(body, "max_tokens", 1, 10**9)
        logprobs: int | None = None
        if body.get("logprobs") is True:
            logprobs = _int_param(body, "top_logprobs", 0, 20) or 0
        elif body.get("logprobs") not in (None, False):
            raise BadRequest("'logprobs' must be a boolean.", "logprobs")
    else:
        prompt = body.get("prompt", "")
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            prompts = list(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
            prompts = [" ".join(map(str, prompt))]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
            prompts = [" ".join(map(str, p)) for p in prompt]
        else:
            raise BadRequest("'prompt' must be a string or an array.", "prompt")
        prompt_tokens = sum(map(tokens or _words, prompts))
        max_tokens = _int_param(body, "max_tokens", 1, 10**9)
        logprobs = _int_param(body, "logprobs", 0, 5)
        suffix = body.get("suffix")
        if suffix is not None and not isinstance(suffix, str):
            raise BadRequest("'suffix' must be a string.", "suffix")
        if suffix and tokens is not None:
            prompt_tokens += tokens(suffix)
    n = _int_param(body, "n", 1, 128) or 1
    temperature = body.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise BadRequest("'temperature' must be a number.", "temperature")
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    calling = ""
    if chat and isinstance(body.get("tools"), list) and body["tools"]:
        calling = "tools"
    elif chat and isinstance(body.get("functions"), list) and body["functions"]:
        calling = "functions"
    elif not chat and ("tools" in body or "functions" in body):
        raise BadRequest("Unrecognized request argument supplied: tools", "tools")
    return Job(
        chat=chat,
        model=model,
        prompts=prompts,
        prompt_tokens=prompt_tokens,
        n=n,
        temperature=float(temperature),
        max_tokens=max_tokens,
        logprobs=logprobs,
        stream=body.get("stream") is True,
        include_usage=include_usage,
        calling=calling,
    )
