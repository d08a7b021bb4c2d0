"""The suite as validated data: what a user may write, and nothing else (`extra="forbid"`).

Loading (`load.py`) turns a file into plain data; these models decide whether it is a suite.
Cross-field rules that need the catalogue or the templates live in `planning/validate.py`.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from evalkit.models.catalog import EndpointKind
from evalkit.suite.checkspec import Check, check_json_schema
from evalkit.suite.locate import Locator

__all__ = [
    "Case",
    "Check",
    "Endpoint",
    "Message",
    "ModelSpec",
    "Params",
    "Prompt",
    "Suite",
    "Variant",
]


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


class Message(Strict):
    """One chat message; `content` is a template.

    Multi-turn cases carry assistant turns (with `tool_calls`) and `tool` results (with the
    `tool_call_id` they answer), sent as given.
    """

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> Message:
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


_MODEL_ID = re.compile(r"^[A-Za-z0-9_.-]+/\S+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_model_id(value: str) -> str:
    if not _MODEL_ID.match(value):
        raise PydanticCustomError(
            "model_id",
            "model '{value}' must be written provider/model, e.g. openai/gpt-4",
            {"value": value},
        )
    return value


class ModelSpec(Strict):
    """A model to evaluate: `provider/model`, with optional label, limits and overrides."""

    id: str
    label: str | None = None
    params: Params | None = None
    concurrency: int | None = Field(None, ge=1, le=10_000)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    kind: EndpointKind | None = None
    context_window: int | None = Field(None, ge=1)
    input_per_mtok: float | None = Field(None, ge=0)
    output_per_mtok: float | None = Field(None, ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0)
    reasoning: bool | None = None  # a reasoning model not in the catalogue (o-series, gpt-5)
    path: str | None = None  # a GGUF file, for local/<name> models

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"id": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _path_is_local(self) -> ModelSpec:
        if self.path is not None and not self.id.startswith("local/"):
            raise PydanticCustomError("path", "path (a GGUF file) is only for local/ models", {})
        return self

    _id_format = field_validator("id")(_check_model_id)

    @property
    def provider(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.label or self.id


def _plain(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class FromEnv(Strict):
    """A value read from an environment variable when the run starts, never written down."""

    env: str

    @field_validator("env")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise PydanticCustomError(
                "env", "env must be the *name* of an environment variable, never its value", {}
            )
        return value


# header and query names that carry credentials: their values come only from the environment
_CREDENTIAL = re.compile(r"auth|key|token|secret|password|cookie|sig", re.IGNORECASE)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding"})


class Endpoint(Strict):
    """An OpenAI-compatible server the user runs or rents (vLLM, llama.cpp, Ollama, Azure)."""

    base_url: str
    api_key_env: str | None = None
    # extra request headers (OpenRouter's HTTP-Referer, Azure's api-key: {env: NAME})
    headers: dict[str, str | FromEnv] | None = None
    # query parameters on every request URL (Azure's api-version)
    query: dict[str, str] | None = None
    label: str | None = None
    kind: EndpointKind = "both"
    params: Params | None = None
    concurrency: int = Field(16, ge=1, le=10_000)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    context_window: int | None = Field(None, ge=1)

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise PydanticCustomError(
                "base_url", "base_url must start with http:// or https://", {}
            )
        return value.rstrip("/")

    @field_validator("headers", "query", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: Any) -> Any:
        """`api-version: 2024-10-21` is a date to YAML and text to a URL: plain scalars
        (dates, numbers) are sent as written."""
        if not isinstance(value, dict):
            return value
        return {
            k: v.isoformat() if isinstance(v, date) else str(v) if _plain(v) else v
            for k, v in value.items()
        }

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str | FromEnv] | None) -> dict[str, str | FromEnv] | None:
        for name, given in (value or {}).items():
            if not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
                raise PydanticCustomError(
                    "headers", "'{name}' cannot be set as a header", {"name": name[:40]}
                )
            if isinstance(given, str) and _CREDENTIAL.search(name):
                # never echo the value: it is likely a secret
                raise PydanticCustomError(
                    "headers",
                    "header '{name}' carries a credential: give it as {env: VARIABLE}, so the "
                    "secret stays in the environment and out of the suite",
                    {"name": name},
                )
            if isinstance(given, str) and any(c in given for c in "\r\n\0"):
                raise PydanticCustomError(
                    "headers", "header '{name}' holds a line break", {"name": name}
                )
        return value

    @field_validator("query")
    @classmethod
    def _query(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name in value or {}:
            if _CREDENTIAL.search(name):
                raise PydanticCustomError(
                    "query",
                    "query parameter '{name}' looks like a credential: send it as a header "
                    "from the environment (headers: {NAME: {env: VARIABLE}}) instead",
                    {"name": name[:40]},
                )
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            # Never echo the value: it may be a key pasted in by mistake.
            raise PydanticCustomError(
                "api_key_env",
                "api_key_env must be the *name* of an environment variable "
                "(e.g. VLLM_API_KEY), never the key itself",
                {},
            )
        return value


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
