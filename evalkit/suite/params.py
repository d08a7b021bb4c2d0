"""Request parameters a suite sets: what goes on the wire, validated before anything is sent."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from evalkit.suite.checkspec import check_json_schema


class Strict(BaseModel):
    """Unknown keys are errors, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid")


class ResponseFormat(Strict):
    """`{type: json_object}`, or `{type: json_schema, json_schema: {name, schema, strict}}`."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise PydanticCustomError(
                "response_format",
                "json_schema (with a name) goes with type: json_schema, and only with it",
                {},
            )
        if self.json_schema is not None and not isinstance(self.json_schema.get("name"), str):
            raise PydanticCustomError("response_format", "json_schema needs a name", {})
        return self


_FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class FunctionDef(Strict):
    """A function the model may call: its parameters are a JSON Schema."""

    name: str = Field(pattern=_FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_json_schema(value, "parameters")
        return value


class Tool(Strict):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(Strict):
    name: str


class ToolChoice(Strict):
    type: Literal["function"] = "function"
    function: NamedFunction


class Params(Strict):
    """OpenAI request parameters; unset ones are not sent."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)  # also written max_completion_tokens
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = (
        None
    )
    n: int | None = Field(None, ge=1, le=128)
    stop: str | Annotated[list[str], Field(min_length=1, max_length=4)] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    logprobs: bool | Annotated[int, Field(ge=0, le=20)] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, int] | None = None
    user: str | None = None
    stream: bool | None = None
    echo: bool | None = None
    best_of: int | None = Field(None, ge=1, le=20)
    tools: list[Tool] | None = Field(None, min_length=1, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDef] | None = Field(None, min_length=1, max_length=128)
    function_call: Literal["none", "auto"] | NamedFunction | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_output_budget(cls, data: Any) -> Any:
        """`max_completion_tokens` is `max_tokens` by its newer name: one output budget, sent
        under the name each model takes (see planning/plan.py)."""
        if not isinstance(data, dict) or "max_completion_tokens" not in data:
            return data
        data = dict(data)
        budget = data.pop("max_completion_tokens")
        if data.get("max_tokens") not in (None, budget):
            raise PydanticCustomError(
                "max_completion_tokens",
                "give max_tokens or max_completion_tokens, not both: they are one output budget",
            )
        data["max_tokens"] = budget
        return data

    @model_validator(mode="after")
    def _known_tool(self) -> Params:
        """tool_choice / function_call must name a declared tool (when tools are given here)."""
        if isinstance(self.tool_choice, ToolChoice) and self.tools is not None:
            names = [t.function.name for t in self.tools]
            if self.tool_choice.function.name not in names:
                raise PydanticCustomError(
                    "tool_choice",
                    "tool_choice names '{name}', which is not among the declared tools ({known})",
                    {"name": self.tool_choice.function.name, "known": ", ".join(names)},
                )
        if isinstance(self.function_call, NamedFunction) and self.functions is not None:
            names = [f.name for f in self.functions]
            if self.function_call.name not in names:
                raise PydanticCustomError(
                    "function_call",
                    "function_call names '{name}', which is not among the declared functions",
                    {"name": self.function_call.name},
                )
        return self

    def set_values(self) -> dict[str, Any]:
        """The parameters that were given, as they go on the wire."""
        return self.model_dump(exclude_none=True, by_alias=True)

    def over(self, base: Params | None) -> Params:
        """These parameters layered over `base` (ours win)."""
        if base is None:
            return self
        return Params.model_validate({**base.set_values(), **self.set_values()})
