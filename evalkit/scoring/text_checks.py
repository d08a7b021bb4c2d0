"""Checks of the output's text (equals, contains, regex, similarity, ...) and of the row's
own fields (finish reason, tokens, latency, cost).

Arguments arrive already rendered for the case (`render.Renderer.check`). A regex runs with
the `regex` module, which can give up after a time limit: a suite's pattern may backtrack
for hours on a long output.
"""

from __future__ import annotations

from typing import Any

from evalkit.scoring.checks import CheckFn, Record, Verdict, ok, short, timed_out
from evalkit.suite.checkspec import CHECK_TIMEOUT_S


def equals(arg: Any, output: str, record: Record) -> Verdict:
    spec = arg if isinstance(arg, dict) else {"value": arg, "strip": True, "ignore_case": False}
    want, got = str(spec["value"]), output
    if spec.get("strip", True):
        want, got = want.strip(), got.strip()
    if spec.get("ignore_case"):
        want, got = want.casefold(), got.casefold()
    return ok(got == want, f"expected {short(want)}, got {short(got)}")


def contains(arg: str, output: str, record: Record) -> Verdict:
    return ok(arg in output, f"{short(arg)} not found in output")


def icontains(arg: str, output: str, record: Record) -> Verdict:
    return ok(arg.casefold() in output.casefold(), f"{short(arg)} not found (any case)")


def not_contains(arg: str, output: str, record: Record) -> Verdict:
    return ok(arg not in output, f"output contains {short(arg)}")


def starts_with(arg: str, output: str, record: Record) -> Verdict:
    return ok(output.startswith(arg), f"output does not start with {short(arg)}")


def ends_with(arg: str, output: str, record: Record) -> Verdict:
    return ok(output.endswith(arg), f"output does not end with {short(arg)}")


def contains_any(arg: list[str], output: str, record: Record) -> Verdict:
    return ok(any(a in output for a in arg), f"none of {arg!r} found")


def contains_all(arg: list[str], output: str, record: Record) -> Verdict:
    missing = [a for a in arg if a not in output]
    score = 1 - len(missing) / len(arg) if arg else 1.0
    return Verdict(not missing, score, f"missing {missing!r}" if missing else "")


def match(arg: str | list[str], output: str, record: Record) -> Verdict:
    """OpenAI Evals' Match: the output starts with one of the ideal answers."""
    ideals = [arg] if isinstance(arg, str) else arg
    stripped = output.strip()
    return ok(
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
    return ok(found is not None, f"no match for /{arg}/")


def finish_reason(arg: str | list[str], output: str, record: Record) -> Verdict:
    allowed = [arg] if isinstance(arg, str) else arg
    got = record.get("finish_reason")
    return ok(got in allowed, f"finish_reason {got!r}, expected {' or '.join(allowed)}")


def at_most(field: str, unit: str, scale: float = 1.0) -> CheckFn:
    def check(arg: float, output: str, record: Record) -> Verdict:
        value = record.get(field)
        if value is None or value != value:  # missing or NaN
            return Verdict(False, 0.0, f"{field} unknown")
        value = float(value) * scale
        return ok(value <= arg, f"{value:g}{unit} > {arg:g}{unit}")

    return check


def similarity(arg: Any, output: str, record: Record) -> Verdict:
    """Normalised edit-distance similarity to an expected text, with a pass threshold."""
    from rapidfuzz.distance import Levenshtein

    spec = arg if isinstance(arg, dict) else {"value": arg, "threshold": 0.8}
    score = float(Levenshtein.normalized_similarity(output.strip(), str(spec["value"]).strip()))
    threshold = float(spec.get("threshold", 0.8))
    return Verdict(score >= threshold, score, f"similarity {score:.2f} < {threshold:.2f}")
