"""The Jinja environment templates run in: sandboxed, and bounded in size and time.

A template is data from a suite file, and a few bytes of Jinja can ask for gigabytes
(`'a' * 10**10`, `'%0999999999d'|format(1)`) or for hours (nested loops, `10**(10**9)`).
Jinja's sandbox keeps templates away from Python internals but not from either, so every
operation that can build a large value is checked *before* it runs, against a budget shared
by one render (`rendering()`):

- `MAX_BUILT_CHARS`: all the text (and list items, at 8 each) a render may build, its output
  included; `MAX_OUTPUT_CHARS`: the text one template may render to;
- `MAX_INT_DIGITS`: the largest integer `*`, `**` and `round` may make;
- `MAX_RENDER_SECONDS`: wall-clock time, checked at every loop step, call and value built.

Exceeding any of them raises `RenderLimit`. Checked are the output of every `{{ }}` and
literal, `~`, the operators `+ * ** %`, `str.format`, every filter, and calls of the string
methods that can grow (`center`, `join`, `replace`, ...). The HTML and debugging helpers
`urlize`, `pprint` and `lipsum`, which a prompt has no use for, are left out.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, ValuesView
from collections.abc import Set as AbstractSet
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import Template, nodes, pass_context
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

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
class _Budget:
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


_BUDGET: ContextVar[_Budget | None] = ContextVar("evalkit_render_budget", default=None)


class rendering:  # a context manager, used as `with rendering():`
    """One budget for everything rendered inside (nested uses share the outer budget)."""

    def __enter__(self) -> None:
        fresh = _BUDGET.get() is None
        self._token = _BUDGET.set(_Budget(time.monotonic() + MAX_RENDER_SECONDS)) if fresh else None

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _BUDGET.reset(self._token)


def spend(size: int, what: str) -> None:
    """Count `size` characters against the current render's budget."""
    _active().spend(size, what)


def uncounted(seconds: float) -> None:
    """Give the current render `seconds` more: time it spent compiling, once per template."""
    _active().deadline += seconds


def _active() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # e.g. Jinja folding constants at compile time: leave it to the render
        raise RenderLimit("not rendering")
    return budget


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with every amplifying operation checked against the budget."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        del self.globals["lipsum"]
        for name in ("urlize", "pprint"):
            del self.filters[name]
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters.update(_evalkit_out=_out, _evalkit_each=_each, _evalkit_concat=_concat)

    def bounded_template(self, source: str) -> Template:
        """`source` compiled with its output, `~` and loops routed through the budget."""
        tree = self.parse(source)
        _Route().visit(tree)
        tree.set_environment(self)
        return self.from_string(tree)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _active()
        budget.check(_binop_size(operator, left, right), f"'{operator}'")
        result = super().call_binop(context, operator, left, right)
        budget.spend(_size(result), f"'{operator}'")
        return result

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _active()
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str | bytes) and name in _METHOD_ESTIMATES:
            size, args = _METHOD_ESTIMATES[name](owner, args, kwargs)
            budget.check(size, f"{name}()")
        budget.tick()
        result = super().call(__context, __obj, *args, **kwargs)
        budget.spend(_size(result), f"{name or 'the call'}()")
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if super().wrap_str_format(value) is None:
            return None
        text: str = value.__self__
        formatter = _Formatter(self)
        is_map = value.__name__ == "format_map"

        def bounded(*args: Any, **kwargs: Any) -> str:
            if not is_map:
                return formatter.vformat(text, args, kwargs)
            if kwargs or len(args) != 1:
                raise TypeError("format_map() takes exactly one argument")
            return formatter.vformat(text, (), args[0])

        return bounded


class _Route(NodeTransformer):
    """Rewrites a parsed template so that what it outputs, joins with `~` and loops over
    passes through the budget (these compile to plain Python, with no sandbox hook)."""

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [_internal("_evalkit_out", child) for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _internal("_evalkit_concat", nodes.List(node.nodes, lineno=node.lineno))

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _internal("_evalkit_each", node.iter)
        return node


def _internal(name: str, node: nodes.Node) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


@pass_context
def _out(context: Context, value: Any) -> Any:
    budget = _active()
    budget.spend(_text_size(value, budget.left), "the output")
    return value


@pass_context
def _concat(context: Context, parts: list[Any]) -> str:
    budget = _active()
    budget.spend(sum(_text_size(p, budget.left) for p in parts), "'~'")
    return "".join(str(p) for p in parts)


@pass_context
def _each(context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    budget = _active()
    for item in iterable:
        budget.tick()
        yield item


class _Formatter(SandboxedFormatter):
    """`str.format` with every field's width and value counted before it is formatted."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = _active()
        widths = sum(_number(digits) for digits in re.findall(r"\d+", format_spec))
        budget.check(_text_size(value, budget.left) + widths, "format()")
        result = super().format_field(value, format_spec)
        budget.spend(_size(result), "format()")
        return result

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion in ("r", "a"):
            budget = _active()
            budget.check(_text_size(value, budget.left, quoted=True), "format()")
        return super().convert_field(value, conversion)


# ----------------------------------------------------------------------------- sizes


def _size(value: Any) -> int:
    """What building `value` cost: its characters, or 8 per item of a collection."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple | dict | set | frozenset):
        return _ITEM * len(value)
    return 0


def _text_size(value: Any, limit: int, quoted: bool = False) -> int:
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


def _number(digits: str) -> int:
    """A width or precision written in a format; absurd ones are just too large."""
    return int(digits) if len(digits) <= 9 else MAX_BUILT_CHARS + 1


def _too_many_digits(digits: float, what: str) -> None:
    if digits > MAX_INT_DIGITS:
        raise RenderLimit(f"{what} would make an integer of more than {MAX_INT_DIGITS:,} digits")


def _binop_size(operator: str, left: Any, right: Any) -> int:
    """What `left <operator> right` would build; raises for an integer too large."""
    numbers = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and numbers and right > 0 and abs(left) > 1:
        _too_many_digits(min(right, 10**6) * math.log10(abs(left)), "'**'")
    elif operator == "*" and numbers:
        _too_many_digits((left.bit_length() + right.bit_length()) * _DIGITS_PER_BIT, "'*'")
    elif operator == "*" and isinstance(right, int):
        return _size(left) * max(right, 0)
    elif operator == "*" and isinstance(left, int):
        return _size(right) * max(left, 0)
    elif operator == "+":
        return _size(left) + _size(right)
    elif operator == "%" and isinstance(left, str | bytes):
        return _printf_size(left if isinstance(left, str) else left.decode("latin-1"), right)
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


def _printf_size(template: str, values: Any) -> int:
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
                total += _number(given)
        value = mapping.get(key) if key is not None else take()
        total += _text_size(value, MAX_BUILT_CHARS, quoted=kind in "ra")
    return total


# ----------------------------------------------------------------------------- filters

# Filters that do not turn their input into text (the rest may, and are checked for it).
_STRUCTURAL = frozenset(
    {
        *("abs", "attr", "batch", "count", "d", "default", "dictsort", "filesizeformat"),
        *("first", "float", "groupby", "int", "items", "join", "last", "length", "list"),
        *("map", "max", "min", "random", "reject", "rejectattr", "reverse", "round"),
        *("select", "selectattr", "slice", "sort", "sum", "tojson", "unique"),
    }
)
# How many characters a filter may make of one (upper: 'ß' -> 'SS'; escape: '"' -> '&#34;').
_GROWTH = {"upper": 3, "lower": 3, "title": 3, "capitalize": 3, "urlencode": 12}
_GROWTH.update(dict.fromkeys(("e", "escape", "forceescape", "xmlattr"), 6))

_Args = tuple[Any, ...]
_Kwargs = Mapping[str, Any]
# What a call would build, from its subject and arguments (which it may replace: a generator
# is read into a list so it can be measured and still be used).
_Estimate = Callable[[Any, _Args, _Kwargs], tuple[int, Any]]


def _arg(args: _Args, kwargs: _Kwargs, index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _width(position: int, name: str, default: int) -> _Estimate:
    """center, ljust, batch, slice, ...: the result is as long as an argument says."""

    def estimate(subject: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
        return _int(_arg(args, kw, position, name, default)), subject

    return estimate


def _indent(s: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    text, width = str(s), _arg(args, kw, 0, "width", 4)
    width = len(width) if isinstance(width, str) else max(_int(width), 0)
    return len(text) + (text.count("\n") + 1) * width, s


def _wordwrap(s: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    text, width = str(s), max(_int(_arg(args, kw, 0, "width", 79)), 1)
    joint = len(str(_arg(args, kw, 2, "wrapstring", None) or "\n"))
    return len(text) + (2 * len(text) // width + text.count("\n") + 1) * joint, s


def _replace(s: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    text: Any = s if isinstance(s, str | bytes) else str(s)
    old, new = _arg(args, kw, 0, "old", ""), _arg(args, kw, 1, "new", "")
    if not isinstance(s, str | bytes):  # the filter, which takes anything as text
        old, new = str(old), str(new)
    if not isinstance(old, type(text)) or not isinstance(new, type(text)):
        return len(text), s  # fails on its own
    found = text.count(old) if old else len(text) + 1
    count = _arg(args, kw, 2, "count", None)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0), s


def _format(s: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    return _printf_size(str(s), kw or args), s


def _join(value: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    items, joint = list(value), len(str(_arg(args, kw, 0, "d", "")))
    return sum(_text_size(i, MAX_BUILT_CHARS) for i in items) + joint * len(items), items


def _sum(value: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    start = _arg(args, kw, 1, "start", 0)
    if not isinstance(start, str | list | tuple):
        return 0, value
    items = list(value)
    return _size(start) + sum(_size(i) for i in items), items


def _round(value: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    precision = _int(_arg(args, kw, 0, "precision", 0))
    _too_many_digits(abs(precision), "filter 'round'")  # it computes 10**precision
    return 0, value


def _tojson(value: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    indent = _arg(args, kw, 0, "indent", None)
    total = _int(indent)
    if total > MAX_BUILT_CHARS:
        return total, value
    for chunk in json.JSONEncoder(indent=indent, sort_keys=True).iterencode(value):
        total += len(chunk) + 5 * sum(chunk.count(c) for c in "<>&'")  # '<' becomes \u003c
        if total > MAX_BUILT_CHARS:
            break
    return total, value


_FILTER_ESTIMATES: dict[str, _Estimate] = {
    "center": _width(0, "width", 80),
    "batch": _width(0, "linecount", 0),  # fill_with pads the last batch to linecount items
    "slice": _width(0, "slices", 0),
    "indent": _indent,
    "wordwrap": _wordwrap,
    "replace": _replace,
    "format": _format,
    "join": _join,
    "sum": _sum,
    "round": _round,
    "tojson": _tojson,
}


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` checked before (its input as text, its size arguments) and counted after."""
    what = f"filter '{name}'"
    growth = _GROWTH.get(name, 1)
    as_text = name not in _STRUCTURAL
    estimate = _FILTER_ESTIMATES.get(name)
    passes = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # context first

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = _active()
        head, subject, rest = args[:passes], args[passes], args[passes + 1 :]
        if as_text:
            budget.check(growth * _text_size(subject, budget.left), what)
        if estimate is not None:
            size, subject = estimate(subject, rest, kwargs)
            budget.check(size, what)
        result = func(*head, subject, *rest, **kwargs)
        budget.spend(_size(result), what)
        return result

    return bounded


# ----------------------------------------------------------------------------- methods


def _tabs(text: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    tab = "\t" if isinstance(text, str) else b"\t"
    return len(text) + text.count(tab) * _int(_arg(args, kw, 0, "tabsize", 8)), args


def _method_replace(text: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    return _replace(text, args, kw)[0], args


def _method_join(text: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    items = list(args[0]) if args else []
    return sum(_size(i) for i in items) + len(text) * len(items), (items, *args[1:])


def _translate(text: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    table = args[0] if args else None
    values = table.values() if isinstance(table, Mapping) else table
    if not isinstance(text, str) or not isinstance(values, Iterable):
        return len(text), args
    return len(text) * max((len(v) for v in values if isinstance(v, str)), default=1), args


def _padded(text: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    return _int(_arg(args, kw, 0, "width", 0)), args


# The str and bytes methods whose result can be much longer than the string.
_METHOD_ESTIMATES: dict[str, _Estimate] = {
    "center": _padded,
    "ljust": _padded,
    "rjust": _padded,
    "zfill": _padded,
    "expandtabs": _tabs,
    "replace": _method_replace,
    "join": _method_join,
    "translate": _translate,
}
