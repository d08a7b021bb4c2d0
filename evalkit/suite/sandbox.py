"""The Jinja environment templates run in: sandboxed, with every amplifying operation checked.

Jinja's sandbox keeps templates away from Python internals but not from building gigabytes or
running for hours, so each operation that can build a large value is checked against the
render's budget (`render_budget.py`) *before* it runs, and counted after. Checked are the
output of every `{{ }}` and literal, `~`, the operators `+ * ** %`, `str.format`, every
filter, and calls of the string methods that can grow (`center`, `join`, `replace`, ...); an
estimate per filter and method says what it would build. The HTML and debugging helpers
`urlize`, `pprint` and `lipsum`, which a prompt has no use for, are left out.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2 import Template, nodes, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.visitor import NodeTransformer

from evalkit.suite.render_budget import (
    MAX_BUILT_CHARS,
    active,
    binop_size,
    built_size,
    number,
    printf_size,
    text_size,
    too_many_digits,
)


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
        budget = active()
        budget.check(binop_size(operator, left, right), f"'{operator}'")
        result = super().call_binop(context, operator, left, right)
        budget.spend(built_size(result), f"'{operator}'")
        return result

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = active()
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str | bytes) and name in _METHOD_ESTIMATES:
            size, args = _METHOD_ESTIMATES[name](owner, args, kwargs)
            budget.check(size, f"{name}()")
        budget.tick()
        result = super().call(__context, __obj, *args, **kwargs)
        budget.spend(built_size(result), f"{name or 'the call'}()")
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
    budget = active()
    budget.spend(text_size(value, budget.left), "the output")
    return value


@pass_context
def _concat(context: Context, parts: list[Any]) -> str:
    budget = active()
    budget.spend(sum(text_size(p, budget.left) for p in parts), "'~'")
    return "".join(str(p) for p in parts)


@pass_context
def _each(context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    budget = active()
    for item in iterable:
        budget.tick()
        yield item


class _Formatter(SandboxedFormatter):
    """`str.format` with every field's width and value counted before it is formatted."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = active()
        widths = sum(number(digits) for digits in re.findall(r"\d+", format_spec))
        budget.check(text_size(value, budget.left) + widths, "format()")
        result = super().format_field(value, format_spec)
        budget.spend(built_size(result), "format()")
        return result

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion in ("r", "a"):
            budget = active()
            budget.check(text_size(value, budget.left, quoted=True), "format()")
        return super().convert_field(value, conversion)


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
    return printf_size(str(s), kw or args), s


def _join(value: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    items, joint = list(value), len(str(_arg(args, kw, 0, "d", "")))
    return sum(text_size(i, MAX_BUILT_CHARS) for i in items) + joint * len(items), items


def _sum(value: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    start = _arg(args, kw, 1, "start", 0)
    if not isinstance(start, str | list | tuple):
        return 0, value
    items = list(value)
    return built_size(start) + sum(built_size(i) for i in items), items


def _round(value: Any, args: _Args, kw: _Kwargs) -> tuple[int, Any]:
    precision = _int(_arg(args, kw, 0, "precision", 0))
    too_many_digits(abs(precision), "filter 'round'")  # it computes 10**precision
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
        budget = active()
        head, subject, rest = args[:passes], args[passes], args[passes + 1 :]
        if as_text:
            budget.check(growth * text_size(subject, budget.left), what)
        if estimate is not None:
            size, subject = estimate(subject, rest, kwargs)
            budget.check(size, what)
        result = func(*head, subject, *rest, **kwargs)
        budget.spend(built_size(result), what)
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
    return sum(built_size(i) for i in items) + len(text) * len(items), (items, *args[1:])


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
