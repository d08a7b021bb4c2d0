"""How a check is written in a suite, and what arguments each kind accepts.

A check is a one-key mapping, `{contains: "refund"}`, with optional `name`, `weight`,
`required` and (for the kinds that may be slow) `timeout_s`; `{not: {contains: "x"}}`
negates. Only the shape is validated here; what each kind does with an output lives in
`scoring/text_checks.py`, `json_checks.py` and `python_checks.py` (`evaluate.py` picks).
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from evalkit.errors import did_you_mean

if TYPE_CHECKING:
    import regex

FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "function_call"]


class _Arg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EqualsArg(_Arg):
    value: str
    strip: bool = True
    ignore_case: bool = False


class JsonPathArg(_Arg):
    path: str
    equals: Any


class SimilarityArg(_Arg):
    value: str
    threshold: float = Field(0.8, ge=0, le=1)


class ToolCallArg(_Arg):
    name: str
    arguments: dict[str, Any] | None = None  # each given key must equal the call's argument
    schema_: dict[str, Any] | None = Field(None, alias="schema")  # JSON Schema for the arguments


MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


class ModerationArg(_Arg):
    categories: list[str] | None = None  # fail only on these; default: any flag fails
    model: str = "openai/omni-moderation-latest"

    @field_validator("categories")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if name not in MODERATION_CATEGORIES:
                hint = did_you_mean(name, list(MODERATION_CATEGORIES))
                raise ValueError(f"unknown moderation category '{name}'{hint}")
        return value


class JudgeArg(_Arg):
    model: str
    rubric: str
    threshold: float = Field(0.5, ge=0, le=1)


_PYTHON_REF = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"

# kind -> the type its argument must have
ARG_TYPES: dict[str, Any] = {
    "equals": str | EqualsArg,
    "contains": str,
    "icontains": str,
    "not_contains": str,
    "starts_with": str,
    "ends_with": str,
    "contains_any": list[str],
    "contains_all": list[str],
    "match": str | list[str],
    "regex": str,
    "is_json": Literal[True] | None,
    "json_schema": dict[str, Any],
    "json_path": JsonPathArg,
    "finish_reason": FinishReason | list[FinishReason],
    "max_completion_tokens": int,
    "max_latency_ms": float,
    "max_latency_s": float,
    "max_cost_usd": float,
    "similarity": str | SimilarityArg,
    "python": str,
    "judge": JudgeArg,
    "tool_call": Literal["none"] | str | ToolCallArg,
    "tool_args_valid": Literal[True] | None,
    "moderation": Literal[True] | None | ModerationArg,
}

# names from DESIGN.md's short list, kept as spellings of the canonical kinds
ALIASES = {
    "max_tokens": "max_completion_tokens",
    "max_cost": "max_cost_usd",
    "max_latency": "max_latency_s",
}

# kinds whose string arguments are not Jinja templates
UNTEMPLATED = frozenset({"json_schema", "python", "moderation"})

GRADED_BY_A_MODEL = ("judge", "moderation")  # scored by another request, after the answer

# kinds that may be slow (user code, backtracking patterns, big schemas or texts): they run in
# a thread under a time limit, `timeout_s` or CHECK_TIMEOUT_S (a regex is first tried inline
# for a moment, see scoring/scoring.py); every other kind runs inline
TIMED_KINDS = frozenset(
    {"python", "regex", "json_schema", "tool_call", "tool_args_valid", "similarity"}
)
CHECK_TIMEOUT_S = 10.0  # the default time limit of a timed check
MAX_TIMEOUT_S = 3600.0

_OPTIONS = ("name", "weight", "required", "timeout_s")
_ADAPTERS: dict[str, TypeAdapter[Any]] = {}  # built on first use: import stays cheap


def _adapter(kind: str) -> TypeAdapter[Any]:
    if kind not in _ADAPTERS:
        _ADAPTERS[kind] = TypeAdapter(ARG_TYPES[kind])
    return _ADAPTERS[kind]


class Check(BaseModel):
    """One check, normalised: its kind, argument and options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    arg: Any = None
    name: str | None = None
    weight: float = Field(1.0, ge=0)
    required: bool = True
    negate: bool = False
    timeout_s: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S)  # only for TIMED_KINDS

    @property
    def time_limit(self) -> float:
        """The most seconds this check may take (timed kinds only)."""
        return self.timeout_s if self.timeout_s is not None else CHECK_TIMEOUT_S

    @property
    def label(self) -> str:
        """The check's column name: its `name`, else its kind (prefixed `not.` if negated)."""
        return self.name or (f"not.{self.kind}" if self.negate else self.kind)

    @model_validator(mode="before")
    @classmethod
    def _from_suite_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" in data:
            return data  # already normalised (e.g. rebuilt from a manifest)
        if isinstance(data, str):
            data = {data: None}  # `- is_json` written bare
        if not isinstance(data, dict):
            raise PydanticCustomError("check", "a check is a mapping such as 'contains: text'", {})
        options = {k: data[k] for k in _OPTIONS if k in data}
        kinds = [k for k in data if k not in _OPTIONS]
        if len(kinds) != 1:
            raise PydanticCustomError(
                "check",
                "a check needs exactly one kind (got {got}); known kinds: {known}",
                {"got": ", ".join(map(str, kinds)) or "none", "known": ", ".join(ARG_TYPES)},
            )
        kind = str(kinds[0])
        if kind == "not":
            inner = cls.model_validate(data["not"])
            _timed_only(inner.kind, options)
            return {**inner.model_dump(), **options, "negate": not inner.negate}
        kind = ALIASES.get(kind, kind)
        if kind not in ARG_TYPES:
            raise PydanticCustomError(
                "check_kind",
                "unknown check '{kind}'{hint}",
                {"kind": kind, "hint": did_you_mean(kind, [*ARG_TYPES, "not"])},
            )
        _timed_only(kind, options)
        return {"kind": kind, "arg": _validated_arg(kind, data[kinds[0]]), **options}


def _timed_only(kind: str, options: dict[str, Any]) -> None:
    """`timeout_s` on a check that always runs inline would silently do nothing."""
    if options.get("timeout_s") is not None and kind not in TIMED_KINDS:
        raise PydanticCustomError(
            "check",
            "timeout_s: only {timed} checks take a time limit ('{kind}' is always quick)",
            {"timed": ", ".join(sorted(TIMED_KINDS)), "kind": kind},
        )


def _validated_arg(kind: str, arg: Any) -> Any:
    try:
        value = _adapter(kind).validate_python(arg)
    except ValidationError as exc:
        first = max(exc.errors(), key=lambda e: len(e["loc"]))  # the most specific union branch
        where = ".".join(str(p) for p in first["loc"] if _is_field(p))
        raise PydanticCustomError(
            "check_arg",
            "{kind}: {msg}",
            {"kind": kind, "msg": f"{where}: {first['msg']}" if where else first["msg"]},
        ) from None
    if kind == "regex" and "{{" not in value:
        compile_regex(value)
    if kind == "python" and not re.match(_PYTHON_REF, value):
        raise PydanticCustomError(
            "check_arg", "python: expected 'module:function', got '{v}'", {"v": value}
        )
    if kind == "json_schema":
        check_json_schema(value)
    if isinstance(value, ToolCallArg) and value.schema_ is not None:
        check_json_schema(value.schema_, "tool_call: schema")
    return value.model_dump(by_alias=True) if isinstance(value, BaseModel) else value


def _is_field(part: object) -> bool:
    """True for a real key in a location; False for pydantic's union member tags."""
    text = str(part)
    return (
        text.isidentifier()
        and text not in {"str", "int", "float", "bool", "list", "dict"}
        and not text[:1].isupper()
    )


def compile_regex(pattern: str) -> regex.Pattern[str]:
    """The compiled pattern (the `regex` module, as the check runs it), or a check error."""
    import regex  # imported when needed: `evalkit` starts faster

    try:
        return regex.compile(pattern)
    except regex.error as exc:
        raise PydanticCustomError(
            "check_arg", "regex: invalid pattern '{p}': {e}", {"p": pattern, "e": str(exc)}
        ) from None


def check_json_schema(schema: dict[str, Any], what: str = "json_schema") -> None:
    """A validation error unless `schema` is a valid JSON Schema (draft 2020-12) whose every
    `$ref` resolves within itself (or to a draft's meta-schema): nothing is ever fetched."""
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise PydanticCustomError(
            "json_schema", "{what}: not a valid JSON Schema: {e}", {"what": what, "e": exc.message}
        ) from None
    ref = unresolvable_ref(schema)
    if ref is not None:
        raise PydanticCustomError(
            "json_schema",
            "{what}: $ref '{ref}' does not resolve within the schema (evalkit never fetches a "
            "schema from the network or disk: put definitions under $defs)",
            {"what": what, "ref": ref},
        )


def unresolvable_ref(schema: dict[str, Any]) -> str | None:
    """The first `$ref` / `$dynamicRef` of `schema` that does not resolve offline, if any."""
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    root = DRAFT202012.create_resource(schema)
    stack = [(root, offline_registry().resolver_with_root(root))]
    while stack:  # a stack, not recursion: a deeply nested schema cannot overflow it
        resource, resolver = stack.pop()
        contents = resource.contents
        if isinstance(contents, dict):
            for key in ("$ref", "$dynamicRef"):
                ref = contents.get(key)
                if isinstance(ref, str):
                    try:
                        resolver.lookup(ref)
                    except Unresolvable:
                        return ref
        stack += [(sub, resolver.in_subresource(sub)) for sub in resource.subresources()]
    return None


@cache
def offline_registry() -> Any:
    """The draft meta-schemas, and a `retrieve` that refuses every other URI (http, file...)."""
    from jsonschema_specifications import REGISTRY
    from referencing import Registry
    from referencing.exceptions import NoSuchResource

    def refuse(uri: str) -> Any:
        raise NoSuchResource(uri)

    return REGISTRY.combine(Registry(retrieve=refuse))  # type: ignore[call-arg]  # attrs alias
