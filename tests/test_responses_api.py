"""The Responses API (`kind: responses`): the bodies evalkit sends to /v1/responses follow
CreateResponse, its answers (whole and streamed) read onto the same records and checks as
chat, and what it cannot take is a located problem before anything is sent."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from evalkit import ModelSpec, check_suite, load_run, load_suite, run_suite
from evalkit.models.targets import resolve
from evalkit.planning.plan import Request
from evalkit.planning.planner import plan
from evalkit.planning.responses import responses_body
from evalkit.providers import Completion, ProviderError
from evalkit.providers.openai import OpenAIProvider
from fake_openai import FakeOpenAI
from tests.conftest import cli_env, run_evalkit, run_settings
from tests.openapi_spec import assert_valid

ROOT = Path(__file__).parent.parent
Write = Callable[[str, str], Path]

GPT41 = "{id: openai/gpt-4.1, kind: responses}"
O3 = "{id: openai/o3, kind: responses}"
CHAT = """
prompt:
  - {role: system, content: "You route tickets."}
  - {role: developer, content: "One word."}
  - {role: user, content: "{{ q }}"}
"""
TOOLS = """
  tools:
    - type: function
      function:
        name: add
        description: Add two numbers.
        parameters: {type: object, properties: {a: {type: number}, b: {type: number}}, required: [a, b]}
"""


def _suite(model: str, params: str = "max_tokens: 32", body: str = CHAT, cases: str = "") -> str:
    cases = cases or '  - {id: c0, vars: {q: "ANSWER: billing"}, expect: [{equals: billing}]}\n'
    return f"models: [{model}]\nparams:\n  {params}\n{body}\ncases:\n{cases}"


def _requests(path: Path, environ: dict[str, str] | None = None) -> list[Request]:
    suite = load_suite(path)
    target = resolve(suite.models[0], suite.endpoints, environ or {})
    return list(plan(suite, target))


def _problems(path: Path) -> list[str]:
    return [str(p) for p in check_suite(load_suite(path), environ={})]


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


# --------------------------------------------------------------------------- bodies


def test_a_chat_suite_becomes_instructions_and_input(write: Write) -> None:
    path = write(
        "s.yaml", _suite(GPT41, "{max_completion_tokens: 32, temperature: 0.2, top_p: 0.9}")
    )
    (request,) = _requests(path)
    assert request.endpoint == "responses"
    assert request.body == {
        "model": "gpt-4.1",
        "instructions": "You route tickets.\n\nOne word.",
        "input": [{"role": "user", "content": "ANSWER: billing"}],
        "max_output_tokens": 32,
        "temperature": 0.2,
        "top_p": 0.9,
        "store": False,
    }
    assert request.max_tokens == 32
    assert_valid("responses", request.body)


def test_a_string_prompt_is_one_user_input(write: Write) -> None:
    path = write("s.yaml", _suite(GPT41, "{stream: true}", 'prompt: "Q: {{ q }}"'))
    (request,) = _requests(path)
    assert request.body["input"] == [{"role": "user", "content": "Q: ANSWER: billing"}]
    assert "instructions" not in request.body and "stream_options" not in request.body
    assert request.body["stream"] is True
    assert_valid("responses", request.body)


def test_image_parts_become_input_images() -> None:
    """Chat content parts (text, image_url) as the Responses API's input parts."""
    image = "data:image/png;base64,iVBORw0KGgo="
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Describe images."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": image, "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
    ]
    body = responses_body("gpt-4.1", messages, {"max_tokens": 64})
    assert body["instructions"] == "Describe images."
    assert body["input"] == [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": image, "detail": "low"},
                {
                    "type": "input_image",
                    "image_url": "https://example.com/cat.png",
                    "detail": "auto",
                },
            ],
        },
        {"role": "assistant", "content": "A cat."},
    ]
    assert_valid("responses", body)


def test_tools_become_flat_function_tools(write: Write) -> None:
    params = (
        TOOLS
        + "  tool_choice: {type: function, function: {name: add}}\n  parallel_tool_calls: false"
    )
    path = write("s.yaml", _suite(GPT41, "max_tokens: 32" + params))
    (request,) = _requests(path)
    (tool,) = request.body["tools"]
    assert tool == {
        "type": "function",
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
        "strict": False,
    }
    assert request.body["tool_choice"] == {"type": "function", "name": "add"}
    assert request.body["parallel_tool_calls"] is False
    assert_valid("responses", request.body)


def test_a_multi_turn_tool_conversation_becomes_call_and_output_items(write: Write) -> None:
    body = """
prompt:
  - {role: user, content: "Add 2 and 3. {{ q }}"}
  - role: assistant
    tool_calls: [{id: call_1, type: function, function: {name: add, arguments: '{"a": 2, "b": 3}'}}]
  - {role: tool, tool_call_id: call_1, content: "5"}
  - {role: assistant, content: "It is 5."}
  - {role: user, content: "And doubled?"}
"""
    path = write("s.yaml", _suite(GPT41, "max_tokens: 32" + TOOLS, body))
    (request,) = _requests(path)
    assert request.body["input"][1:4] == [
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "add",
            "arguments": '{"a": 2, "b": 3}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "5"},
        {"role": "assistant", "content": "It is 5."},
    ]
    assert_valid("responses", request.body)


def test_a_reasoning_model_takes_reasoning_effort_and_no_temperature(write: Write) -> None:
    path = write("s.yaml", _suite(O3, "{max_tokens: 64, reasoning_effort: low}"))
    (request,) = _requests(path)
    assert request.body["reasoning"] == {"effort": "low"}
    assert request.body["max_output_tokens"] == 64
    assert "temperature" not in request.body and "reasoning_effort" not in request.body
    assert_valid("responses", request.body)
    hot = write("hot.yaml", _suite(O3, "{max_tokens: 64, temperature: 0}"))
    (problem,) = _problems(hot)
    assert f"hot.yaml:{_line_of(hot, 'params:')}: params:" in problem
    assert "reasoning model: it takes only the default temperature 1" in problem
    plain = write("plain.yaml", _suite(GPT41, "{max_tokens: 64, reasoning_effort: high}"))
    (problem,) = _problems(plain)
    assert "reasoning_effort is for reasoning models" in problem


def test_json_schema_response_format_becomes_text_format(write: Write) -> None:
    schema = "{type: json_schema, json_schema: {name: queue, strict: true, schema: {type: object}}}"
    path = write("s.yaml", _suite(GPT41, f"{{max_tokens: 32, response_format: {schema}}}"))
    (request,) = _requests(path)
    assert request.body["text"] == {
        "format": {
            "type": "json_schema",
            "name": "queue",
            "strict": True,
            "schema": {"type": "object"},
        }
    }
    assert_valid("responses", request.body)


def test_an_endpoint_of_kind_responses_keeps_what_the_catalogue_knows(write: Write) -> None:
    """`-m openai/gpt-4.1` on a suite whose `openai` endpoint says `kind: responses`: the
    model needs no declaring, its prices and reasoning stay the catalogue's."""
    endpoint = "endpoints:\n  openai: {base_url: 'http://127.0.0.1:9/v1', kind: responses}\n"
    path = write("s.yaml", endpoint + _suite("openai/gpt-4.1"))
    suite = load_suite(path)
    for name, reasoning in (("gpt-4.1", False), ("o3-mini", True)):
        target = resolve(ModelSpec(id=f"openai/{name}"), suite.endpoints, {})
        assert target.info.kind == "responses" and target.info.reasoning is reasoning
        assert target.info.input_per_mtok > 0 and target.base_url == "http://127.0.0.1:9/v1"
    moderation = resolve(ModelSpec(id="openai/omni-moderation-latest"), suite.endpoints, {})
    assert moderation.info.kind == "moderation"
    chat = resolve(ModelSpec(id="openai/gpt-4.1"), {}, {})
    assert chat.info.kind == "chat"  # without the suite saying so, the default stays chat


# --------------------------------------------------------------------------- located problems


def test_a_suffix_on_the_responses_api_is_a_located_problem(write: Write) -> None:
    path = write(
        "s.yaml", _suite(GPT41, "max_tokens: 32", 'prompt: "def f():"\nsuffix: "\\n    return 1"')
    )
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:{_line_of(path, 'suffix:')}: suffix:")
    assert "insert mode (suffix) needs the completions endpoint" in problem
    assert "kind: responses" in problem


@pytest.mark.parametrize(
    "param", ["stop: [END]", "n: 2", "logprobs: true", "presence_penalty: 0.5", "seed: 7"]
)
def test_a_chat_parameter_the_responses_api_lacks_is_a_located_problem(
    write: Write, param: str
) -> None:
    path = write("s.yaml", _suite(GPT41, f"{{max_tokens: 32, {param}}}"))
    (problem,) = _problems(path)
    name = param.split(":")[0]
    assert problem.startswith(f"{path}:{_line_of(path, 'params:')}: params:")
    assert f"{name}: not a parameter of the Responses API" in problem


def test_an_output_budget_under_16_is_a_located_problem(write: Write) -> None:
    path = write("s.yaml", _suite(GPT41, "max_tokens: 8"))
    (problem,) = _problems(path)
    assert "max_tokens 8 is below 16" in problem


def test_best_logprob_cannot_rank_responses(write: Write) -> None:
    path = write("s.yaml", "select: best_logprob\nsamples: 2\n" + _suite(GPT41))
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:1: select:") and "does not return" in problem


# --------------------------------------------------------------------------- end to end


def test_the_example_suite_runs_into_the_frame_and_the_report(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    result = run_evalkit(
        "run", str(ROOT / "suites" / "responses.yaml"), "--out", "runs", "--report",
        cwd=tmp_path, env=cli_env(openai.url),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    run_dir = Path(re.findall(r"run directory: (\S+)", result.stdout)[0])
    run_dir = run_dir if run_dir.is_absolute() else tmp_path / run_dir
    frame = load_run(run_dir).set_index(["case_id", "model"])
    assert frame["passed"].all() and frame["error"].isna().all()
    assert {r.path for r in openai.requests} == {"/v1/responses"}
    for r in openai.requests:
        assert r.body["store"] is False
        assert_valid("responses", r.body)
    capital = frame.loc[("capital", "openai/gpt-4.1-mini")]
    assert capital["output"] == "Paris" and capital["finish_reason"] == "stop"
    assert json.loads(capital["prompt"])[0] == {
        "role": "system",
        "content": "Answer in one word unless a tool is needed.",
    }
    reasoned = frame.loc[("capital", "openai/o4-mini")]
    assert reasoned["reasoning_tokens"] == 8 and reasoned["completion_tokens"] == 9
    weather = frame.loc[("weather", "openai/o4-mini")]
    assert weather["finish_reason"] == "tool_calls"
    assert json.loads(weather["tool_calls"])[0]["parsed"] == {"city": "Paris"}
    html = (run_dir / "report.html").read_text()
    assert "openai/o4-mini" in html and 'data-case="weather"' in html
    assert "system: Answer in one word unless a tool is needed." in html  # the prompt shown


def test_models_named_on_the_command_line_go_to_an_endpoint_of_kind_responses(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    """No model declared: `-m` names catalogue models, the suite's `openai` endpoint says
    they speak the Responses API; each is billed at its catalogue price."""
    endpoint = (
        f"endpoints:\n  openai: {{base_url: '{openai.url}', api_key_env: OPENAI_API_KEY, "
        "kind: responses}\n"
    )
    write("s.yaml", endpoint + _suite("openai/gpt-4", "max_tokens: 32"))
    models = ["openai/gpt-4.1", "openai/o3-mini", "openai/gpt-5"]
    args = [arg for model in models for arg in ("-m", model)]
    result = run_evalkit(
        "run", "s.yaml", *args, "--out", "runs", cwd=tmp_path, env=cli_env(openai.url)
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert sorted(r.body["model"] for r in openai.requests) == ["gpt-4.1", "gpt-5", "o3-mini"]
    assert {r.path for r in openai.requests} == {"/v1/responses"}
    (run_dir,) = (tmp_path / "runs").iterdir()
    frame = load_run(run_dir).set_index("model")
    assert (frame["cost_usd"] > 0).all() and frame["passed"].all()
    assert frame.loc["openai/gpt-5", "reasoning_tokens"] == 8
    assert frame.loc["openai/gpt-4.1", "reasoning_tokens"] == 0


def test_a_streamed_run_measures_time_to_first_token(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    cases = (
        '  - {id: c0, vars: {q: "ANSWER: billing"}, expect: [{equals: billing}]}\n'
        '  - {id: c1, vars: {q: "CALL: add {\\"a\\": 20, \\"b\\": 22}"}, expect: [{tool_call: {name: add, arguments: {a: 20, b: 22}}}]}\n'
    )
    path = write("s.yaml", _suite(GPT41, "max_tokens: 32\n  stream: true" + TOOLS, cases=cases))
    frame = load_run(run_suite(load_suite(path), run_settings(tmp_path)).run_dir)
    assert frame["passed"].all(), frame["check_reasons"].tolist()
    assert (frame["ttft_s"] > 0).all()
    assert frame.set_index("case_id")["finish_reason"].to_dict() == {
        "c0": "stop",
        "c1": "tool_calls",
    }
    assert all(r.body["stream"] is True for r in openai.requests)


def test_cached_and_reasoning_tokens_are_billed_at_their_prices(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.script(
        [
            {
                "usage": {
                    "input_tokens": 1000,
                    "input_tokens_details": {"cached_tokens": 600},
                    "output_tokens": 50,
                    "output_tokens_details": {"reasoning_tokens": 40},
                }
            }
        ]
    )
    path = write("s.yaml", _suite("{id: openai/gpt-4.1, kind: responses}"))
    row = load_run(run_suite(load_suite(path), run_settings(tmp_path)).run_dir).iloc[0]
    assert (row["prompt_tokens"], row["cached_tokens"]) == (1000, 600)
    assert (row["completion_tokens"], row["reasoning_tokens"]) == (50, 40)
    info = resolve(ModelSpec(id="openai/gpt-4.1"), {}, {}).info
    assert row["cost_usd"] == pytest.approx(info.cost(1000, 50, 600))


def test_length_raises_max_output_tokens(openai: FakeOpenAI, write: Write, tmp_path: Path) -> None:
    cases = '  - {id: c0, vars: {q: "LENGTH_UNTIL_MAX=40 ANSWER: billing"}}\n'
    path = write("s.yaml", "select: first_stop\n" + _suite(GPT41, "max_tokens: 16", cases=cases))
    frame = load_run(run_suite(load_suite(path), run_settings(tmp_path)).run_dir)
    sent = [r.body["max_output_tokens"] for r in openai.requests]
    assert sent == [16, 32, 64]
    assert "max_tokens" not in openai.requests[-1].body
    assert frame["finish_reason"].tolist() == ["length", "length", "stop"]
    assert frame["selected"].tolist() == [False, False, True]


def test_the_fake_refuses_what_the_real_api_refuses(openai: FakeOpenAI) -> None:
    base = {"model": "gpt-4.1", "input": "hi"}
    refused = [
        ({**base, "max_tokens": 32}, "max_tokens", "moved to 'max_output_tokens'"),
        ({**base, "stop": ["x"]}, "stop", "Unknown parameter"),
        ({"model": "o3", "input": "hi", "temperature": 0}, "temperature", "not supported"),
        ({**base, "reasoning": {"effort": "low"}}, "reasoning.effort", "not supported"),
        ({"input": "hi"}, "model", "Missing required parameter"),
        ({"model": "gpt-4.1"}, "input", "Missing required parameter"),
        ({**base, "max_output_tokens": 8}, "max_output_tokens", ">= 16"),
        ({**base, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools[0].name", ""),
    ]
    for body, param, words in refused:
        answer = httpx.post(f"{openai.url}/responses", json=body)
        assert answer.status_code == 400, body
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param
        assert words in error["message"]
    ok = httpx.post(f"{openai.url}/responses", json={**base, "max_output_tokens": 16})
    assert ok.status_code == 200 and ok.json()["status"] == "completed"


# --------------------------------------------------------------------------- parsing


def _complete(tmp_path: Path, payload: Any, stream: bool = False) -> Completion:
    """What the provider makes of `payload`: a JSON body, or SSE text when `stream`."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/responses"
        if stream:
            return httpx.Response(200, text=payload, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=payload)

    path = tmp_path / "s.yaml"
    path.write_text(_suite(GPT41, "{max_tokens: 32, stream: true}" if stream else "max_tokens: 32"))
    (request,) = _requests(path, {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})

    async def go() -> Completion:
        transport = httpx.MockTransport(handler)
        try:
            return await OpenAIProvider(transport, "http://127.0.0.1:9/v1", "sk-test").complete(
                request
            )
        finally:
            await transport.aclose()

    return asyncio.run(go())


def _response(status: str, **extra: Any) -> dict[str, Any]:
    text = {"type": "output_text", "text": "half an ans", "annotations": []}
    message = {"type": "message", "role": "assistant", "content": [text]}
    return {"object": "response", "status": status, "output": [message], **extra}


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("max_output_tokens", "length"), ("content_filter", "content_filter"), ("other", "other")],
)
def test_an_incomplete_response_maps_onto_finish_reason(
    tmp_path: Path, reason: str, finish: str
) -> None:
    payload = _response(
        "incomplete", incomplete_details={"reason": reason}, usage={"output_tokens": 32}
    )
    completion = _complete(tmp_path, payload)
    (choice,) = completion.choices
    assert (choice.text, choice.finish_reason) == ("half an ans", finish)
    assert completion.completion_tokens == 32


def test_a_failed_response_is_the_rows_error(tmp_path: Path) -> None:
    error = {"code": "invalid_prompt", "message": "refused"}
    with pytest.raises(ProviderError) as failed:
        _complete(tmp_path, {"status": "failed", "error": error, "output": []})
    assert failed.value.error_type == "response_failed" and not failed.value.retryable
    assert "invalid_prompt" in failed.value.message and "refused" in failed.value.message


@pytest.mark.parametrize(
    "payload",
    [
        [1, 2],
        "text",
        {"status": "in_progress", "output": []},
        {"output": []},
        {"status": "completed", "output": [{"type": "reasoning", "summary": []}]},
    ],
)
def test_a_malformed_response_is_a_bad_response(tmp_path: Path, payload: Any) -> None:
    with pytest.raises(ProviderError) as bad:
        _complete(tmp_path, payload)
    assert bad.value.error_type == "bad_response"


def test_odd_items_in_a_response_are_skipped(tmp_path: Path) -> None:
    payload = _response(
        "completed",
        output=[
            "junk",
            {"type": "reasoning", "summary": []},
            {"type": "message", "content": [{"type": "refusal", "refusal": "no"}, 7]},
            {"type": "message", "content": [{"type": "output_text", "text": "ok"}]},
        ],
        usage={"input_tokens": "many", "output_tokens_details": {"reasoning_tokens": True}},
    )
    completion = _complete(tmp_path, payload)
    assert completion.choices[0].text == "ok" and completion.choices[0].finish_reason == "stop"
    assert completion.prompt_tokens is None and completion.reasoning_tokens is None


def _sse(*events: dict[str, Any]) -> str:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)


def test_a_stream_error_event_is_an_error(tmp_path: Path) -> None:
    created = {"type": "response.created", "response": {"status": "in_progress"}}
    events = _sse(created, {"type": "error", "code": "server_error", "message": "overloaded"})
    with pytest.raises(ProviderError) as failed:
        _complete(tmp_path, events, stream=True)
    assert failed.value.retryable and "overloaded" in failed.value.message


def test_a_stream_without_its_final_event_is_truncated(tmp_path: Path) -> None:
    delta = {"type": "response.output_text.delta", "delta": "hal"}
    with pytest.raises(ProviderError) as cut:
        _complete(tmp_path, _sse({"type": "response.created"}, delta), stream=True)
    assert cut.value.error_type == "truncated_stream" and cut.value.retryable
    final = {"type": "response.completed", "response": "not an object"}
    with pytest.raises(ProviderError, match="carries no response object"):
        _complete(tmp_path, _sse(delta, final), stream=True)


def test_a_streamed_failure_is_the_rows_error(tmp_path: Path) -> None:
    error = {"code": "server_error", "message": "boom"}
    failed_event = {"type": "response.failed", "response": {"status": "failed", "error": error}}
    with pytest.raises(ProviderError) as failed:
        _complete(tmp_path, _sse(failed_event), stream=True)
    assert failed.value.error_type == "response_failed" and failed.value.retryable


def test_the_fake_fails_a_response_and_the_run_keeps_the_row(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    cases = '  - {id: bad, vars: {q: "FAIL_ME"}}\n  - {id: ok, vars: {q: "ANSWER: yes"}}\n'
    path = write("s.yaml", _suite(GPT41, cases=cases))
    result = run_suite(load_suite(path), run_settings(tmp_path, max_error_rate=1.0))
    frame = load_run(result.run_dir).set_index("case_id")
    assert frame.loc["bad", "error_type"] == "response_failed"
    assert "invalid_prompt" in frame.loc["bad", "error"]
    assert frame.loc["ok", "output"] == "yes" and frame.loc["ok", "passed"]


def test_a_second_run_reads_the_responses_from_the_cache(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    cases = '  - {id: c0, vars: {q: "ANSWER: billing"}}\n  - {id: c1, vars: {q: "FILTER_ME"}}\n'
    path = write("s.yaml", _suite(O3, "max_tokens: 32", cases=cases))
    first = load_run(run_suite(load_suite(path), run_settings(tmp_path)).run_dir)
    second = load_run(run_suite(load_suite(path), run_settings(tmp_path)).run_dir)
    assert openai.count("/v1/responses") == 2 and second["cached"].all()
    columns = ["case_id", "output", "finish_reason", "reasoning_tokens", "completion_tokens"]
    assert second[columns].equals(first[columns])
    assert first.set_index("case_id")["finish_reason"].to_dict() == {
        "c0": "stop",
        "c1": "content_filter",
    }


def test_a_completed_response_without_output_is_the_rows_error(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.script(["no_choices"])
    path = write("s.yaml", _suite(GPT41))
    result = run_suite(load_suite(path), run_settings(tmp_path, max_error_rate=1.0))
    row = load_run(result.run_dir).iloc[0]
    assert row["error_type"] == "bad_response" and "no message" in row["error"]
