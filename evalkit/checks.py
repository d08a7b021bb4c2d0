"""The check catalogue: each check is a small pure function of (argument, output, record).

Every check returns a `Verdict`: pass or fail, a score in 0..1, and a one-line reason that a
report can show next to a failure. Arguments arrive already rendered for the case
(`render.Renderer.check`). The `judge` check needs a model call and is scored by the runner
(`judge.py`); `python` runs trusted code from the suite's folder. Which checks run where, and
under what time limit, is `scoring.py`'s business.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import numbers
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from evalkit.checkspec import CHECK_TIMEOUT_S, Check, offline_registry

MAX_REASON_CHARS = 1000  # a check's reason is one line in a report, whatever a check returns


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    score: float
    reason: str
    error: bool = False  # the check could not be evaluated (an exception, a time-out)


def broken(reason: str) -> Verdict:
    """A check that could not be evaluated: it fails, negated or not."""
    return Verdict(False, 0.0, reason[:MAX_REASON_CHARS], error=True)


def timed_out(limit_s: float) -> Verdict:
    return broken(f"timed out after {limit_s:g} s")


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


def regex(arg: str, output: str, record: Record, timeout_s: float = CHECK_TIMEOUT_S) -> Verdict:
    """`regex` rather than `re`: it can give up after `timeout_s` and lets other threads run."""
    import regex as regex_module  # imported when needed: `evalkit` starts faster

    try:
        found = regex_module.search(arg, output, timeout=timeout_s)
    except TimeoutError:
        return timed_out(timeout_s)
    return _ok(found is not None, f"no match for /{arg}/")


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
    """A validator that never fetches a `$ref` and whose `pattern` can give up (see regex)."""
    import jsonschema

    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern})
    return cls(json.loads(schema_json), registry=offline_registry())


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    import regex as regex_module
    from jsonschema import ValidationError

    if not validator.is_type(instance, "string"):
        return
    try:
        found = regex_module.search(pattern, instance, timeout=CHECK_TIMEOUT_S)
    except regex_module.error as exc:
        yield ValidationError(f"pattern {pattern!r} cannot be run: {exc}")
        return
    if found is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


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
    except TimeoutError:
        return f"a pattern took more than {CHECK_TIMEOUT_S:g} s"
    except RecursionError:
        return "the value is nested too deeply to validate"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"


def load_module(folder: Path, name: str) -> ModuleType | str:
    """The module `name` (`a.b`: `a/b.py` under `folder`), or why it could not be loaded.

    This runs the suite author's code: only use suites you trust. Whatever the module raises
    while it loads (SystemExit included) is returned as the reason, never raised.
    """
    path = Path(folder, *name.split(".")).with_suffix(".py")
    spec_name = f"evalkit_user_{name}"
    try:
        if not path.is_file():
            return f"ImportError: no module file {path}"
        spec = importlib.util.spec_from_file_location(spec_name, path)
        if spec is None or spec.loader is None:
            return f"ImportError: cannot load {path}"
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec_name] = module  # dataclasses and pickle look their module up here
        spec.loader.exec_module(module)
        return module
    except BaseException as exc:
        sys.modules.pop(spec_name, None)
        return _describe(exc)


def call_python(module: ModuleType | str, ref: str, output: str, record: Record) -> Verdict:
    """`module:function` called as function(output, record), its answer read by the contract
    of `as_verdict`. Anything it raises, SystemExit and KeyboardInterrupt included, is this
    check's failure: a check never ends the run or decides its exit code."""
    try:
        if isinstance(module, str):
            return broken(f"python {ref}: {module}")
        function = getattr(module, ref.split(":", 1)[1], None)
        if not callable(function):
            return broken(
                f"python {ref}: AttributeError: {module.__file__} has no function "
                f"{ref.split(':', 1)[1]}"
            )
        return as_verdict(function(output, copy.deepcopy(dict(record))))  # its own copy
    except BaseException as exc:
        return broken(f"python {ref}: {_describe(exc)}")


def as_verdict(value: Any) -> Verdict:
    """A python check's answer: a bool; a finite real number (clamped to 0..1, passing at 0.5);
    a (bool, reason) pair; or a dict with a bool `pass` and optional `score` (a finite real
    number, clamped) and `reason`. Anything else raises TypeError or ValueError."""
    flag = _as_bool(value)
    if flag is not None:
        return Verdict(flag, float(flag), "" if flag else "returned False")
    if isinstance(value, numbers.Real):
        score = _as_score(value, "returned")
        return Verdict(score >= 0.5, score, "" if score >= 0.5 else f"score {score:.2f}")
    if isinstance(value, tuple) and len(value) == 2:
        passed = _as_bool(value[0])
        if passed is None:
            raise TypeError(f"returned ({type(value[0]).__name__}, ...); the first must be a bool")
        return Verdict(passed, float(passed), _text(value[1]))
    if isinstance(value, Mapping) and "pass" in value:
        passed = _as_bool(value["pass"])
        if passed is None:
            raise TypeError(f"'pass' is {type(value['pass']).__name__}; expected a bool")
        score = float(passed)
        if value.get("score") is not None:
            score = _as_score(value["score"], "'score' is")
        return Verdict(passed, score, _text(value.get("reason") or ""))
    raise TypeError(
        f"returned {type(value).__name__}; expected a bool, a number, a (bool, reason) pair "
        "or a dict with 'pass'"
    )


def _as_bool(value: Any) -> bool | None:
    """True or False for a bool (numpy's too), None for anything else."""
    if isinstance(value, bool):
        return value
    dtype = getattr(value, "dtype", None)
    if getattr(dtype, "kind", None) == "b" and getattr(value, "shape", None) == ():
        return bool(value)
    return None


def _as_score(value: Any, what: str) -> float:
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{what} {type(value).__name__}; expected a number")
    score = float(value)
    if not math.isfinite(score):
        raise ValueError(f"{what} {score}; expected a finite number")
    return max(0.0, min(1.0, score))


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return text[:MAX_REASON_CHARS]


def _describe(exc: BaseException) -> str:
    """`Type: message`, even for an exception whose str() fails."""
    try:
        message = str(exc)
    except BaseException:
        message = "(its message could not be read)"
    return f"{type(exc).__name__}: {message}"[:MAX_REASON_CHARS] if message else type(exc).__name__


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
    """The verdict of one (rendered) check on one output; never raises for a bad output.

    This runs in the calling thread without a time limit, and loads a python check's module
    afresh: a run goes through `scoring.Scorer`, which does neither.
    """
    if check.kind == "python":
        module = load_module(folder or Path("."), check.arg.split(":", 1)[0])
        return negated(check, call_python(module, check.arg, output, record))
    if check.kind == "regex":
        return negated(check, regex(check.arg, output, record, check.time_limit))
    function = CHECKS.get(check.kind)
    if function is None:
        raise ValueError(f"check {check.kind!r} is not scored here")
    return negated(check, function(check.arg, output, record))


def negated(check: Check, verdict: Verdict) -> Verdict:
    """The verdict of `{not: check}`; a check that could not be evaluated still fails."""
    if not check.negate or verdict.error:
        return verdict
    reason = "" if not verdict.passed else f"negated {check.kind} passed"
    return Verdict(not verdict.passed, 1.0 - verdict.score, reason)


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
