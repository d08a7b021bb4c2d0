"""Read a suite file (YAML, or JSONL of cases) into a `Suite`, every error located by line.

Suites are data: YAML is read with the safe loader only. A cases file named by `cases:` is
read relative to the suite's folder. Lines in OpenAI Evals sample format
(`{"input": [...], "ideal": ...}`) are accepted as they are.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from evalkit.errors import Problem, SuiteError, did_you_mean
from evalkit.locate import Locator, data_path, show_path
from evalkit.suite import Case, Suite

_SafeLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAX_PROBLEMS = 100
_CASE_KEYS = frozenset(Case.model_fields)


def load_suite(path: str | Path) -> Suite:
    """The suite at `path`, validated; raises `SuiteError` listing every problem found."""
    shown = str(path)
    text = _read_text(Path(path), shown)
    problems: list[Problem] = []
    if shown.endswith(".jsonl"):
        locator = Locator(shown)
        data: Any = {"cases": _read_jsonl(text, shown, locator, (), problems)}
    else:
        data, locator = _read_yaml(text, shown, problems)
        if not problems and not isinstance(data, dict):
            problems.append(Problem(shown, 1, "", "a suite must be a mapping of keys"))
    if problems:
        raise SuiteError(problems)
    cases = data.get("cases")
    if isinstance(cases, str):
        data["cases"] = _read_cases_file(Path(path).parent, cases, locator, problems)
        if problems:
            raise SuiteError(problems)
    if isinstance(data.get("cases"), list):
        data["cases"] = [_normalise_case(c, i) for i, c in enumerate(data["cases"])]
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise SuiteError(_problems(exc, data, locator)) from None
    suite._source = shown
    suite._locator = locator
    if suite.name is None:
        suite.name = Path(path).stem
    return suite


def _read_text(path: Path, shown: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SuiteError([Problem(shown, 0, "", "no such file")]) from None
    except IsADirectoryError:
        raise SuiteError([Problem(shown, 0, "", "is a directory, not a suite file")]) from None
    except OSError as exc:
        raise SuiteError([Problem(shown, 0, "", f"cannot read: {exc.strerror}")]) from None
    try:
        if b"\x00" in raw[:8192]:
            raise UnicodeDecodeError("utf-8", raw, raw.index(b"\x00"), 1, "NUL byte")
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        what = "not a text file: suites and cases files must be UTF-8 YAML or JSONL"
        raise SuiteError([Problem(shown, line, "", what)]) from None


def _read_yaml(text: str, shown: str, problems: list[Problem]) -> tuple[Any, Locator]:
    locator = Locator(shown)
    try:
        loader = _SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        what = f"invalid YAML: {getattr(exc, 'problem', None) or str(exc).splitlines()[0]}"
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None and context_mark.line + 1 != line:
            what += f" ({context} started at line {context_mark.line + 1})"
        problems.append(Problem(shown, line, "", what))
        return None, locator
    if node is not None:
        _index_node(node, (), locator, problems)
    return data, locator


def _index_node(
    node: yaml.Node, path: tuple[str | int, ...], locator: Locator, problems: list[Problem]
) -> None:
    """Record the line of every key and item under `node`; flag duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in first_line:
                where = show_path((*path, key))
                what = f"duplicate key '{key}' (first at line {first_line[key]})"
                problems.append(Problem(locator.file, line, where, what))
            first_line[key] = line
            locator.add((*path, key), line, value_node.start_mark.line + 1)
            _index_node(value_node, (*path, key), locator, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            locator.add((*path, i), item.start_mark.line + 1)
            _index_node(item, (*path, i), locator, problems)


def _read_jsonl(
    text: str, shown: str, locator: Locator, prefix: tuple[str | int, ...], problems: list[Problem]
) -> list[Any]:
    records: list[Any] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            what = f"not valid JSON: {exc.msg} (column {exc.colno})"
            problems.append(Problem(shown, lineno, "", what))
            if len(problems) >= _MAX_PROBLEMS:
                break
            continue
        if not isinstance(record, dict):
            problems.append(Problem(shown, lineno, "", "each line must be a JSON object"))
            continue
        locator.add((*prefix, len(records)), lineno, file=shown)
        records.append(record)
    return records


def _read_cases_file(
    folder: Path, name: str, locator: Locator, problems: list[Problem]
) -> list[Any]:
    target = folder / name
    shown = str(Path(locator.file).parent / name) if locator.file else name
    _, line = locator.line_of(("cases",), value=True)
    if not target.is_file():
        what = f"cases file '{name}' not found (looked for {target.resolve()})"
        problems.append(Problem(locator.file, line, "cases", what))
        return []
    text = _read_text(target, shown)
    if name.endswith(".jsonl"):
        return _read_jsonl(text, shown, locator, ("cases",), problems)
    inner, inner_locator = _read_yaml(text, shown, problems)
    if not isinstance(inner, list):
        if not problems:
            problems.append(Problem(shown, 1, "", "a YAML cases file must be a list of cases"))
        return []
    for path, (_, key_line, value_line) in inner_locator.spots.items():
        locator.add(("cases", *path), key_line, value_line, file=shown)
    return inner


def _normalise_case(case: Any, index: int) -> Any:
    """Give the case an id; turn an OpenAI Evals sample (`input`/`ideal`) into a case."""
    if not isinstance(case, dict):
        return case
    if "input" in case and "vars" not in case:
        rest = dict(case)
        given = rest.pop("input")
        ideal = rest.pop("ideal", None)
        case = {k: v for k, v in rest.items() if k in _CASE_KEYS}
        extra = {k: v for k, v in rest.items() if k not in _CASE_KEYS}
        if extra:
            case["vars"] = extra
        case["messages" if isinstance(given, list) else "prompt"] = given
        if ideal is not None:
            case["expect"] = [*case.get("expect", []), {"match": ideal}]
    if case.get("id") is None:
        case = {**case, "id": f"case-{index + 1}"}
    return case


def _problems(exc: ValidationError, data: Any, locator: Locator) -> list[Problem]:
    """Pydantic's errors as located problems, one per place, most specific first."""
    found: dict[tuple[str | int, ...], list[dict[str, Any]]] = {}
    for err in exc.errors():
        found.setdefault(data_path(data, err["loc"]), []).append(dict(err))
    paths = list(found)
    problems = []
    for path, errs in found.items():
        if any(len(q) > len(path) and q[: len(path)] == path for q in paths):
            continue  # a union's other branches failing: the deeper error says more
        kind = errs[0]["type"]
        if kind == "extra_forbidden":
            hint = did_you_mean(str(path[-1]), _allowed_keys(path[:-1]))
            what = f"unknown key '{path[-1]}'{hint}"
            file, line = locator.line_of(path)
        elif kind == "missing":
            what = f"missing required key '{path[-1]}'"
            file, line = locator.line_of(path[:-1])
        else:
            what = "; or: ".join(dict.fromkeys(_message(e) for e in errs))
            file, line = locator.line_of(path, value=True)
        problems.append(Problem(file, line, show_path(path), what))
    return problems


def _message(err: dict[str, Any]) -> str:
    msg = str(err["msg"])
    prefix = "Value error, "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg


def _allowed_keys(path: tuple[str | int, ...]) -> list[str]:
    """The keys a suite may have at `path` (for 'did you mean')."""
    options: list[Any] = [Suite]
    for part in path:
        options = [nxt for t in options for nxt in _step(t, part)]
    return sorted({name for t in options if _is_model(t) for name in t.model_fields})


def _step(tp: Any, part: str | int) -> list[Any]:
    out: list[Any] = []
    for member in _members(tp):
        origin = typing.get_origin(member)
        if isinstance(part, int) and origin is list:
            out.extend(_members(typing.get_args(member)[0]))
        elif isinstance(part, str) and origin is dict:
            out.extend(_members(typing.get_args(member)[1]))
        elif isinstance(part, str) and _is_model(member) and part in member.model_fields:
            out.extend(_members(member.model_fields[part].annotation))
    return out


def _members(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    return [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)
