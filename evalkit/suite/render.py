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
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError

from evalkit.errors import TemplateError
from evalkit.suite.checkspec import UNTEMPLATED, Check
from evalkit.suite.images import (
    Image,
    NotAnImage,
    decode_data_url,
    dimensions,
    is_remote,
    read_image,
)
from evalkit.suite.render_budget import (
    MAX_OUTPUT_CHARS,
    RenderLimit,
    TooSlow,
    rendering,
    spend,
    uncounted,
)
from evalkit.suite.sandbox import BoundedEnvironment
from evalkit.suite.spec import Case, ImagePart, Message, Suite, Variant

# A rendered content part: ("text", text, "") or ("image_url", url, detail).
RenderedPart = tuple[str, str, str]
MessageValue = str | tuple[RenderedPart, ...]


@dataclass(frozen=True, slots=True)
class Rendered:
    """A case's prompt after rendering: chat messages, or a completions prompt (+ suffix)."""

    messages: tuple[tuple[tuple[str, MessageValue], ...], ...] | None = None
    prompt: str | None = None
    suffix: str | None = None

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    @property
    def has_images(self) -> bool:
        return any(
            isinstance(value, tuple) and any(part[0] == "image_url" for part in value)
            for message in self.messages or ()
            for _, value in message
        )

    def message_dicts(self) -> list[dict[str, Any]]:
        """The messages as the API takes them (tool calls back to their JSON structure)."""
        return [{k: _wire(k, v) for k, v in message} for message in self.messages or ()]


def _wire(key: str, value: MessageValue) -> Any:
    if isinstance(value, tuple):
        return [_wire_part(part) for part in value]
    return json.loads(value) if key == "tool_calls" else value


def _wire_part(part: RenderedPart) -> dict[str, Any]:
    kind, value, detail = part
    if kind == "text":
        return {"type": "text", "text": value}
    image = {"url": value, **({"detail": detail} if detail != "auto" else {})}
    return {"type": "image_url", "image_url": image}


MAX_TIMEOUTS = 3  # renders that may run out of time before the renderer gives up on a suite
IMAGE_MEMO_BYTES = 64 * 2**20  # images read from files, kept for the cases that share them


class Renderer:
    """Compiles each distinct template once and renders it per case.

    After `MAX_TIMEOUTS` renders ran out of time, templates fail at once: a suite of many
    slow templates then costs seconds, not one time budget per case.
    """

    def __init__(self, base_dir: Path | None = None) -> None:
        self._env = BoundedEnvironment(
            undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False
        )
        self._compiled: dict[str, Template] = {}
        self._timeouts = 0
        self._base_dir = base_dir or Path()  # where a suite's image paths start from
        self._images: dict[Path, Image] = {}
        self._image_bytes = 0

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
    ) -> tuple[tuple[tuple[str, MessageValue], ...], ...]:
        out = []
        for i, message in enumerate(messages):
            items: list[tuple[str, MessageValue]] = [("role", str(message.role))]
            if isinstance(message.content, list):
                parts = self._parts(message.content, variables, (*field, i, "content"))
                items.append(("content", parts))
            elif message.content is not None:
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

    def _parts(
        self, parts: list[Any], variables: dict[str, Any], field: tuple[str | int, ...]
    ) -> tuple[RenderedPart, ...]:
        out: list[RenderedPart] = []
        for j, part in enumerate(parts):
            if isinstance(part, ImagePart):
                url = self.text(part.image_url.url, variables, (*field, j, "image_url", "url"))
                out.append(("image_url", self._image_url(url, (*field, j)), part.image_url.detail))
            else:
                out.append(("text", self.text(part.text, variables, (*field, j, "text")), ""))
        return tuple(out)

    def _image_url(self, url: str, field: tuple[str | int, ...]) -> str:
        """A remote URL as given (a data URL checked); a file read into a data URL."""
        if not is_remote(url):
            return self._image_file(url, field).data_url
        if url.startswith("data:"):
            data = decode_data_url(url)
            if data is None:
                raise TemplateError("a data URL that is not a base64-encoded image", field)
            try:
                dimensions(data)
            except NotAnImage as exc:
                raise TemplateError(f"the data URL's image: {exc}", field) from None
        return url

    def _image_file(self, name: str, field: tuple[str | int, ...]) -> Image:
        """The image file `name` (relative to the suite's folder), read once while it fits
        the memo; a located TemplateError when it cannot be sent."""
        path = self._base_dir / name
        image = self._images.get(path)
        if image is not None:
            return image
        try:
            image = read_image(path)
        except FileNotFoundError:
            raise TemplateError(f"image {name}: no such file ({path})", field) from None
        except OSError as exc:
            raise TemplateError(f"image {name}: cannot read it: {exc.strerror}", field) from None
        except NotAnImage as exc:
            raise TemplateError(f"image {name}: {exc}", field) from None
        size = len(image.data_url)
        if self._image_bytes + size > IMAGE_MEMO_BYTES:
            self._images.clear()
            self._image_bytes = 0
        self._images[path] = image
        self._image_bytes += size
        return image

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
