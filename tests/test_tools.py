"""Function calling, JSON mode, moderation and multi-turn cases, end to end on loopback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from evalkit import SuiteError, check_suite, load_run, load_suite, run_suite
from fake_openai import FakeOpenAI
from tests.conftest import run_settings

ROOT = Path(__file__).parent.parent
Write = Callable[[str, str], Path]

TOOLS = """
params:
  tools:
    - type: function
      function:
        name: add
        parameters: {type: object, properties: {a: {type: number}, b: {type: number}}, required: [a, b]}
"""


def _run(path: Path, tmp_path: Path, **settings: object) -> pd.DataFrame:
    return load_run(run_suite(load_suite(path), run_settings(tmp_path, **settings)).run_dir)


def test_the_example_tools_suite(openai: FakeOpenAI, tmp_path: Path) -> None:
    frame = _run(ROOT / "suites" / "tools.yaml", tmp_path).set_index(["case_id", "model"])
    assert frame["passed"].all(), frame["check_reasons"].dropna().tolist()
    weather = frame.loc[("weather-paris", "openai/gpt-4o-mini")]
    assert weather["finish_reason"] == "tool_calls" and weather["output"] == ""
    (call,) = json.loads(weather["tool_calls"])
    assert call["name"] == "get_weather" and call["parsed"] == {"city": "Paris", "unit": "celsius"}
    assert json.loads(frame.loc[("json-mode", "openai/gpt-4o-mini"), "output"])["ok"] is True
    assert frame["check.moderation"].all()  # graded through /v1/moderations
    assert openai.count("/v1/moderations") == 10
    followup = [
        r.body
        for r in openai.requests
        if r.body and r.path.endswith("chat/completions") and len(r.body["messages"]) == 5
    ]
    assert followup, "the multi-turn case was not sent"
    assistant, tool = followup[0]["messages"][2], followup[0]["messages"][3]
    assert assistant["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert tool == {
        "role": "tool",
        "content": '{"temp_c": 21, "sky": "sunny"}',
        "tool_call_id": "call_1",
    }


def test_streamed_tool_calls_are_assembled(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    path = write(
        "s.yaml",
        "models: [openai/gpt-4o]\n"
        + TOOLS.replace("params:", "params:\n  stream: true")
        + """
prompt: [{role: user, content: "{{ q }}"}]
cases:
  - {id: add, vars: {q: "CALL: add {\\"a\\": 20, \\"b\\": 22}"}, expect: [{tool_call: {name: add, arguments: {a: 20, b: 22}}}, tool_args_valid]}
""",
    )
    row = _run(path, tmp_path).iloc[0]
    assert row["passed"], row["check_reasons"]
    assert json.loads(row["tool_calls"])[0]["parsed"] == {"a": 20, "b": 22}
    assert row["ttft_s"] > 0


def test_legacy_functions_and_function_call(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    path = write(
        "f.yaml",
        """
models: [openai/gpt-3.5-turbo]
params:
  functions: [{name: add, parameters: {type: object, properties: {a: {type: number}}}}]
  function_call: {name: add}
prompt: [{role: user, content: "CALL: add {\\"a\\": 1}"}]
cases: [{id: a, vars: {}, expect: [{tool_call: add}, tool_args_valid]}]
""",
    )
    row = _run(path, tmp_path).iloc[0]
    assert row["finish_reason"] == "function_call" and row["passed"]
    assert openai.requests[0].body["function_call"] == {"name": "add"}  # type: ignore[index]


def test_bad_arguments_and_missing_calls_fail_with_reasons(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    path = write(
        "b.yaml",
        "models: [openai/gpt-4o]\n"
        + TOOLS
        + """
prompt: [{role: user, content: "{{ q }}"}]
checks: [{tool_call: add}, tool_args_valid]
cases:
  - {id: not-json, vars: {q: "CALL: add {a: 1,"}}
  - {id: wrong-type, vars: {q: "CALL: add {\\"a\\": \\"one\\", \\"b\\": 2}"}}
  - {id: text-instead, vars: {q: "ANSWER: 3"}}
""",
    )
    frame = _run(path, tmp_path).set_index("case_id")
    assert not frame["passed"].any()
    reasons = {case: json.loads(r) for case, r in frame["check_reasons"].items()}
    assert "not JSON" in reasons["not-json"]["tool_args_valid"]
    assert "at a: 'one' is not of type 'number'" in reasons["wrong-type"]["tool_args_valid"]
    assert "got a text answer" in reasons["text-instead"]["tool_call"]


def test_moderation_flags_fail_the_check(openai: FakeOpenAI, write: Write, tmp_path: Path) -> None:
    path = write(
        "m.yaml",
        """
models: [openai/gpt-4o]
prompt: [{role: user, content: "ANSWER: {{ a }}"}]
checks: [{moderation: true}, {not: {moderation: {categories: [violence]}}, name: expects_violence_flag}]
cases:
  - {id: fine, vars: {a: have a nice day}}
  - {id: rude, vars: {a: FLAG_ME you fool}}
""",
    )
    frame = _run(path, tmp_path).set_index("case_id")
    assert frame.loc["fine", "check.moderation"] and not frame.loc["rude", "check.moderation"]
    assert "harassment" in json.loads(frame.loc["rude", "check_reasons"])["moderation"]
    assert not frame["check.expects_violence_flag"].any()  # negated: passes only if flagged
    bodies = [r.body for r in openai.requests if r.path == "/v1/moderations"]
    assert {b["model"] for b in bodies} == {"omni-moderation-latest"}  # type: ignore[index]
    assert {b["input"] for b in bodies} == {"have a nice day", "FLAG_ME you fool"}  # type: ignore[index]


@pytest.mark.parametrize(
    ("suite", "message"),
    [
        (
            "params:\n  tools: [{type: function, function: {name: f, parameters: {type: 7}}}]\nprompt: Q\ncases: [{vars: {}}]\n",
            "parameters: not a valid JSON Schema",
        ),
        (
            TOOLS
            + "  tool_choice: {type: function, function: {name: multiply}}\nprompt: Q\ncases: [{vars: {}}]\n",
            "tool_choice names 'multiply', which is not among the declared tools (add)",
        ),
        (
            "models: [openai/gpt-4o]\n"
            + TOOLS
            + "prompt: Q\ncases: [{vars: {}, params: {tool_choice: {type: function, function: {name: multiply}}}}]\n",
            "tool_choice names 'multiply', which is not among the declared tools (add)",
        ),
        (
            "models: [openai/gpt-4o]\nparams:\n  tools: [{type: function, function: {name: f, description: '{{ topic }}'}}]\nprompt: Q\ncases: [{vars: {}}]\n",
            "undefined variable: 'topic' is undefined",
        ),
        (
            "models: [openai/gpt-3.5-turbo-instruct]\n"
            + TOOLS
            + "prompt: Q\ncases: [{vars: {}}]\n",
            "tools only exist(s) on the chat endpoint",
        ),
        (
            "prompt: [{role: tool, content: '42'}]\ncases: [{vars: {}}]\n",
            "a tool message needs tool_call_id",
        ),
        (
            "models: [openai/omni-moderation-latest]\nprompt: Q\ncases: [{vars: {}}]\n",
            "is a moderation model",
        ),
        (
            "prompt: Q\nchecks: [{moderation: {model: openai/gpt-4}}]\ncases: [{vars: {}}]\n",
            "moderation: openai/gpt-4 is not a moderation model",
        ),
        (
            "prompt: Q\nchecks: [{moderation: {categories: [harrasment]}}]\ncases: [{vars: {}}]\n",
            "unknown moderation category 'harrasment' (did you mean 'harassment'?)",
        ),
        (
            "models: [local/gemma-3-270m]\n"
            + TOOLS
            + "prompt: [{role: user, content: Q}]\ncases: [{vars: {}}]\n",
            "local/gemma-3-270m: local models do not support tools",
        ),
    ],
    ids=[
        "bad-schema",
        "undeclared-tool-choice",
        "case-tool-choice-unknown",
        "tool-template-var",
        "tools-on-completions",
        "tool-without-id",
        "moderation-model-tested",
        "chat-model-moderating",
        "moderation-category-typo",
        "tools-on-a-local-model",
    ],
)
def test_bad_tool_configuration_is_reported_before_sending(
    write: Write, suite: str, message: str
) -> None:
    path = write("bad.yaml", suite)
    try:
        problems = [str(p) for p in check_suite(load_suite(path))]
    except SuiteError as exc:
        problems = [str(p) for p in exc.problems]
    assert any(message in p for p in problems), problems
    assert all(p.startswith(str(path) + ":") for p in problems)


def test_tool_calls_and_verdicts_show_in_the_report(openai: FakeOpenAI, tmp_path: Path) -> None:
    from evalkit.report import write_reports

    settings = run_settings(tmp_path)
    run_dir = run_suite(load_suite(ROOT / "suites" / "tools.yaml"), settings).run_dir
    html_path = next(p for p in write_reports(run_dir, formats=["html"]) if p.suffix == ".html")
    html = html_path.read_text()
    assert "get_weather(" in html and "add(" in html  # the calls, shown where the text would be
    assert "moderation" in html and "tool_args_valid" in html
