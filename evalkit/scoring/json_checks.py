"""Checks of structured output: JSON, a JSON Schema, a path into the JSON, and tool calls.

Schemas come from the suite and the output from a model, so validation is bounded: a `$ref`
never fetches anything (`checkspec.offline_registry`), a schema `pattern` can give up after
the check's time limit, and a value nested too deeply is a failed check, not a crash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

from evalkit.scoring.checks import Record, Verdict, ok
from evalkit.suite.checkspec import CHECK_TIMEOUT_S, offline_registry


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
    error = schema_error(arg, value)
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
    return ok(value == arg["equals"], f"{path} is {value!r}, expected {arg['equals']!r}")


def _calls(record: Record) -> list[dict[str, Any]]:
    return list(record.get("tool_calls") or [])


def tool_call(arg: Any, output: str, record: Record) -> Verdict:
    """The model called the expected tool (with these arguments), or none when `none`."""
    calls = _calls(record)
    if arg == "none":
        names = [c.get("name") for c in calls]
        return ok(not calls, f"expected no tool call, got {names}")
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
            error = schema_error(spec["schema"], parsed)
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
    declared.update(  # the Responses API's function tools are flat: {type, name, parameters}
        {
            t["name"]: t.get("parameters")
            for t in params.get("tools") or []
            if isinstance(t, dict) and "name" in t
        }
    )
    for call in _calls(record):
        name = call.get("name")
        if name not in declared:
            return Verdict(False, 0.0, f"called {name!r}, which is not a declared tool")
        try:
            parsed = json.loads(call.get("arguments") or "")
        except (ValueError, RecursionError) as exc:
            return Verdict(False, 0.0, f"{name}: arguments are not JSON ({exc})")
        schema = declared[name]
        error = schema_error(schema, parsed) if schema else None
        if error:
            return Verdict(False, 0.0, f"{name}: {error}")
    return Verdict(True, 1.0, "")


def schema_error(schema: dict[str, Any], value: Any) -> str | None:
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
