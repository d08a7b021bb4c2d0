"""Judge and moderation checks: one more request per graded sample, journaled with its verdict.

The grading request goes through the same sender as every other (cache, budget, limits,
retries), so it is recorded with its usage and cost. Its answer becomes a verdict here, with
the one negation rule of every check (`checks.negated`); a failed call is a failed check.
judge.py and moderation.py build the requests and read the answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

from evalkit.execution.send import Paced, Sender, Tally
from evalkit.models.targets import Target
from evalkit.planning.plan import Group, Request
from evalkit.records.entries import ChoiceRecord, JudgeEntry, RequestEntry, judge_entry
from evalkit.records.store import RunDir
from evalkit.scoring.checks import Verdict, broken, negated
from evalkit.scoring.judge import judge_request, parse_verdict
from evalkit.scoring.moderation import moderation_request, moderation_spec, parse_result
from evalkit.suite.checkspec import GRADED_BY_A_MODEL, Check, JudgeArg
from evalkit.suite.images import content_text


def grader_model(check: Check) -> str:
    """The provider/model that grades a judge or moderation check."""
    if check.kind == "judge":
        return JudgeArg.model_validate(check.arg).model
    return moderation_spec(check.arg).model


def grading_request(
    check: Check, grader: Target, group: Group, prompt: str, output: str, sample: int
) -> Request:
    """The request asking `grader` about sample `sample` of `group` (its text `output`)."""
    if check.kind == "judge":
        return judge_request(grader, check.arg, group.case, group.variant, prompt, output, sample)
    return moderation_request(grader, group.case, group.variant, output, sample)


def verdict_of(check: Check, result: RequestEntry) -> Verdict:
    """The grading call's answer as the check's verdict, negated for `{not: ...}`."""
    text = ((result.get("choices") or [{}])[0]).get("text") or ""
    verdict: Verdict
    if result.get("error_type"):
        verdict = broken(f"{check.kind} call failed: {result.get('error')}")
    elif check.kind == "judge":
        verdict = parse_verdict(text, JudgeArg.model_validate(check.arg).threshold)
    else:
        verdict = parse_result(text, check.arg)
    return negated(check, verdict)


class Grader:
    """Grades the kept samples of a run's groups with its judge and moderation models."""

    def __init__(
        self,
        judges: Mapping[str, Paced],
        sender: Sender,
        run: RunDir,
        tally: Tally,
        judged: Mapping[str, JudgeEntry] | None = None,
    ) -> None:
        self.judges = judges  # by provider/model
        self.sender = sender
        self.run = run
        self.tally = tally
        self.judged = judged or {}  # what an earlier session graded, by request key

    async def grade_group(self, group: Group, picked: Mapping[int, ChoiceRecord]) -> None:
        """Every model-graded check of `group` on each picked sample (number -> choice)."""
        graded = {n: c for n, c in group.checks.items() if c.kind in GRADED_BY_A_MODEL}
        if not graded or not picked:
            return
        prompt = prompt_text(group)
        await asyncio.gather(
            *(
                self.grade(group, name, check, number, prompt, choice.get("text") or "")
                for number, choice in picked.items()
                for name, check in graded.items()
            )
        )

    async def grade(
        self, group: Group, name: str, check: Check, number: int, prompt: str, output: str
    ) -> None:
        """One grading request (unless an earlier session made it), journaled and counted."""
        target, provider, limits = self.judges[grader_model(check)]
        request = grading_request(check, target, group, prompt, output, number)
        prior = self.judged.get(request.key)
        if prior is not None and prior.get("check") == name:
            return
        sent = await self.sender.send(request, provider, limits)
        slot = (group.case.key, group.variant, group.target.label)
        verdict = verdict_of(check, sent.entry)
        self.run.append(
            judge_entry(sent.entry, slot, target.label, number, name, verdict), sent.choices
        )
        self.tally.account(target, sent.entry, judge=True)


def prompt_text(group: Group) -> str:
    """The prompt the model saw, as text for a judge."""
    if group.rendered.is_chat:
        return "\n".join(
            f"{m['role']}: {content_text(m.get('content')) or json.dumps(m.get('tool_calls'))}"
            for m in group.rendered.message_dicts()
        )
    return (group.rendered.prompt or "") + (
        f"[insert here]{group.rendered.suffix}" if group.rendered.suffix is not None else ""
    )
