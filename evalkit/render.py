"""Jinja rendering of prompts, suffixes and expected values, sandboxed and strict.

Templates are data from a suite file: they run in Jinja's `SandboxedEnvironment` (no access
to Python internals) with `StrictUndefined` (a missing variable is an error, never an empty
string), and keep trailing newlines so a prompt or suffix is sent byte for byte as written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from evalkit.checkspec import UNTEMPLATED, Check
from evalkit.errors import InputError
from evalkit.locate import show_path
from evalkit.suite import Case, Message, Suite, Variant


class TemplateError(InputError):
    """A template that cannot be compiled or rendered; `what` says why, `path` where.

    `undefined` tells a variable the case lacks (the case is at fault) from a broken
    template (the template is at fault), so the error can point at the right line.
    """

    def __init__(self, what: str, path: tuple[str | int, ...], undefined: bool = False) -> None:
        self.what = what
        self.path = path
        self.undefined = undefined
        self.field = show_path(path)
        super().__init__(f"{self.field}: {what}")


@dataclass(frozen=True)
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


class Renderer:
    """Compiles each distinct template once and renders it per case."""

    def __init__(self) -> None:
        self._env = SandboxedEnvironment(
            undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False
        )
        self._compiled: dict[str, Template] = {}

    def text(self, source: str, variables: dict[str, Any], field: tuple[str | int, ...]) -> str:
        """`source` rendered with `variables`; plain text skips Jinja altogether."""
        if "{" not in source:
            return source
        template = self._compiled.get(source)
        if template is None:
            try:
                template = self._env.from_string(source)
            except TemplateSyntaxError as exc:
                raise TemplateError(f"template syntax error: {exc.message}", field) from None
            self._compiled[source] = template
        try:
            return template.render(variables)
        except SecurityError as exc:
            what = f"template tried to reach Python internals, which is not allowed ({exc})"
            raise TemplateError(what, field) from None
        except UndefinedError as exc:
            raise TemplateError(f"undefined variable: {exc.message}", field, True) from None
        except Exception as exc:  # a template is user data: any failure is the user's to fix
            raise TemplateError(f"cannot render: {type(exc).__name__}: {exc}", field) from None

    def prompt(self, suite: Suite, variant: Variant | None, case: Case) -> Rendered:
        """The case's prompt: its own messages or prompt if given, else the variant's."""
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
        if isinstance(value, str):
            return self.text(value, variables, field)
        if isinstance(value, list):
            return [self.leaves(v, variables, field) for v in value]
        if isinstance(value, dict):
            return {k: self.leaves(v, variables, field) for k, v in value.items()}
        return value


def _suffix(suite: Suite, variant: Variant | None) -> str | None:
    if variant is not None and variant.suffix is not None:
        return variant.suffix
    return suite.suffix
