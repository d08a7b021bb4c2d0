"""From a rendered prompt and a model to the request that will be sent.

The endpoint follows the model: a string prompt sent to a chat model becomes one user
message, so one suite compares `gpt-3.5-turbo-instruct` with `gpt-3.5-turbo`; a message list
sent to a completions-only model, or a `suffix` sent to a chat model, cannot be sent.
"""

from __future__ import annotations

from typing import Literal

from evalkit.catalog import ModelInfo
from evalkit.render import Rendered

Endpoint = Literal["chat", "completions"]


class Unsendable(ValueError):
    """A prompt this model's endpoint cannot take; the message says why and what to do."""


def endpoint_for(rendered: Rendered, info: ModelInfo) -> Endpoint:
    """Which endpoint carries `rendered` to the model described by `info`."""
    if rendered.suffix is not None:
        if info.kind == "chat":
            raise Unsendable(
                f"insert mode (suffix) needs the completions endpoint, but {info.id} is a chat "
                "model; use a completions model such as openai/gpt-3.5-turbo-instruct"
            )
        if not info.supports_suffix:
            raise Unsendable(f"{info.id} does not support insert mode (suffix)")
        return "completions"
    if rendered.is_chat:
        if info.kind == "completions":
            raise Unsendable(
                f"{info.id} only has the completions endpoint and cannot take chat messages; "
                "write the prompt as a string"
            )
        return "chat"
    return "chat" if info.kind == "chat" else "completions"
