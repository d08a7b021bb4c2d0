"""evalkit.planning.planner: one planning pass per run, shared by validation, the estimate, resume and
every model's stream; each case rendered once, its renders held only while a stream needs them.

`Planner.renders` counts what was rendered; the streams are pulled the way the run's
workers pull them (one stream per model, interleaved).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import zip_longest
from typing import Any

import pytest

from evalkit.errors import TemplateError
from evalkit.execution.prepare import validated_targets
from evalkit.execution.settings import RunSettings
from evalkit.models.targets import Target, resolve
from evalkit.planning.estimate import estimate
from evalkit.planning.plan import Group
from evalkit.planning.planner import Planner, plan
from evalkit.planning.validate import validated
from evalkit.suite.spec import Suite

MODELS = ["openai/gpt-4o-mini", "openai/gpt-3.5-turbo-instruct"]
ENV = {"OPENAI_BASE_URL": "https://api.example.test/v1", "OPENAI_API_KEY": "sk-test"}
CASES = 7


def suite(**fields: Any) -> Suite:
    """CASES cases, two variants, a suite check and a case check, all templated."""
    data: dict[str, Any] = {
        "models": MODELS,
        "variants": {"terse": {"prompt": "Say {{ word }}"}, "long": {"prompt": "Say {{ word }}!"}},
        "checks": [{"contains": "{{ word }}"}],
        "cases": [
            {"id": f"c{i}", "vars": {"word": f"w{i}"}, "expect": [{"equals": "{{ word }}"}]}
            for i in range(CASES)
        ],
    }
    return Suite.model_validate({**data, **fields})


def targets(s: Suite) -> list[Target]:
    return [resolve(spec, s.endpoints, ENV) for spec in s.models]


def run_streams(planner: Planner, models: list[Target]) -> list[Group]:
    """Every model's stream pulled in turn, as the run's workers pull them."""
    streams: list[Iterator[Group]] = [planner.groups(t) for t in models]
    pulled = [g for step in zip_longest(*streams) for g in step if g is not None]
    assert planner.held == 0  # every stream passed every case: nothing is kept
    return pulled


def test_a_two_model_run_renders_each_prompt_once_per_variant_and_each_check_once() -> None:
    s = suite()
    problems, planner = validated(s, environ=ENV)
    assert problems == []
    assert planner.renders.prompts == CASES * 2  # once per case × variant, not per model
    assert planner.renders.checks == CASES * 2  # once per case × check, not per model
    assert planner.held == CASES  # validation's renders wait for the run
    pulled = run_streams(planner, planner.targets)
    assert len(pulled) == CASES * 2 * 2
    assert (planner.renders.prompts, planner.renders.checks) == (CASES * 2, CASES * 2)
    # the rendered checks are the same objects for every model and variant of a case
    first = [g for g in pulled if g.case.key == "c0"]
    assert len({id(g.checks) for g in first}) == 1
    assert first[0].checks["equals"].arg == "w0" and first[0].checks["contains"].arg == "w0"


def test_the_runs_validation_hands_its_planner_to_the_run() -> None:
    """`prepare.validated_targets` (what a run and a dry run validate with) returns the planner the
    streams then use, with what validation rendered."""
    s = suite()
    models, planner = validated_targets(s, RunSettings(environ=ENV, concurrency=3))
    assert [t.concurrency for t in models] == [3, 3]
    rendered = planner.renders.prompts
    run_streams(planner, models)
    assert planner.renders.prompts == rendered == CASES * 2


def test_resume_and_the_estimate_reuse_validations_renders() -> None:
    s = suite()
    _, planner = validated(s, environ=ENV)
    keys = planner.first_round_keys()
    estimates = estimate(planner)
    assert [e.requests for e in estimates] == [CASES * 2, CASES * 2]
    run_streams(planner, planner.targets)
    assert planner.renders.prompts == CASES * 2 and planner.renders.checks == CASES * 2
    # the keys resume compares are those the run sends
    for target in planner.targets:
        for request in plan(s, target):
            slot = (request.case.key, request.variant, target.label)
            assert request.key in keys[slot]


def test_a_stream_that_runs_ahead_holds_its_renders_for_the_others() -> None:
    s = suite()
    models = targets(s)
    planner = Planner(s, models)  # nothing validated: the first stream renders
    fast = list(planner.groups(models[0]))
    assert planner.held == CASES  # kept for the slower model
    slow = list(planner.groups(models[1]))
    assert planner.held == 0 and len(fast) == len(slow) == CASES * 2
    assert planner.renders.prompts == CASES * 2


def test_what_is_held_is_bounded_and_past_the_bound_a_case_is_rendered_again() -> None:
    s = suite()
    _, planner = validated(s, environ=ENV, keep=0)
    assert planner.held == 0
    pulled = run_streams(planner, planner.targets)
    assert planner.renders.prompts == 3 * CASES * 2  # validation, then each model's stream
    assert [g.rendered.prompt for g in pulled[:2]] == ["Say w0", "Say w0"]


def test_tool_definitions_are_rendered_once_per_case_for_all_models() -> None:
    tools = [{"type": "function", "function": {"name": "look", "description": "{{ word }}"}}]
    s = suite(models=["openai/gpt-4o-mini", "openai/gpt-4o"], params={"tools": tools})
    _, planner = validated(s, environ=ENV)
    pulled = run_streams(planner, planner.targets)
    assert planner.renders.tools == CASES
    described = {g.params.tools[0].function.description for g in pulled if g.case.key == "c3"}  # type: ignore[index]
    assert described == {"w3"}


def test_collecting_walk_records_failures_and_goes_on_while_a_stream_raises() -> None:
    s = suite(
        variants=None,
        prompt="Say {{ word }}",
        checks=[],
        cases=[{"id": "bad", "vars": {}}, {"id": "good", "vars": {"word": "x"}}],
    )
    planner = Planner(s, targets(s))
    walked = list(planner.walk(collect=True))
    assert [(p.case.key, len(p.groups)) for p in walked] == [("bad", 0), ("good", 2)]
    (failure,) = walked[0].failures
    assert failure.stage == "prompt" and isinstance(failure.error, TemplateError)
    with pytest.raises(TemplateError, match="undefined"):
        list(Planner(s, targets(s)).groups(targets(s)[0]))
