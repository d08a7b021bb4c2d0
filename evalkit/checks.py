"""The check catalogue: each check is a small pure function of (argument, output, record).

Every check returns a `Verdict`: pass or fail, a score in 0..1, and a one-line reason that a
report can show next to a failure. Arguments arrive already rendered for the case
(`render.Renderer.check`). The `judge` check needs a model call and is scored by the runner
(`judge.py`); `python` runs trusted code from the suite's folder.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from evalkit.checkspec import Check, offline_registry


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    score: float
    reason: str


Record = Mapping[str, Any]  # the row being checked: finish_reason, tokens, latency, cost, ...
CheckFn = Callable[[Any, str, Record], Verdict]


def _ok(passed: bool, reason_if_failed: str, reason_if_passed: str = "") -> Verdict:
    return Verdict(passed, 1.0 if passed else 0.0, reason_if_passed if passed else reason_if_failed)


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def equals(arg: Any, output: str, record: Record) -> Verdict:
    spec = arg if isinstance(arg, dict) else {"value": arg, "strip": True, "ignore_case": False}
    want, got = str(spec["value"]), output
    if spec.get("strip", True):
        want, got = want.strip(), got.strip()
    if spec.get("ignore_case"):
        want, got = want.casefold(), got.casefold()
    return _ok(got == want, f"expected {_short(want)}, got {_short(got)}")


def contains(arg: str, output: str, record: Record) -> Verdict:
    return _ok(arg in output, f"{_short(arg)} not found in output")


def icontains(arg: str, output: str, record: Record) -> Verdict:
    return _ok(arg.casefold() in output.casefold(), f"{_short(arg)} not found (any case)")


def not_contains(arg: str, output: str, record: Record) -> Verdict:
    return _ok(arg not in output, f"output contains {_short(arg)}")


def starts_with(arg: str, output: str, record: Record) -> Verdict:
    return _ok(output.startswith(arg), f"output does not start with {_short(arg)}")


def ends_with(arg: str, output: str, record: Record) -> Verdict:
    return _ok(output.endswith(arg), f"output does not end with {_short(arg)}")


def contains_any(arg: list[str], output: str, record: Record) -> Verdict:
    return _ok(any(a in output for a in arg), f"none of {arg!r} found")


def contains_all(arg: list[str], output: str, record: Record) -> Verdict:
    missing = [a for a in arg if a not in output]
    score = 1 - len(missing) / len(arg) if arg else 1.0
    return Verdict(not missing, score, f"missing {missing!r}" if missing else "")


def match(arg: str | list[str], output: str, record: Record) -> Verdict:
    """OpenAI Evals' Match: the output starts with one of the ideal answers."""
    ideals = [arg] if isinstance(arg, str) else arg
    stripped = output.strip()
    return _ok(
        any(stripped.startswith(i.strip()) for i in ideals),
        f"output does not start with any of {ideals!r}",
    )


def regex(arg: str, output: str, record: Record) -> Verdict:
    return _ok(re.search(arg, output) is not None, f"no match for /{arg}/")


def is_json(arg: Any, output: str, record: Record) -> Verdict:
    try:
        json.loads(output)
    except (ValueError, RecursionError) as exc:  # too deep a nesting is not JSON either
        return Verdict(False, 0.0, f"not JSON: {exc}")
    return Verdict(True, 1.0, "")


def json_schema(arg: dict[str, Any], output: str, record: Record) -> Verdict:

    try:
        value = json.loads(output)
    except (ValueError, RecursionError) as exc:
        return Verdict(False, 0.0, f"not JSON: {exc}")
    error = _schema_error(arg, value)
    return Verdict(True, 1.0, "") if error is None else Verdict(False, 0.0, f"schema: {error}")


@cache
def _validator(schema_json: str) -> Any:
    """A validator that never fetches a `$ref`."""
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(schema_json), registry=offline_registry())


_PATH_PART = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]|\[['\"]([^'\"]+)['\"]\]")


def json_path(arg: dict[str, Any], output: str, record: Record) -> Verdict:
    """A simple path (`$.a.b[0]`, `$['key']`) into the output's JSON equals a value."""
    try:
        value: Any = json.loads(output)
    except (ValueError, RecursionError) as exc:
        return Verdict(False, 0.0, f"not JSON: {exc}")
    path = str(arg["path"])
    rest = path[1:] if path.startswith("$") else "." + path.lstrip(".")
    position = 0
    for found in _PATH_PART.finditer(rest):
        if found.start() != position:
            break
        position = found.end()
        key = found.group(1) or found.group(3)
        try:
            value = value[int(found.group(2))] if key is None else value[key]
        except (KeyError, IndexError, TypeError):
            return Verdict(False, 0.0, f"{path}: not found")
    if position != len(rest):
        return Verdict(False, 0.0, f"{path}: not a path this check understands")
    return _ok(value == arg["equals"], f"{path} is {value!r}, expected {arg['equals']!r}")


def finish_reason(arg: str | list[str], output: str, record: Record) -> Verdict:
    allowed = [arg] if isinstance(arg, str) else arg
    got = record.get("finish_reason")
    return _ok(got in allowed, f"finish_reason {got!r}, expected {' or '.join(allowed)}")


def _at_most(field: str, unit: str, scale: float = 1.0) -> CheckFn:
    def check(arg: float, output: str, record: Record) -> Verdict:
        value = record.get(field)
        if value is None or value != value:  # missing or NaN
            return Verdict(False, 0.0, f"{field} unknown")
        value = float(value) * scale
        return _ok(value <= arg, f"{value:g}{unit} > {arg:g}{unit}")

    return check


def similarity(arg: Any, output: str, record: Record) -> Verdict:
    """Normalised edit-distance similarity to an expected text, with a pass threshold."""
    from rapidfuzz.distance import Levenshtein

    spec = arg if isinstance(arg, dict) else {"value": arg, "threshold": 0.8}
    score = float(Levenshtein.normalized_similarity(output.strip(), str(spec["value"]).strip()))
    threshold = float(spec.get("threshold", 0.8))
    return Verdict(score >= threshold, score, f"similarity {score:.2f} < {threshold:.2f}")


def _calls(record: Record) -> list[dict[str, Any]]:
    return list(record.get("tool_calls") or [])


def tool_call(arg: Any, output: str, record: Record) -> Verdict:
    """The model called the expected tool (with these arguments), or none when `none`."""
    calls = _calls(record)
    if arg == "none":
        names = [c.get("name") for c in calls]
        return _ok(not calls, f"expected no tool call, got {names}")
    spec: dict[str, Any] = {"name": arg} if isinstance(arg, str) else dict(arg)
    matching = [c for c in calls if c.get("name") == spec["name"]]
    if not matching:
        got = [c.get("name") for c in calls] or "a text answer"
        return Verdict(False, 0.0, f"expected a call to {spec['name']}, got {got}")
    reasons = []
    for call in matching:
        try:
            parsed = json.loads(call.get("arguments") or "")
        except (ValueError, RecursionError) as exc:
            reasons.append(f"arguments are not JSON ({exc})")
            continue
        wanted: dict[str, Any] = spec.get("arguments") or {}
        arguments: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        wrong = {k: arguments.get(k) for k, v in wanted.items() if arguments.get(k) != v}
        if wrong:
            expected = {k: wanted[k] for k in wrong}
            reasons.append(f"arguments differ: got {wrong}, expected {expected}")
            continue
        if spec.get("schema") is not None:
            error = _schema_error(spec["schema"], parsed)
            if error:
                reasons.append(f"arguments: {error}")
                continue
        return Verdict(True, 1.0, "")
    return Verdict(False, 0.0, "; ".join(reasons))


def tool_args_valid(arg: Any, output: str, record: Record) -> Verdict:
    """Every call's arguments parse and match the declared tool's parameters schema."""
    params = record.get("params") or {}
    declared = {
        t["function"]["name"]: t["function"].get("parameters")
        for t in params.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    }
    declared.update({f["name"]: f.get("parameters") for f in params.get("functions") or []})
    for call in _calls(record):
        name = call.get("name")
        if name not in declared:
            return Verdict(False, 0.0, f"called {name!r}, which is not a declared tool")
        try:
            parsed = json.loads(call.get("arguments") or "")
        except (ValueError, RecursionError) as exc:
            return Verdict(False, 0.0, f"{name}: arguments are not JSON ({exc})")
        schema = declared[name]
        error = _schema_error(schema, parsed) if schema else None
        if error:
            return Verdict(False, 0.0, f"{name}: {error}")
    return Verdict(True, 1.0, "")


def _schema_error(schema: dict[str, Any], value: Any) -> str | None:
    import jsonschema
    from referencing.exceptions import Unresolvable

    try:
        found = _validator(json.dumps(schema)).iter_errors(value)
        error = jsonschema.exceptions.best_match(found)
    except Unresolvable as exc:  # only a schema that skipped validation can get here
        return f"$ref {str(exc)[:100]!r} does not resolve within the schema (nothing is fetched)"
    except RecursionError:
        return "the value is nested too deeply to validate"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"


def make_python_check(folder: Path) -> CheckFn:
    """`module:function` from the suite's folder, called as function(output, record).

    This runs the suite author's code: only use suites you trust. The function returns a
    bool, a number in 0..1, a (bool, reason) pair, or a dict with pass / score / reason.
    Any exception becomes the check's failure reason; the run goes on.
    """

    def check(arg: str, output: str, record: Record) -> Verdict:
        try:
            function = _load_function(str(folder), arg)
            return _as_verdict(function(output, dict(record)))
        except Exception as exc:
            return Verdict(False, 0.0, f"python {arg}: {type(exc).__name__}: {exc}")

    return check


@cache
def _load_function(folder: str, ref: str) -> Callable[..., Any]:
    module_name, function_name = ref.split(":", 1)
    path = Path(folder, *module_name.split(".")).with_suffix(".py")
    if not path.is_file():
        raise ImportError(f"no module file {path}")
    spec = importlib.util.spec_from_file_location(f"evalkit_user_{module_name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise AttributeError(f"{path} has no function {function_name}")
    return function  # type: ignore[no-any-return]


def _as_verdict(value: Any) -> Verdict:
    if isinstance(value, Verdict):
        return value
    if isinstance(value, bool):
        return Verdict(value, float(value), "" if value else "returned False")
    if isinstance(value, int | float):
        score = max(0.0, min(1.0, float(value)))
        return Verdict(score >= 0.5, score, "" if score >= 0.5 else f"score {score:.2f}")
    if isinstance(value, tuple) and len(value) == 2:
        passed, reason = value
        return Verdict(bool(passed), float(bool(passed)), str(reason))
    if isinstance(value, dict) and "pass" in value:
        passed = bool(value["pass"])
        score = float(value.get("score", float(passed)))
        return Verdict(passed, score, str(value.get("reason", "")))
    raise TypeError(f"returned {type(value).__name__}; expected bool, number, tuple or dict")


CHECKS: dict[str, CheckFn] = {
    "equals": equals,
    "contains": contains,
    "icontains": icontains,
    "not_contains": not_contains,
    "starts_with": starts_with,
    "ends_with": ends_with,
    "contains_any": contains_any,
    "contains_all": contains_all,
    "match": match,
    "regex": regex,
    "is_json": is_json,
    "json_schema": json_schema,
    "json_path": json_path,
    "finish_reason": finish_reason,
    "max_completion_tokens": _at_most("completion_tokens", " tokens"),
    "max_latency_ms": _at_most("latency_s", " ms", 1000.0),
    "max_latency_s": _at_most("latency_s", " s"),
    "max_cost_usd": _at_most("cost_usd", " USD"),
    "similarity": similarity,
    "tool_call": tool_call,
    "tool_args_valid": tool_args_valid,
}


def evaluate(check: Check, output: str, record: Record, folder: Path | None = None) -> Verdict:
    """The verdict of one (rendered) check on one output; never raises for a bad output."""
    if check.kind == "python":
        verdict = make_python_check(folder or Path("."))(check.arg, output, record)
    else:
        function = CHECKS.get(check.kind)
        if function is None:
            raise ValueError(f"check {check.kind!r} is not scored here")
        verdict = function(check.arg, output, record)
    if check.negate:
        reason = "" if not verdict.passed else f"negated {check.kind} passed"
        return Verdict(not verdict.passed, 1.0 - verdict.score, reason)
    return verdict


def combine(
    results: Mapping[str, tuple[bool, float]], meta: Mapping[str, tuple[float, bool]]
) -> tuple[bool, float]:
    """`passed`: every required check passed; `score`: the weighted mean of check scores.

    `results` holds each check's (passed, score), `meta` its (weight, required).
    """
    passed = all(ok for name, (ok, _) in results.items() if meta[name][1])
    weight = sum(float(meta[name][0]) for name in results)
    if not weight:
        return passed, 1.0 if passed else 0.0
    return passed, sum(
        score * float(meta[name][0]) for name, (_, score) in results.items()
    ) / weight
