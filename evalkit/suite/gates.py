"""The gate a suite declares (`gate:`), and the `--gate` syntax that states the same thing.

A gate is what a CI job wants a run to show, instead of "no sample failed": absolute
thresholds (`pass_rate: {min: 0.9}`, per model, variant or check) and comparisons
(`better: {variant: few-shot, than: zero-shot}`, `not_worse: {model: B, than: A}`). Each
rule is written once, here; `analysis/gates.py` decides it on a run's rows, and
`planning/validate.py` checks that the names it uses exist.

The compact form (`--gate`, and how outcomes name their rule):

    pass_rate>=0.9                      pass_rate[model=openai/gpt-4o,check=valid_json]>=0.8
    few-shot>zero-shot                  few-shot>zero-shot[margin=0.05]   (better)
    B>=A                                B>=A[margin=0.05]                 (not_worse)
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from evalkit.errors import UsageError
from evalkit.suite.params import Strict

__all__ = ["Comparison", "GateRule", "PassRate", "parse_gate"]


class PassRate(Strict):
    """Each model (and variant) in scope passes at least `min` of its cases; `model`,
    `variant` and `check` narrow the scope (`check`: the cases passing that one check)."""

    min: float = Field(ge=0, le=1)
    model: str | None = None
    variant: str | None = None
    check: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """`pass_rate: 0.9` is short for `pass_rate: {min: 0.9}`."""
        return (
            {"min": data} if isinstance(data, int | float) and not isinstance(data, bool) else data
        )


class Comparison(Strict):
    """One model against another (`model`, `than`), or one variant against another
    (`variant`, `than`), paired on the cases both answered, for each group of the other
    dimension; `margin` is a pass-rate difference (0.05 = 5 points)."""

    model: str | None = None
    variant: str | None = None
    than: str
    margin: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _one_side(self) -> Comparison:
        if (self.model is None) == (self.variant is None):
            raise PydanticCustomError(
                "gate_side",
                "name the side to compare with exactly one of model or variant (e.g. {example})",
                {"example": "{variant: few-shot, than: zero-shot}"},
            )
        if self.side == self.than:
            raise PydanticCustomError(
                "gate_side", "'{name}' is compared with itself", {"name": self.than}
            )
        return self

    @property
    def dimension(self) -> Literal["model", "variant"]:
        return "model" if self.model is not None else "variant"

    @property
    def side(self) -> str:
        return self.model if self.model is not None else str(self.variant)


class GateRule(Strict):
    """One rule of a gate: exactly one of `pass_rate`, `better`, `not_worse`."""

    pass_rate: PassRate | None = None
    better: Comparison | None = None
    not_worse: Comparison | None = None

    _expression: str | None = PrivateAttr(None)  # the --gate text it was parsed from

    @model_validator(mode="after")
    def _one_kind(self) -> GateRule:
        given = [k for k in ("pass_rate", "better", "not_worse") if getattr(self, k) is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "gate_rule",
                "a gate rule is one of pass_rate, better or not_worse (got {got})",
                {"got": ", ".join(given) or "none"},
            )
        return self

    @property
    def kind(self) -> Literal["pass_rate", "better", "not_worse"]:
        if self.pass_rate is not None:
            return "pass_rate"
        return "better" if self.better is not None else "not_worse"

    @property
    def comparison(self) -> Comparison | None:
        return self.better if self.better is not None else self.not_worse

    @property
    def expression(self) -> str | None:
        """The `--gate` text this rule came from; None for a rule the suite declares."""
        return self._expression

    @property
    def text(self) -> str:
        """The rule in the compact `--gate` syntax, as outputs name it."""
        if self.pass_rate is not None:
            rule = self.pass_rate
            scope = [f"{k}={v}" for k in ("model", "variant", "check") if (v := getattr(rule, k))]
            return f"pass_rate{_options(scope)}>={rule.min:g}"
        comparison = self.comparison
        assert comparison is not None
        operator = ">" if self.kind == "better" else ">="
        margin = [f"margin={comparison.margin:g}"] if comparison.margin else []
        return f"{comparison.side}{operator}{comparison.than}{_options(margin)}"


def _options(items: list[str]) -> str:
    return f"[{','.join(items)}]" if items else ""


_PASS_RATE = re.compile(r"^pass_rate(?:\[(?P<scope>[^\]]*)\])?>=(?P<min>[^\[\]]+)$")
_COMPARISON = re.compile(
    r"^(?P<side>[^<>=\[\]]+)(?P<op>>=|>)(?P<than>[^<>=\[\]]+)(?:\[(?P<opts>[^\]]*)\])?$"
)
SYNTAX = "pass_rate[model=M,variant=V,check=C]>=0.9, A>B (better) or A>=B (not worse), [margin=X]"


def parse_gate(text: str, variants: Collection[str] = ()) -> GateRule:
    """A `--gate` expression as a rule; a UsageError (exit 2) saying the syntax otherwise.

    A comparison's names are variants when they are among `variants` (the suite's), else
    models; whether they exist is validation's question, asked before anything is sent.
    """
    compact = "".join(text.split())
    data: dict[str, Any] | None = None
    if (found := _PASS_RATE.match(compact)) is not None:
        scope = _pairs(text, found["scope"], ("model", "variant", "check"))
        data = {"pass_rate": {"min": _number(text, found["min"]), **scope}}
    elif (found := _COMPARISON.match(compact)) is not None:
        side, than = found["side"], found["than"]
        if side == "pass_rate":
            raise UsageError(f"--gate {text!r}: a pass rate is at least a value: pass_rate>=0.9")
        options = _pairs(text, found["opts"], ("margin",))
        dimension = "variant" if side in variants or than in variants else "model"
        kind = "better" if found["op"] == ">" else "not_worse"
        margin = {"margin": _number(text, options["margin"])} if "margin" in options else {}
        data = {kind: {dimension: side, "than": than, **margin}}
    if data is None:
        raise UsageError(f"--gate {text!r}: not a gate; write {SYNTAX}")
    try:
        rule = GateRule.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"--gate {text!r}: {exc.errors()[0]['msg']}") from None
    rule._expression = text
    return rule


def _pairs(text: str, body: str | None, keys: tuple[str, ...]) -> dict[str, str]:
    """`k=v,k=v` inside brackets; only `keys` are known."""
    out: dict[str, str] = {}
    for item in filter(None, (body or "").split(",")):
        key, equals, value = item.partition("=")
        if not equals or key not in keys or not value:
            known = ", ".join(f"{k}=..." for k in keys)
            raise UsageError(f"--gate {text!r}: [{item}] is not an option here; use {known}")
        out[key] = value
    return out


def _number(text: str, value: str) -> float:
    """A rate or margin: 0.9, or 90%."""
    try:
        number = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise UsageError(f"--gate {text!r}: {value!r} is not a number (write 0.9 or 90%)") from None
    if not 0 <= number <= 1:
        raise UsageError(f"--gate {text!r}: {value} is not between 0 and 1 (write 0.9 or 90%)")
    return number
