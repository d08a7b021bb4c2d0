"""The models a suite runs and the servers it declares (endpoints, their headers and query)."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from evalkit.models.catalog import EndpointKind
from evalkit.suite.params import Params, Strict

_MODEL_ID = re.compile(r"^[A-Za-z0-9_.-]+/\S+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_name(value: str, field: str, example: str) -> str:
    """An environment variable's name; never echoes what was given (a pasted key, likely)."""
    if not _ENV_NAME.match(value):
        raise PydanticCustomError(
            field,
            "{field} must be the *name* of an environment variable (e.g. {example}), never "
            "its value",
            {"field": field, "example": example},
        )
    return value


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
        return _env_name(value, "env", "AZURE_OPENAI_API_KEY")


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
    def _key_env(cls, value: str | None) -> str | None:
        return None if value is None else _env_name(value, "api_key_env", "VLLM_API_KEY")
