"""evalkit.scoring.grading: a judge's or moderation call's answer → the check's verdict, journaled.

The verdict rules are checked on entries built by hand (every way an answer can read); one
Grader round trip goes to the loopback fake's `/v1/moderations`, where what the server saw
and what the journal holds show that a grading call is sent once, linked to its sample, and
not sent again when an earlier session made it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from evalkit.execution.limits import ModelLimits
from evalkit.execution.send import Sender, SendSettings, Tally
from evalkit.models.targets import resolve
from evalkit.planning.plan import Group
from evalkit.planning.planner import Planner
from evalkit.providers.openai import OpenAIProvider, make_transport
from evalkit.records.entries import JudgeEntry, RequestEntry
from evalkit.records.store import RunDir, read_journal
from evalkit.scoring.grading import Grader, grader_model, prompt_text, verdict_of
from evalkit.suite.checkspec import Check
from evalkit.suite.endpoints import ModelSpec
from evalkit.suite.spec import Suite
from fake_openai import FakeOpenAI

JUDGE = {"model": "openai/gpt-4", "rubric": "polite?"}


def answered(text: str) -> RequestEntry:
    return {"key": "k", "choices": [{"index": 0, "text": text}], "cost_usd": 0.001}


def judge(negate: bool = False, threshold: float = 0.5) -> Check:
    return Check(kind="judge", arg={**JUDGE, "threshold": threshold}, negate=negate)


def moderation(negate: bool = False, **arg: Any) -> Check:
    return Check(kind="moderation", arg=arg or True, negate=negate)


def moderation_text(**categories: bool) -> str:
    return json.dumps({"flagged": any(categories.values()), "categories": categories})


def test_a_judge_verdict_line_decides() -> None:
    assert verdict_of(judge(), answered("Fine.\nVERDICT: PASS")).passed
    failed = verdict_of(judge(), answered("Rude.\nVERDICT: FAIL"))
    assert not failed.passed and failed.reason == "judge: Rude."


def test_a_judge_score_is_held_to_the_threshold() -> None:
    assert verdict_of(judge(threshold=0.6), answered("SCORE: 7/10")).passed
    low = verdict_of(judge(threshold=0.8), answered("SCORE: 7/10"))
    assert not low.passed and low.score == 0.7


def test_moderation_passes_unless_a_chosen_category_is_flagged() -> None:
    flagged = moderation_text(harassment=True, violence=False)
    assert not verdict_of(moderation(), answered(flagged)).passed
    assert verdict_of(moderation(categories=["violence"]), answered(flagged)).passed
    assert verdict_of(moderation(), answered(moderation_text(harassment=False))).passed


def test_negation_flips_a_verdict_of_either_kind() -> None:
    passed = verdict_of(judge(negate=True), answered("VERDICT: PASS"))
    assert not passed.passed and passed.reason == "negated judge passed"
    assert verdict_of(judge(negate=True), answered("VERDICT: FAIL")).passed
    flagged = answered(moderation_text(violence=True))
    assert verdict_of(moderation(negate=True), flagged).passed


def test_a_failed_or_unreadable_call_fails_even_when_negated() -> None:
    error: RequestEntry = {"key": "k", "error_type": "server_error", "error": "boom"}
    for check in (judge(), judge(negate=True), moderation(negate=True)):
        verdict = verdict_of(check, error)
        assert not verdict.passed and "call failed: boom" in verdict.reason
    garbled = verdict_of(judge(negate=True), answered("no idea"))
    assert not garbled.passed and "could not read a verdict" in garbled.reason
    assert not verdict_of(moderation(negate=True), answered("not json")).passed


def test_the_grader_of_each_check() -> None:
    assert grader_model(judge()) == "openai/gpt-4"
    assert grader_model(moderation()) == "openai/omni-moderation-latest"


def _group(server: FakeOpenAI) -> Group:
    suite = Suite.model_validate(
        {"prompt": [{"role": "user", "content": "Q"}], "checks": [{"moderation": True}]}
        | {"cases": [{"id": "c"}]}
    )
    target = resolve(ModelSpec(id="openai/gpt-4o"), {}, {"OPENAI_BASE_URL": server.url})
    (group,) = Planner(suite, [target]).groups(target)
    return group


def _grade(server: FakeOpenAI, run: RunDir, judged: dict[str, JudgeEntry], output: str) -> None:
    group = _group(server)
    grader_target = resolve(
        ModelSpec(id="openai/omni-moderation-latest"), {}, {"OPENAI_BASE_URL": server.url}
    )

    async def go() -> None:
        transport = make_transport(4)
        provider = OpenAIProvider(transport, server.url, "sk-test", 5.0)
        paced = {grader_target.id: (grader_target, provider, ModelLimits(2))}
        grader = Grader(paced, Sender(SendSettings()), run, Tally(), judged)
        try:
            await grader.grade_group(group, {3: {"index": 0, "text": output}})
        finally:
            await transport.aclose()

    asyncio.run(go())


def test_a_graded_sample_is_journaled_with_its_verdict_once(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    run = RunDir.create(tmp_path, "r", {})
    run.open_journal()
    _grade(openai, run, {}, "FLAG_ME now")
    run.close_journal()
    assert openai.count("/v1/moderations") == 1
    (entry,) = read_journal(run.path)
    assert entry["kind"] == "judge" and entry["check"] == "moderation"
    assert (entry["case_id"], entry["model"], entry["sample"]) == ("c", "openai/gpt-4o", 3)
    assert entry["judge_model"] == "openai/omni-moderation-latest"
    assert entry["passed"] is False and "harassment" in entry["reason"]

    openai.reset()
    run.open_journal()
    _grade(openai, run, {entry["key"]: entry}, "FLAG_ME now")  # an earlier session graded it
    run.close_journal()
    assert openai.count() == 0 and len(list(read_journal(run.path))) == 1


def test_the_judge_sees_the_prompt_as_text(openai: FakeOpenAI) -> None:
    assert prompt_text(_group(openai)) == "user: Q"
