"""What one render may build and how long it may take, and what each value costs.

A template is data from a suite file, and a few bytes of Jinja can ask for gigabytes
(`'a' * 10**10`, `'%0999999999d'|format(1)`) or for hours (nested loops, `10**(10**9)`).
The sandbox (`sandbox.py`) checks every operation that can build a large value *before* it
runs, against one budget shared by everything one render builds (`rendering()`):

- `MAX_BUILT_CHARS`: all the text (and list items, at 8 each) a render may build, its output
  included; `MAX_OUTPUT_CHARS`: the text one template may render to;
- `MAX_INT_DIGITS`: the largest integer `*`, `**` and `round` may make;
- `MAX_RENDER_SECONDS`: wall-clock time, checked at every loop step, call and value built.

Exceeding any of them raises `RenderLimit`. The sizes here are upper bounds, computed without
building the value (`text_size` counts a list holding one long string a million times in a
few steps), so that the check itself cannot be the expensive part.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping, ValuesView
from collections.abc import Set as AbstractSet
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2.runtime import Undefined
from jinja2.utils import Namespace

MAX_OUTPUT_CHARS = 4_000_000  # about a million tokens: the largest context window there is
MAX_BUILT_CHARS = 4 * MAX_OUTPUT_CHARS
MAX_INT_DIGITS = 4_300  # Python's own limit for turning an int into text
MAX_RENDER_SECONDS = 1.0

_ITEM = 8  # what a list item costs: a reference
_DIGITS_PER_BIT = math.log10(2)


class RenderLimit(Exception):
    """A template asked for more than a render may build or take; the message says what."""


class TooSlow(RenderLimit):
    """The render ran out of time."""


@dataclass
class Budget:
    """What is left of one render's characters and time; `check` before building, `spend`
    after."""

    deadline: float
    left: int = MAX_BUILT_CHARS

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TooSlow(f"took longer than {MAX_RENDER_SECONDS:g} s to render")

    def check(self, size: int, what: str) -> None:
        if size > self.left:
            raise RenderLimit(
                f"{what} would build more than the {MAX_BUILT_CHARS:,} characters a render "
                "may build"
            )
        self.tick()

    def spend(self, size: int, what: str) -> None:
        self.check(size, what)
        self.left -= size


_BUDGET: ContextVar[Budget | None] = ContextVar("evalkit_render_budget", default=None)


class rendering:  # a context manager, used as `with rendering():`
    """One budget for everything rendered inside (nested uses share the outer budget)."""

    def __enter__(self) -> None:
        fresh = _BUDGET.get() is None
        self._token = _BUDGET.set(Budget(time.monotonic() + MAX_RENDER_SECONDS)) if fresh else None

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _BUDGET.reset(self._token)


def spend(size: int, what: str) -> None:
    """Count `size` characters against the current render's budget."""
    active().spend(size, what)


def uncounted(seconds: float) -> None:
    """Give the current render `seconds` more: time it spent compiling, once per template."""
    active().deadline += seconds


def active() -> Budget:
    """The budget of the render under way; outside one, nothing may be built."""
    budget = _BUDGET.get()
    if budget is None:  # e.g. Jinja folding constants at compile time: leave it to the render
        raise RenderLimit("not rendering")
    return budget


# ----------------------------------------------------------------------------- sizes


def built_size(value: Any) -> int:
    """What building `value` cost: its characters, or 8 per item of a collection."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple | dict | set | frozenset):
        return _ITEM * len(value)
    return 0


def text_size(value: Any, limit: int, quoted: bool = False) -> int:
    """An upper bound on `len(str(value))` (`repr` when `quoted`), counted only up to `limit`
    so that a list holding one long string a million times is measured in a few steps."""
    if type(value) is str and not quoted:
        return len(value)
    total = 0
    todo = [(value, quoted)]
    while todo and total <= limit:
        item, as_repr = todo.pop()
        if isinstance(item, str):
            total += _str_size(item) if as_repr else len(item)
        elif isinstance(item, bytes):
            total += 4 * len(item) + 3
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += int(item.bit_length() * _DIGITS_PER_BIT) + 2
        elif isinstance(item, float):
            total += 25
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            todo.extend((part, True) for pair in item.items() for part in pair)
        elif isinstance(item, list | tuple | AbstractSet | ValuesView):
            total += 2 + 2 * len(item)
            todo.extend((part, True) for part in item)
        elif isinstance(item, Namespace):
            todo.append((vars(item), True))
        elif not isinstance(item, Undefined):  # Undefined raises when shown, as it should
            total += 100  # dates, macros, generators, ...: a short repr
    return total


def _str_size(text: str) -> int:
    """An upper bound on `len(repr(text))`."""
    if text.isprintable():
        return len(text) + 2 + text.count("\\") + text.count("'")
    return (4 if text.isascii() else 10) * len(text) + 2


def number(digits: str) -> int:
    """A width or precision written in a format; absurd ones are just too large."""
    return int(digits) if len(digits) <= 9 else MAX_BUILT_CHARS + 1


def too_many_digits(digits: float, what: str) -> None:
    if digits > MAX_INT_DIGITS:
        raise RenderLimit(f"{what} would make an integer of more than {MAX_INT_DIGITS:,} digits")


def binop_size(operator: str, left: Any, right: Any) -> int:
    """What `left <operator> right` would build; raises for an integer too large."""
    numbers = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and numbers and right > 0 and abs(left) > 1:
        too_many_digits(min(right, 10**6) * math.log10(abs(left)), "'**'")
    elif operator == "*" and numbers:
        too_many_digits((left.bit_length() + right.bit_length()) * _DIGITS_PER_BIT, "'*'")
    elif operator == "*" and isinstance(right, int):
        return built_size(left) * max(right, 0)
    elif operator == "*" and isinstance(left, int):
        return built_size(right) * max(left, 0)
    elif operator == "+":
        return built_size(left) + built_size(right)
    elif operator == "%" and isinstance(left, str | bytes):
        return printf_size(left if isinstance(left, str) else left.decode("latin-1"), right)
    return 0


_PRINTF_SPEC = re.compile(r"[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?(.)", re.S)


def _printf_specs(template: str) -> Iterator[tuple[str | None, str, str, str]]:
    """(key, width, precision, kind) of each conversion in a %-format, read as Python does
    (a key may hold parentheses: `%(a(b))s`)."""
    at = template.find("%")
    while at != -1:
        at, key = at + 1, None
        if template.startswith("(", at):
            depth, end = 1, at + 1
            while end < len(template) and depth:
                depth += {"(": 1, ")": -1}.get(template[end], 0)
                end += 1
            key, at = template[at + 1 : end - 1], end
        spec = _PRINTF_SPEC.match(template, at)
        if spec is None:
            return  # a bad format: Python says so
        width, precision, kind = spec.groups()
        yield key, width, precision or "", kind
        at = template.find("%", spec.end())


def printf_size(template: str, values: Any) -> int:
    """An upper bound on `len(template % values)`: widths, precisions and values added up."""
    positional = list(values) if isinstance(values, tuple) else [values]
    mapping = values if isinstance(values, Mapping) else {}
    total = len(template)

    def take() -> Any:
        return positional.pop(0) if positional else None

    for key, width, precision, kind in _printf_specs(template):
        if kind == "%":
            continue
        for given in (width, precision):
            if given == "*":
                star = take()
                total += star if isinstance(star, int) and star > 0 else 0
            elif given:
                total += number(given)
        value = mapping.get(key) if key is not None else take()
        total += text_size(value, MAX_BUILT_CHARS, quoted=kind in "ra")
    return total
