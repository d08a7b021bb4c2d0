"""Which function scores each check kind, and the verdict of one check on one output.

`evaluate` is the plain way to score a check (tests, one-off use); a run goes through
`scoring.Scorer`, which puts slow kinds off the event loop with time limits and loads each
python check's module once.
"""

from __future__ import annotations

from pathlib import Path

from evalkit.scoring.checks import CheckFn, Record, Verdict, negated
from evalkit.scoring.json_checks import is_json, json_path, json_schema, tool_args_valid, tool_call
from evalkit.scoring.python_checks import call_python, load_module
from evalkit.scoring.text_checks import (
    at_most,
    contains,
    contains_all,
    contains_any,
    ends_with,
    equals,
    finish_reason,
    icontains,
    match,
    not_contains,
    regex,
    similarity,
    starts_with,
)
from evalkit.suite.checkspec import Check

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
    "max_completion_tokens": at_most("completion_tokens", " tokens"),
    "max_latency_ms": at_most("latency_s", " ms", 1000.0),
    "max_latency_s": at_most("latency_s", " s"),
    "max_cost_usd": at_most("cost_usd", " USD"),
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
