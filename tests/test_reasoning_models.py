"""Reasoning models: their output budget is `max_completion_tokens`, their temperature is 1,
and `reasoning_effort` is theirs alone; what they refuse is a located problem, not 400s."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from evalkit import ModelSpec, Params, SuiteError, check_suite, load_run, load_suite, run_suite
from evalkit.models.targets import resolve
from evalkit.planning.plan import Request
from evalkit.planning.planner import plan
from fake_openai import FakeOpenAI
from tests.conftest import run_settings
from tests.openapi_spec import assert_valid

Write = Callable[[str, str], Path]

O3 = "{id: openai/o3, kind: chat, context_window: 200000, reasoning: true}"


def _suite(model: str, params: str, extra: str = "", cases: int = 2) -> str:
    lines = [f"models: [{model}]", 'prompt: "Question {{ i }}"', f"params: {{{params}}}", extra]
    lines += ["cases:"] + [f"  - {{id: c{i}, vars: {{i: {i}}}}}" for i in range(cases)]
    return "\n".join(line for line in lines if line) + "\n"


def _requests(path: Path) -> list[Request]:
    suite = load_suite(path)
    target = resolve(suite.models[0], suite.endpoints, {"OPENAI_API_KEY": "sk-test"})
    return list(plan(suite, target))


def test_max_tokens_goes_to_a_reasoning_model_as_max_completion_tokens(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    path = write("s.yaml", _suite(O3, "max_tokens: 64, reasoning_effort: low"))
    for request in _requests(path):
        assert "max_tokens" not in request.body and "temperature" not in request.body
        assert request.body["max_completion_tokens"] == 64 and request.max_tokens == 64
        assert request.body["reasoning_effort"] == "low"
        assert_valid("chat", request.body)
    result = run_suite(load_suite(path), run_settings(tmp_path))
    assert result.status == "complete" and result.errors == 0  # the fake refuses max_tokens
    frame = load_run(result.run_dir)
    assert frame["max_tokens"].tolist() == [64, 64] and frame["error_type"].isna().all()


def test_max_completion_tokens_is_one_budget_with_max_tokens(write: Write) -> None:
    path = write("s.yaml", _suite("openai/gpt-4", "max_completion_tokens: 32"))
    [first, _] = _requests(path)
    assert first.body["max_tokens"] == 32 and "max_completion_tokens" not in first.body
    both = write("b.yaml", _suite("openai/gpt-4", "max_tokens: 16, max_completion_tokens: 32"))
    with pytest.raises(SuiteError, match="max_tokens or max_completion_tokens, not both"):
        load_suite(both)


def test_a_temperature_for_a_reasoning_model_is_a_located_problem(write: Write) -> None:
    path = write("s.yaml", _suite(O3, "max_tokens: 64, temperature: 0"))
    problems = check_suite(load_suite(path))
    assert [(p.line, "only the default temperature 1" in p.what) for p in problems] == [(3, True)]


def test_resample_temperature_for_a_reasoning_model_is_a_located_problem(write: Write) -> None:
    extra = "samples: 2\nresample_temperature: 0.7"
    path = write("s.yaml", _suite(O3, "max_tokens: 64", extra))
    problems = check_suite(load_suite(path))
    assert [p.line for p in problems] == [5]
    assert "resample_temperature" in problems[0].what


def test_reasoning_effort_on_a_model_that_does_not_reason_is_a_located_problem(
    write: Write,
) -> None:
    path = write("s.yaml", _suite("openai/gpt-4o", "reasoning_effort: high"))
    problems = check_suite(load_suite(path))
    assert [p.line for p in problems] == [3]
    assert "reasoning_effort is for reasoning models" in problems[0].what


def test_an_unknown_reasoning_effort_is_refused_where_it_is_written(write: Write) -> None:
    path = write("s.yaml", _suite(O3, "reasoning_effort: extreme"))
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    assert error.value.problems[0].line == 3


def test_a_reasoning_judge_takes_no_temperature() -> None:
    from evalkit.scoring.judge import judge_request
    from evalkit.suite.spec import Case

    judge = resolve(
        ModelSpec.model_validate(
            {"id": "openai/o3", "kind": "chat", "context_window": 200_000, "reasoning": True}
        ),
        {},
        {"OPENAI_API_KEY": "sk-test"},
    )
    request = judge_request(
        judge, {"model": "openai/o3", "rubric": "is it right?"}, Case(id="c"), "", "Q", "A", 0
    )
    assert "temperature" not in request.body and request.body["max_completion_tokens"] == 2048
    assert_valid("chat", request.body)


def test_the_fake_refuses_what_the_api_refuses(openai: FakeOpenAI) -> None:
    """The loopback server answers a reasoning model's max_tokens and temperature with the
    real API's 400s, so a body evalkit should not send fails a test."""
    import httpx

    url = f"{openai.url}/chat/completions"
    base = {"model": "o3", "messages": [{"role": "user", "content": "hi"}]}
    for extra, param in (({"max_tokens": 8}, "max_tokens"), ({"temperature": 0}, "temperature")):
        response = httpx.post(url, json={**base, **extra}, headers={"authorization": "Bearer x"})
        assert response.status_code == 400 and response.json()["error"]["param"] == param
    ok = httpx.post(
        url, json={**base, "max_completion_tokens": 8}, headers={"authorization": "Bearer x"}
    )
    assert ok.status_code == 200
    effort = {**base, "model": "gpt-4o", "reasoning_effort": "low"}
    assert httpx.post(url, json=effort, headers={"authorization": "Bearer x"}).status_code == 400


def test_params_take_reasoning_effort_values_from_the_official_description() -> None:
    for value in ("none", "minimal", "low", "medium", "high", "xhigh", "max"):
        assert Params.model_validate({"reasoning_effort": value}).reasoning_effort == value
