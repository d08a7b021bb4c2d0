"""The suite as validated data: what a user may write, and nothing else (`extra="forbid"`).

Loading (`load.py`) turns a file into plain data; these models decide whether it is a suite.
Cross-field rules that need the catalogue or the templates live in `planning/validate.py`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from evalkit.suite.checkspec import Check
from evalkit.suite.endpoints import Endpoint, ModelSpec
from evalkit.suite.gates import GateRule
from evalkit.suite.locate import Locator
from evalkit.suite.params import Params, Strict

__all__ = ["Case", "Message", "Prompt", "Suite", "Variant"]


class FunctionCall(Strict):
    name: str
    arguments: str  # JSON text, as the API carries it

    @field_validator("arguments", mode="before")
    @classmethod
    def _json_text(cls, value: Any) -> Any:
        """A mapping is accepted and written as the JSON text the API expects."""
        return json.dumps(value) if isinstance(value, dict) else value


class ToolCall(Strict):
    """A tool call an assistant turn made, in a multi-turn case."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class TextPart(Strict):
    """Text in a message's list of parts; a template."""

    type: Literal["text"] = "text"
    text: str


class ImageURL(Strict):
    url: str  # a template: an http(s) or data URL sent as given, else a file to read
    detail: Literal["auto", "low", "high"] = "auto"


class ImagePart(Strict):
    """An image in a user message; a local file is read when the case is planned."""

    type: Literal["image_url"] = "image_url"
    image_url: ImageURL


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


def _short_part(part: Any) -> Any:
    """`- text` is a text part, `- image: FILE_OR_URL` (with an optional `detail`) an image."""
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if isinstance(part, dict) and "type" not in part:
        if "image" in part:
            extra = set(part) - {"image", "detail"}
            if extra:
                raise PydanticCustomError(
                    "image_part",
                    "an image part takes image and detail, not {extra}",
                    {"extra": ", ".join(sorted(map(str, extra)))},
                )
            url = {"url": part["image"], **({"detail": part["detail"]} if "detail" in part else {})}
            return {"type": "image_url", "image_url": url}
        if "text" in part:
            return {"type": "text", **part}
    return part


class Message(Strict):
    """One chat message; `content` is a template, or a list of text and image parts.

    Multi-turn cases carry assistant turns (with `tool_calls`) and `tool` results (with the
    `tool_call_id` they answer), sent as given.
    """

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _short_parts(cls, value: Any) -> Any:
        return [_short_part(part) for part in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _shape(self) -> Message:
        if isinstance(self.content, list):
            if not self.content:
                raise PydanticCustomError("message", "content is an empty list of parts", {})
            images = any(isinstance(part, ImagePart) for part in self.content)
            if images and self.role != "user":
                raise PydanticCustomError(
                    "message",
                    "only a user message may carry images (this is {role})",
                    {"role": self.role},
                )
        if self.role == "tool" and (self.tool_call_id is None or self.content is None):
            raise PydanticCustomError(
                "message", "a tool message needs tool_call_id and content (the tool's result)", {}
            )
        if self.tool_call_id is not None and self.role != "tool":
            raise PydanticCustomError("message", "only a tool message has tool_call_id", {})
        if self.tool_calls is not None and self.role != "assistant":
            raise PydanticCustomError("message", "only an assistant message has tool_calls", {})
        if self.content is None and not self.tool_calls:
            raise PydanticCustomError("message", "missing required key 'content'", {})
        return self


Prompt = str | list[Message]


class Variant(Strict):
    """One of several prompts compared side by side (A/B)."""

    prompt: Prompt
    suffix: str | None = None
    params: Params | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """`name: "text"` or `name: [messages]` is short for `name: {prompt: ...}`."""
        return {"prompt": data} if isinstance(data, str | list) else data


class Case(Strict):
    """One test case: variables for the suite prompt (or its own prompt) and its checks."""

    id: str | None = None
    description: str | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    expect: list[Check] = Field(default_factory=list)
    params: Params | None = None
    messages: list[Message] | None = None
    prompt: str | None = None
    suffix: str | None = None
    must_pass: bool = False
    tags: list[str] = Field(default_factory=list)

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise PydanticCustomError(
                "case_id",
                "YAML reads this id as {value} (yes/no/on/off are booleans): quote it",
                {"value": str(value).lower()},
            )
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _one_prompt(self) -> Case:
        if self.messages is not None and self.prompt is not None:
            raise PydanticCustomError(
                "case_prompt", "a case gives either messages or prompt, not both", {}
            )
        return self

    @property
    def key(self) -> str:
        """The case id (the loader fills it in when the file gives none)."""
        return self.id or ""


class Suite(Strict):
    """A whole suite file, after its cases file (if any) was read in."""

    name: str | None = None
    description: str | None = None
    models: list[ModelSpec] = Field(default_factory=list)
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)
    params: Params = Field(default_factory=Params)
    prompt: Prompt | None = None
    suffix: str | None = None
    variants: dict[str, Variant] | None = None
    samples: int = Field(1, ge=1, le=1000)
    select: Literal["all", "first_stop", "until_stop", "best_logprob"] = "all"
    max_tokens_cap: int | None = Field(None, ge=1)
    resample_temperature: float | None = Field(None, ge=0, le=2)
    checks: list[Check] = Field(default_factory=list)
    cases: list[Case] = Field(default_factory=list)
    gate: list[GateRule] = Field(default_factory=list)  # what `run`'s exit code then means

    _source: str = PrivateAttr("")
    _locator: Locator = PrivateAttr(default_factory=lambda: Locator(""))

    @property
    def source(self) -> str:
        """The suite's path as the user gave it."""
        return self._source

    @property
    def locator(self) -> Locator:
        """Where each key of the suite was written (for located errors after loading)."""
        return self._locator

    @model_validator(mode="after")
    def _prompt_or_variants(self) -> Suite:
        if self.prompt is not None and self.variants:
            raise PydanticCustomError(
                "prompt_variants",
                "give either prompt (one prompt) or variants (several), not both",
                {},
            )
        return self

    def variant_prompts(self) -> dict[str, Variant | None]:
        """Each variant's prompt by name; a single-prompt suite has one variant, ''."""
        if self.variants:
            return dict(self.variants)
        if self.prompt is None:
            return {"": None}
        return {"": Variant(prompt=self.prompt, suffix=self.suffix)}
