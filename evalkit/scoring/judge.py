"""The `judge` check: another model grades an output against a rubric.

The judge's request goes through the same sender as every other (limits, retries, journal;
see grading.py), so it is recorded with its usage and cost and linked to the sample it
grades. Its answer is read robustly: a final `VERDICT: PASS|FAIL` line, or `SCORE: x`
(0..1, or 0..10), and anything unreadable is a failed check whose reason quotes the answer,
never a crash.
"""

from __future__ import annotations

import re
from typing import Any

from evalkit.models.targets import Target
from evalkit.planning.plan import Request, build_body, endpoint_for
from evalkit.scoring.checks import Verdict, broken
from evalkit.suite.checkspec import JudgeArg
from evalkit.suite.params import Params
from evalkit.suite.render import Rendered
from evalkit.suite.spec import Case

SYSTEM = (
    "You grade an AI model's answer against a rubric. Think briefly, then end with one line: "
    "'VERDICT: PASS' if the answer meets the rubric, otherwise 'VERDICT: FAIL'."
)
# `[\s*]*`, one quantifier, not `\s*\**\s*`: the latter backtracks quadratically (seconds, on
# the event loop) over a long run of spaces in the judge's answer
_VERDICT = re.compile(r"verdict\s*[:=][\s*]*(pass|fail)", re.IGNORECASE)
_SCORE = re.compile(r"score\s*[:=][\s*]*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?", re.IGNORECASE)


def judge_request(
    judge: Target,
    arg: dict[str, Any],
    case: Case,
    variant: str,
    prompt: str,
    output: str,
    sample: int,
) -> Request:
    """The request asking `judge` to grade `output` (the answer to `prompt`)."""
    spec = JudgeArg.model_validate(arg)
    user = (
        f"Rubric:\n{spec.rubric}\n\nThe prompt the model saw:\n{prompt}\n\n"
        f"The model's answer:\n{output}"
    )
    rendered = Rendered(
        messages=((("role", "system"), ("content", SYSTEM)), (("role", "user"), ("content", user)))
    )
    if judge.info.kind == "completions":
        rendered = Rendered(prompt=f"{SYSTEM}\n\n{user}\n\nVERDICT:")
    endpoint = endpoint_for(rendered, judge.info)
    # the judge's own params win; a reasoning judge takes no temperature and reasons first
    reasoning = judge.info.reasoning
    defaults = Params(max_tokens=2048) if reasoning else Params(temperature=0, max_tokens=256)
    body = build_body(endpoint, judge.model, rendered, judge.params.over(defaults), reasoning)
    return Request.build(case, variant, judge, sample, endpoint, body, key_sample=0)


def parse_verdict(text: str, threshold: float = 0.5) -> Verdict:
    """The judge's answer as a verdict; an unreadable answer fails with the answer quoted."""
    verdicts = _VERDICT.findall(text)
    if verdicts:
        passed = verdicts[-1].lower() == "pass"
        return Verdict(passed, float(passed), "" if passed else f"judge: {_last_line(text)}")
    scores = _SCORE.findall(text)
    if scores:
        value, scale = scores[-1]
        score = float(value) / (float(scale) if scale else (10.0 if float(value) > 1 else 1.0))
        score = max(0.0, min(1.0, score))
        passed = score >= threshold
        return Verdict(
            passed, score, "" if passed else f"judge score {score:.2f} < {threshold:.2f}"
        )
    stripped = text.strip()
    if stripped.upper() in ("PASS", "FAIL"):
        passed = stripped.upper() == "PASS"
        return Verdict(passed, float(passed), "" if passed else "judge: FAIL")
    snippet = stripped[:80] + ("…" if len(stripped) > 80 else "")
    return broken(f"could not read a verdict from the judge's answer: {snippet!r}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-2] if len(lines) > 1 else lines[0])[:120] if lines else ""
