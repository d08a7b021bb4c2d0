"""What a journal line or a cached answer must look like for evalkit to read it back.

The journal and the cache are files that a crash, another program or a person can change.
A line or row that is JSON but not what evalkit writes (`{}`, a request without its key, a
sample that is not a number, a retire line without slots) is skipped with a warning where it
is read, so `--resume` and `load_run` never fail on it and never turn it into a row. Token
counts and costs are only checked for their type here: `records.fold`, which every reader
goes through, makes a negative or impossible value unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

MAX_CHOICES = 128  # the API's largest `n`
MAX_SAMPLE = 10**9  # far beyond `samples` (1000) times any number of resampling rounds
_INT64 = 2**63 - 1

Rule = tuple[Callable[[Any], bool], str]  # a test and, for the warning, what it expects


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _range(low: int, high: int) -> Rule:
    return (lambda v: _whole(v) and low <= v <= high), f"a whole number from {low} to {high}"


def _optional(rule: Rule) -> Rule:
    test, what = rule
    return (lambda v: v is None or test(v)), f"{what} or null"


def _list(rule: Rule, length: int | None = None, most: int = MAX_SAMPLE) -> Rule:
    test, what = rule

    def check(value: Any) -> bool:
        if not isinstance(value, list) or len(value) > most:
            return False
        return (length is None or len(value) == length) and all(test(v) for v in value)

    size = f"{length} " if length is not None else ""
    return check, f"a list of {size}({what})"


def _iso_time(value: Any) -> bool:
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _verdicts(value: Any) -> bool:
    """A choice's checks: `{name: [passed, score, reason]}`."""
    return isinstance(value, dict) and all(
        isinstance(v, list)
        and len(v) == 3
        and isinstance(v[0], bool)
        and _number(v[1])
        and (v[2] is None or isinstance(v[2], str))
        for v in value.values()
    )


def _weights(value: Any) -> bool:
    """A request's `check_meta`: `{name: [weight, required]}`."""
    return isinstance(value, dict) and all(
        isinstance(v, list) and len(v) == 2 and _number(v[0]) and isinstance(v[1], bool)
        for v in value.values()
    )


TEXT: Rule = (lambda v: isinstance(v, str), "text")
NUMBER: Rule = (_number, "a number")
FLAG: Rule = (lambda v: isinstance(v, bool), "true or false")
INT64: Rule = (lambda v: _whole(v) and -_INT64 <= v <= _INT64, "a whole number")
SAMPLE = _range(0, MAX_SAMPLE)
TIME: Rule = (_iso_time, "an ISO 8601 time")
COUNT: Rule = (_whole, "a whole number")  # records.fold judges its size
CALLS: Rule = (
    lambda v: (
        isinstance(v, list)
        and all(isinstance(c, dict) and isinstance(c.get("arguments", ""), str | None) for c in v)
    ),
    "a list of tool calls",
)

_CHOICE: dict[str, Rule] = {
    "index": _range(0, MAX_CHOICES - 1),
    "text": _optional(TEXT),
    "finish_reason": _optional(TEXT),
    "tool_calls": _optional(CALLS),
    "checks": _optional((_verdicts, "a mapping of check names to verdicts")),
}


def _choice_problem(choice: Any) -> str | None:
    if not isinstance(choice, dict):
        return "a choice that is not an object"
    return _fields_problem(choice, {}, _CHOICE)


CHOICES: Rule = (
    lambda v: isinstance(v, list) and len(v) <= MAX_CHOICES and not any(map(_choice_problem, v)),
    f"a list of at most {MAX_CHOICES} choices",
)

# the fields of a request line and of a cached answer, both optional unless listed as required
_ANSWER: dict[str, Rule] = {
    "choices": _optional(CHOICES),
    "prompt_tokens": _optional(COUNT),
    "completion_tokens": _optional(COUNT),
    "cached_tokens": _optional(COUNT),
    "reasoning_tokens": _optional(COUNT),
    "latency_s": _optional(NUMBER),
    "ttft_s": _optional(NUMBER),
    "system_fingerprint": _optional(TEXT),
}
_SLOT: dict[str, Rule] = {"case_id": TEXT, "model": TEXT}
_REQUEST: dict[str, Rule] = {
    **_ANSWER,
    "variant": TEXT,
    "model_id": _optional(TEXT),
    "endpoint": _optional(TEXT),
    "n": _range(1, MAX_CHOICES),
    "round": _range(0, MAX_SAMPLE),
    "attempts": _optional(_range(0, MAX_SAMPLE)),
    "seed": _optional(INT64),
    "max_tokens": _optional(INT64),
    "started_at": _optional(TIME),
    "error_type": _optional(TEXT),
    "batch_id": _optional(TEXT),
    "cost_usd": _optional(NUMBER),
    "charged_usd": _optional(NUMBER),
    "check_meta": _optional((_weights, "a mapping of check names to weights")),
}
_KINDS: dict[str | None, tuple[dict[str, Rule], dict[str, Rule]]] = {  # (required, optional)
    None: ({"key": TEXT, **_SLOT, "sample": SAMPLE}, _REQUEST),
    "select": (
        {**_SLOT, "samples": _list(SAMPLE), "selected": _list(SAMPLE)},
        {"variant": TEXT},
    ),
    "judge": (
        {
            "key": TEXT,
            **_SLOT,
            "sample": SAMPLE,
            "check": TEXT,
            "passed": FLAG,
            "score": NUMBER,
            "reason": _optional(TEXT),
        },
        {"variant": TEXT, "cost_usd": _optional(NUMBER), "charged_usd": _optional(NUMBER)},
    ),
    "retire": ({"slots": _list(_list(TEXT, length=3))}, {}),
    "batch": (
        {"event": TEXT, "file_id": TEXT},
        {
            "model": TEXT,
            "endpoint": TEXT,
            "keys": _list(TEXT, most=50_000),
            "batch_id": TEXT,
            "status": TEXT,
        },
    ),
}


def journal_problem(entry: Any) -> str | None:
    """Why `entry` (a parsed journal line) is not a journal entry, or None when it is one."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    kind = entry.get("kind")
    if not (kind is None or isinstance(kind, str)) or kind not in _KINDS:
        return f"unknown kind {kind!r}"
    required, optional = _KINDS[kind]
    return _fields_problem(entry, required, optional)


def answer_problem(answer: Any) -> str | None:
    """Why `answer` (a parsed cache row) is not an answer, or None when it is one."""
    if not isinstance(answer, dict):
        return "not a JSON object"
    if not answer.get("choices"):
        return "no choices"
    return _fields_problem(answer, {}, _ANSWER)


def _fields_problem(
    record: dict[str, Any], required: dict[str, Rule], optional: dict[str, Rule]
) -> str | None:
    for name, (test, what) in [*required.items(), *optional.items()]:
        if name not in record:
            if name in required:
                return f"no {name!r}"
            continue
        if not test(record[name]):
            return f"{name!r} is not {what}"
    return None
