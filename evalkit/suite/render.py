"""Jinja rendering of prompts, suffixes and expected values, sandboxed and strict.

Templates are data from a suite file: they run in a bounded Jinja sandbox (`sandbox.py`: no
access to Python internals; `render_budget.py`: limits on size and time) with
`StrictUndefined` (a missing variable is an error, never an empty string), and keep
trailing newlines so a prompt or suffix is sent byte for byte as written. Everything one
case's prompt (or one check) renders shares one budget, plain text included, so repeating a
long text cannot get around it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError

from evalkit.errors import TemplateError
from evalkit.suite.checkspec import UNTEMPLATED, Check
from evalkit.suite.render_budget import (
    MAX_OUTPUT_CHARS,
    RenderLimit,
    TooSlow,
    rendering,
    spend,
    uncounted,
)
from evalkit.suite.sandbox import BoundedEnvironment
from evalkit.suite.spec import Case, Message, Suite, Variant


@dataclass(frozen=True, slots=True)
class Rendered:
    """A case's prompt after rendering: chat messages, or a completions prompt (+ suffix)."""

    messages: tuple[tuple[tuple[str, str], ...], ...] | None = None
    prompt: str | None = None
    suffix: str | None = None

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def message_dicts(self) -> list[dict[str, Any]]:
        """The messages as the API takes them (tool calls back to their JSON structure)."""
        return [
            {k: json.loads(v) if k == "tool_calls" else v for k, v in message}
            for message in self.messages or ()
        ]


MAX_TIMEOUTS = 3  # renders that may run out of time before the renderer gives up on a suite


class Renderer:
    """Compiles each distinct template once and renders it per case.

    After `MAX_TIMEOUTS` renders ran out of time, templates fail at once: a suite of many
    slow templates then costs seconds, not one time budget per case.
    """

    def __init__(self) -> None:
        self._env = BoundedEnvironment(
            undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False
        )
        self._compiled: dict[str, Template] = {}
        self._timeouts = 0

    def text(self, source: str, variables: dict[str, Any], field: tuple[str | int, ...]) -> str:
        """`source` rendered with `variables`; plain text skips Jinja altogether."""
        with rendering():
            try:
                if "{" not in source:
                    spend(len(source), "the text")
                    return source
                return self._render(source, variables, field)
            except RenderLimit as exc:
                raise TemplateError(str(exc), field) from None

    def _render(self, source: str, variables: dict[str, Any], field: tuple[str | int, ...]) -> str:
        if self._timeouts >= MAX_TIMEOUTS:
            what = f"not rendered: {self._timeouts} renders already took longer than the limit"
            raise TemplateError(what, field)
        template = self._compiled.get(source)
        if template is None:
            started = time.monotonic()
            try:
                template = self._env.bounded_template(source)
            except TemplateSyntaxError as exc:
                raise TemplateError(f"template syntax error: {exc.message}", field) from None
            except Exception as exc:  # e.g. nested too deeply for Python to compile
                raise TemplateError(f"cannot compile: {type(exc).__name__}: {exc}", field) from None
            self._compiled[source] = template
            uncounted(time.monotonic() - started)
        try:
            text = template.render(variables)
        except TooSlow:
            self._timeouts += 1
            raise
        except RenderLimit:
            raise
        except SecurityError as exc:
            what = f"template tried to reach Python internals, which is not allowed ({exc})"
            raise TemplateError(what, field) from None
        except UndefinedError as exc:
            raise TemplateError(f"undefined variable: {exc.message}", field, True) from None
        except Exception as exc:  # a template is user data: any failure is the user's to fix
            raise TemplateError(f"cannot render: {type(exc).__name__}: {exc}", field) from None
        if len(text) > MAX_OUTPUT_CHARS:
            raise TemplateError(f"renders to more than {MAX_OUTPUT_CHARS:,} characters", field)
        return text

    def prompt(self, suite: Suite, variant: Variant | None, case: Case) -> Rendered:
        """The case's prompt: its own messages or prompt if given, else the variant's."""
        with rendering():
            return self._prompt(suite, variant, case)

    def _prompt(self, suite: Suite, variant: Variant | None, case: Case) -> Rendered:
        variables = case.vars
        suffix_source = case.suffix if case.suffix is not None else _suffix(suite, variant)
        suffix = None
        if suffix_source is not None:
            suffix = self.text(suffix_source, variables, ("suffix",))
        if case.messages is not None:
            messages = self._messages(case.messages, variables, ("messages",))
            return Rendered(messages=messages, suffix=suffix)
        if case.prompt is not None:
            return Rendered(prompt=self.text(case.prompt, variables, ("prompt",)), suffix=suffix)
        if variant is None:
            raise TemplateError("the suite has no prompt and the case gives none", ("prompt",))
        if isinstance(variant.prompt, str):
            return Rendered(prompt=self.text(variant.prompt, variables, ("prompt",)), suffix=suffix)
        return Rendered(
            messages=self._messages(variant.prompt, variables, ("prompt",)), suffix=suffix
        )

    def check(self, check: Check, variables: dict[str, Any], field: tuple[str | int, ...]) -> Check:
        """The check with its expected values rendered for this case."""
        if check.kind in UNTEMPLATED:
            return check
        with rendering():
            arg = self.leaves(check.arg, variables, field)
        return check if arg == check.arg else check.model_copy(update={"arg": arg})

    def _messages(
        self, messages: list[Message], variables: dict[str, Any], field: tuple[str | int, ...]
    ) -> tuple[tuple[tuple[str, str], ...], ...]:
        out = []
        for i, message in enumerate(messages):
            items: list[tuple[str, str]] = [("role", str(message.role))]
            if message.content is not None:
                content = self.text(message.content, variables, (*field, i, "content"))
                items.append(("content", content))
            if message.name is not None:
                items.append(("name", message.name))
            if message.tool_calls is not None:
                calls = [call.model_dump() for call in message.tool_calls]
                rendered = self.leaves(calls, variables, (*field, i, "tool_calls"))
                items.append(("tool_calls", json.dumps(rendered)))
            if message.tool_call_id is not None:
                items.append(("tool_call_id", message.tool_call_id))
            out.append(tuple(items))
        return tuple(out)

    def leaves(self, value: Any, variables: dict[str, Any], field: tuple[str | int, ...]) -> Any:
        """Every string in `value` rendered (one budget for all)."""
        with rendering():
            return self._leaves(value, variables, field)

    def _leaves(self, value: Any, variables: dict[str, Any], field: tuple[str | int, ...]) -> Any:
        if isinstance(value, str):
            return self.text(value, variables, field)
        if isinstance(value, list):
            return [self._leaves(v, variables, field) for v in value]
        if isinstance(value, dict):
            return {k: self._leaves(v, variables, field) for k, v in value.items()}
        return value


def _suffix(suite: Suite, variant: Variant | None) -> str | None:
    if variant is not None and variant.suffix is not None:
        return variant.suffix
    return suite.suffix
