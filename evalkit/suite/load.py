"""Read a suite file (YAML, or JSONL of cases) into a `Suite`, every error located by line.

Suites are data: YAML is read with the safe loader only. A cases file named by `cases:` is
read relative to the suite's folder, and must lie inside it unless the caller allows
otherwise. Lines in OpenAI Evals sample format (`{"input": [...], "ideal": ...}`) are
accepted as they are.

A suite may be hostile, so data is bounded before it is built: nesting deeper than
`MAX_DEPTH`, YAML aliases that repeat more than `MAX_ALIAS_NODES` nodes (a "billion laughs")
and lone UTF-16 surrogates (not text) are located errors. YAML is read by `load_yaml.py`,
which checks its bounds as it composes the nodes; each JSONL line is checked here.
"""

from __future__ import annotations

import codecs
import json
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from evalkit.errors import Problem, SuiteError, did_you_mean
from evalkit.suite.load_yaml import MAX_DEPTH, NOT_TEXT, SURROGATE, read_yaml
from evalkit.suite.locate import Locator, data_path, show_path
from evalkit.suite.spec import Case, Suite

_MAX_PROBLEMS = 100
_CASE_KEYS = frozenset(Case.model_fields)


def load_suite(path: str | Path, allow_outside_cases: bool = False) -> Suite:
    """The suite at `path`, validated; raises `SuiteError` listing every problem found.

    A `cases:` file outside the suite's folder (after resolving symlinks) is an error unless
    `allow_outside_cases`: its values would be sent to the suite's endpoints.
    """
    shown = str(path)
    text = _read_text(Path(path), shown)
    problems: list[Problem] = []
    if shown.endswith(".jsonl"):
        locator = Locator(shown)
        data: Any = {"cases": _read_jsonl(text, shown, locator, ("cases",), problems)}
    else:
        data, locator = read_yaml(text, shown, problems)
        if not problems and not isinstance(data, dict):
            problems.append(Problem(shown, 1, "", "a suite must be a mapping of keys"))
    if problems:
        raise SuiteError(problems)
    cases = data.get("cases")
    if isinstance(cases, str):
        folder = Path(path).parent
        data["cases"] = _read_cases_file(folder, cases, locator, problems, allow_outside_cases)
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
    body = raw.removeprefix(codecs.BOM_UTF8)  # so an error's offset counts from the text
    try:
        if b"\x00" in body[:8192]:
            raise UnicodeDecodeError("utf-8", body, body.index(b"\x00"), 1, "NUL byte")
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        what = "not a text file: suites and cases files must be UTF-8 YAML or JSONL"
        raise SuiteError([Problem(shown, line, "", what)]) from None


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
        except RecursionError:
            problems.append(Problem(shown, lineno, "", f"nested more than {MAX_DEPTH} levels deep"))
            continue
        if not isinstance(record, dict):
            problems.append(Problem(shown, lineno, "", "each line must be a JSON object"))
            continue
        path = (*prefix, len(records))
        if line.count("[") + line.count("{") > MAX_DEPTH or "\\u" in line:
            bad = _bad_json(record, path)
            if bad is not None:
                problems.append(Problem(shown, lineno, show_path(bad[0]), bad[1]))
                continue
        locator.add(path, lineno, file=shown)
        records.append(record)
    return records


def _bad_json(value: Any, path: tuple[str | int, ...]) -> tuple[tuple[str | int, ...], str] | None:
    """Where `value` nests past `MAX_DEPTH` or holds a lone surrogate, and which."""
    todo: list[tuple[Any, tuple[str | int, ...]]] = [(value, path)]
    while todo:
        item, where = todo.pop()
        if isinstance(item, str):
            if SURROGATE.search(item):
                return where, NOT_TEXT
            continue
        if len(where) - len(path) >= MAX_DEPTH:
            return where, f"nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, dict):
            todo.extend((k, where) for k in item)
            todo.extend((v, (*where, k)) for k, v in item.items())
        elif isinstance(item, list):
            todo.extend((v, (*where, i)) for i, v in enumerate(item))
    return None


def _read_cases_file(
    folder: Path, name: str, locator: Locator, problems: list[Problem], allow_outside: bool
) -> list[Any]:
    shown = str(Path(locator.file).parent / name) if locator.file else name
    _, line = locator.line_of(("cases",), value=True)
    try:
        target = (folder / name).resolve()  # symlinks too: where the bytes really come from
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
        problems.append(Problem(locator.file, line, "cases", f"cases file '{name}': {exc}"))
        return []
    if not allow_outside and not target.is_relative_to(folder.resolve()):
        what = (
            f"cases file '{name}' is outside the suite's folder ({target}); move it next to "
            "the suite, or pass --allow-outside-cases if you trust it"
        )
        problems.append(Problem(locator.file, line, "cases", what))
        return []
    if not target.is_file():
        what = f"cases file '{name}' not found (looked for {target})"
        problems.append(Problem(locator.file, line, "cases", what))
        return []
    text = _read_text(target, shown)
    if name.endswith(".jsonl"):
        return _read_jsonl(text, shown, locator, ("cases",), problems)
    inner, inner_locator = read_yaml(text, shown, problems)
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
