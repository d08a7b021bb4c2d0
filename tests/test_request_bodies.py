"""Every request body evalkit builds is valid for the official OpenAI API description.

Why: a body the API rejects fails every request of a run at send time, after the suite was
declared valid; checking against the official description (OpenAPI 3.1, plain JSON Schema
2020-12) catches a wrong name, type or range before anything is sent. The schemas come from
`tests/data/openai-openapi/openapi.pruned.json`, the request bodies' part of the spec, which
`scripts/prune_openapi.py` regenerates from the full one (see the README there). The spec's
`nullable: true` is an OpenAPI 3.0 keyword that JSON Schema ignores, so `null` counts as invalid
where the spec means "nullable": harmless here, because evalkit never sends `null`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from evalkit.errors import Unsendable
from evalkit.models.targets import resolve
from evalkit.planning.plan import Endpoint, build_body
from evalkit.planning.planner import plan
from evalkit.planning.validate import check_suite
from evalkit.scoring.moderation import moderation_request
from evalkit.suite.endpoints import ModelSpec
from evalkit.suite.load import load_suite
from evalkit.suite.params import Params
from evalkit.suite.render import Rendered, Renderer
from evalkit.suite.spec import Case, Message, Suite
from tests.openapi_spec import (
    SCHEMA_NAMES,
    SPEC_DIR,
    SPEC_PATH,
    assert_valid,
    declared_properties,
    spec,
    spec_errors,
)

REPO = Path(__file__).resolve().parents[1]
# Where the full description lives when it is at hand: the steering repository's copy, beside
# this one. Only test_pruned_copy_is_what_the_script_makes_of_the_full_spec reads it.
FULL_SPEC_DIR = REPO.parent / "shared" / "openai-openapi"
PRUNE_SCRIPT = REPO / "scripts" / "prune_openapi.py"


def messages(*pairs: tuple[str, str]) -> Rendered:
    return Rendered(messages=tuple((("role", role), ("content", text)) for role, text in pairs))


CHAT = messages(("system", "Answer in one word."), ("user", "Capital of France?"))
NAMED = Rendered(
    messages=(
        (("role", "developer"), ("content", "Be terse.")),
        (("role", "user"), ("content", "Hi"), ("name", "alice")),
        (("role", "assistant"), ("content", "Hello.")),
        (("role", "user"), ("content", "")),
    )
)
PROMPT = Rendered(prompt="Q: Capital of Italy?\nA:")
INSERT = Rendered(prompt='def add(a, b):\n    """Sum."""\n', suffix="\n\nprint(add(2, 3))\n")

EVERY_COMMON = {
    "temperature": 0.7,
    "top_p": 0.9,
    "max_tokens": 64,
    "n": 3,
    "stop": ["\n\n", "###", "END", "\ndef "],
    "seed": 1234,
    "presence_penalty": -1.5,
    "frequency_penalty": 2.0,
    "logit_bias": {"50256": -100, "198": 5},
    "user": "evalkit-test",
    "stream": True,
}


# ---------------------------------------------------------------- the pruned copy


def test_pruned_copy_holds_every_schema_its_refs_reach() -> None:
    """The copy is self-contained: each `$ref` in it names a schema it carries."""
    pruned = spec()
    schemas = pruned["components"]["schemas"]
    assert set(SCHEMA_NAMES.values()) <= set(schemas)
    refs = set(re.findall(r'"\$ref": "([^"]*)"', json.dumps(pruned)))
    assert refs, "no $ref at all: the copy is not the pruned spec"
    prefix = "#/components/schemas/"
    assert all(r.startswith(prefix) for r in refs), refs
    missing = sorted(r for r in refs if r[len(prefix) :].split("/")[0] not in schemas)
    assert not missing, missing


def test_pruned_copy_readme_names_its_version() -> None:
    version = spec()["info"]["version"]
    readme = (SPEC_DIR / "README.md").read_text(encoding="utf-8")
    assert f"`info.version` **{version}**" in readme
    assert "Copyright (c) OpenAI" in (SPEC_DIR / "LICENSE").read_text(encoding="utf-8")


def test_pruned_copy_is_what_the_script_makes_of_the_full_spec(tmp_path: Path) -> None:
    """Regenerating from the full description changes nothing, so the copy cannot drift."""
    full = FULL_SPEC_DIR / "openapi.json"
    if not full.is_file():
        pytest.skip(f"the full OpenAI API description is not at {full}")
    out = tmp_path / "openapi.pruned.json"
    result = subprocess.run(
        [sys.executable, str(PRUNE_SCRIPT), str(full), "--output", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes() == SPEC_PATH.read_bytes(), (
        f"{SPEC_PATH} is stale: run `python scripts/prune_openapi.py {full}`"
    )
    assert (SPEC_DIR / "LICENSE").read_bytes() == (FULL_SPEC_DIR / "LICENSE").read_bytes()


# ---------------------------------------------------------------- the validator itself


def test_spec_schemas_are_found_and_nontrivial() -> None:
    assert {"messages", "model", "temperature", "stop"} <= declared_properties("chat")
    assert {"prompt", "suffix", "echo", "best_of"} <= declared_properties("completions")
    assert "suffix" not in declared_properties("chat")


@pytest.mark.parametrize(
    ("endpoint", "body", "why"),
    [
        ("chat", {"model": "gpt-4"}, "messages"),
        ("chat", {"model": "gpt-4", "messages": []}, "messages"),
        ("chat", {"messages": [{"role": "user", "content": "hi"}]}, "model"),
        (
            "chat",
            {
                "model": "gpt-4",
                "messages": [{"role": "user", "content": "hi"}],
                "temperature": "hot",
            },
            "temperature",
        ),
        (
            "chat",
            {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "temperature": 3},
            "temperature",
        ),
        ("chat", {"model": "gpt-4", "messages": [{"role": "robot", "content": "hi"}]}, "messages"),
        (
            "chat",
            {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "logprobs": 3},
            "logprobs",
        ),
        (
            "chat",
            {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "max_token": 5},
            "max_token",
        ),
        (
            "chat",
            {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "seed": None},
            "seed",
        ),
        ("completions", {"model": "davinci-002"}, "prompt"),
        ("completions", {"model": "davinci-002", "prompt": "x", "logprobs": True}, "logprobs"),
        ("completions", {"model": "davinci-002", "prompt": "x", "stop": list("abcde")}, "stop"),
        ("completions", {"model": "davinci-002", "prompt": "x", "suffix": 3}, "suffix"),
        ("completions", {"model": "davinci-002", "prompt": "x", "top_logprobs": 2}, "top_logprobs"),
        ("moderations", {"model": "omni-moderation-latest"}, "input"),
        ("moderations", {"model": "omni-moderation-latest", "input": 3}, "input"),
        ("moderations", {"input": "x", "prompt": "x"}, "prompt"),
    ],
)
def test_validator_rejects_broken_bodies(
    endpoint: Endpoint, body: dict[str, Any], why: str
) -> None:
    errors = spec_errors(endpoint, body)
    assert errors, f"the validator accepted a broken body: {body!r}"
    assert any(why in error for error in errors), errors


def test_validator_accepts_a_minimal_request_for_each_endpoint() -> None:
    assert_valid("chat", {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]})
    assert_valid("completions", {"model": "davinci-002", "prompt": "hi"})
    assert_valid("moderations", {"input": "hi"})


# ---------------------------------------------------------------- build_body, chat


@pytest.mark.parametrize(
    ("rendered", "values"),
    [
        (CHAT, {}),
        (NAMED, {}),
        (PROMPT, {}),
        (CHAT, {"temperature": 0}),
        (CHAT, {"temperature": 2, "top_p": 0}),
        (CHAT, {"top_p": 1}),
        (CHAT, {"max_tokens": 1}),
        (CHAT, {"n": 128}),
        (CHAT, {"stop": "\n"}),
        (CHAT, {"stop": ["a"]}),
        (CHAT, {"stop": ["a", "b", "c", "d"]}),
        (CHAT, {"seed": 0}),
        (CHAT, {"seed": -(2**62)}),
        (CHAT, {"logprobs": True}),
        (CHAT, {"logprobs": False}),
        (CHAT, {"logprobs": 0}),
        (CHAT, {"logprobs": 20}),
        (CHAT, {"logprobs": True, "top_logprobs": 5}),
        (CHAT, {"logprobs": 3, "top_logprobs": 7}),
        (CHAT, {"response_format": {"type": "json_object"}}),
        (CHAT, {"response_format": {"type": "text"}}),
        (
            CHAT,
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "answer",
                        "strict": True,
                        "schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                    },
                }
            },
        ),
        (CHAT, {"presence_penalty": 2, "frequency_penalty": -2}),
        (CHAT, {"logit_bias": {"50256": -100}}),
        (CHAT, {"user": "someone"}),
        (CHAT, {"stream": True}),
        (CHAT, {"stream": False}),
        (CHAT, {**EVERY_COMMON, "logprobs": 4, "response_format": {"type": "json_object"}}),
        (PROMPT, {**EVERY_COMMON, "logprobs": True, "top_logprobs": 20}),
    ],
)
def test_chat_bodies_follow_the_spec(rendered: Rendered, values: dict[str, Any]) -> None:
    body = build_body("chat", "gpt-4", rendered, Params.model_validate(values))
    assert_valid("chat", body)
    assert body["model"] == "gpt-4"
    assert "prompt" not in body and "suffix" not in body


def test_string_prompt_becomes_one_user_message() -> None:
    body = build_body("chat", "gpt-4", PROMPT, Params())
    assert body == {"model": "gpt-4", "messages": [{"role": "user", "content": PROMPT.prompt}]}
    assert_valid("chat", body)


def test_messages_are_sent_as_written_names_included() -> None:
    body = build_body("chat", "gpt-4", NAMED, Params())
    assert body["messages"] == [
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "content": "Hi", "name": "alice"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": ""},
    ]


@pytest.mark.parametrize(
    ("values", "wire"),
    [
        ({"logprobs": True}, {"logprobs": True}),
        ({"logprobs": 3}, {"logprobs": True, "top_logprobs": 3}),
        ({"logprobs": 0}, {"logprobs": True, "top_logprobs": 0}),
        ({"logprobs": 3, "top_logprobs": 7}, {"logprobs": True, "top_logprobs": 7}),
        ({"logprobs": True, "top_logprobs": 2}, {"logprobs": True, "top_logprobs": 2}),
        ({"logprobs": False}, {}),
    ],
)
def test_chat_logprobs_are_a_boolean_plus_top_logprobs(
    values: dict[str, Any], wire: dict[str, Any]
) -> None:
    body = build_body("chat", "gpt-4", CHAT, Params.model_validate(values))
    got = {k: body[k] for k in ("logprobs", "top_logprobs") if k in body}
    assert got == wire
    assert_valid("chat", body)


def test_stream_asks_for_usage_and_unset_params_are_not_sent() -> None:
    body = build_body("chat", "gpt-4", CHAT, Params(stream=True))
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert set(body) == {"model", "messages", "stream", "stream_options"}
    assert "stream_options" not in build_body("chat", "gpt-4", CHAT, Params(stream=False))
    assert_valid("chat", body)


# ---------------------------------------------------------------- build_body, completions


@pytest.mark.parametrize(
    ("rendered", "values"),
    [
        (PROMPT, {}),
        (INSERT, {}),
        (Rendered(prompt=""), {}),
        (PROMPT, {"temperature": 0, "top_p": 1, "max_tokens": 16}),
        (PROMPT, {"n": 5, "best_of": 10}),
        (PROMPT, {"stop": "\n"}),
        (PROMPT, {"stop": ["\n", "Q:"]}),
        (PROMPT, {"seed": 42}),
        (PROMPT, {"logprobs": True}),
        (PROMPT, {"logprobs": False}),
        (PROMPT, {"logprobs": 0}),
        (PROMPT, {"logprobs": 5}),
        (PROMPT, {"presence_penalty": 0.5, "frequency_penalty": -0.5}),
        (PROMPT, {"logit_bias": {"50256": -100}}),
        (PROMPT, {"user": "someone"}),
        (PROMPT, {"stream": True}),
        (PROMPT, {"echo": True}),
        (PROMPT, {"echo": False, "best_of": 1}),
        (INSERT, {**EVERY_COMMON, "logprobs": 2, "echo": True, "best_of": 20, "stream": False}),
        (INSERT, {**EVERY_COMMON, "logprobs": True}),
    ],
)
def test_completions_bodies_follow_the_spec(rendered: Rendered, values: dict[str, Any]) -> None:
    body = build_body(
        "completions", "gpt-3.5-turbo-instruct", rendered, Params.model_validate(values)
    )
    assert_valid("completions", body)
    assert body["prompt"] == rendered.prompt
    assert "messages" not in body


def test_suffix_is_sent_byte_for_byte() -> None:
    body = build_body("completions", "gpt-3.5-turbo-instruct", INSERT, Params(temperature=0.7))
    assert body["suffix"] == "\n\nprint(add(2, 3))\n"
    assert body["prompt"] == INSERT.prompt
    assert "suffix" not in build_body("completions", "davinci-002", PROMPT, Params())


@pytest.mark.parametrize(("given", "sent"), [(True, 1), (0, 0), (3, 3), (5, 5)])
def test_completions_logprobs_are_an_integer(given: bool | int, sent: int) -> None:
    body = build_body("completions", "davinci-002", PROMPT, Params(logprobs=given))
    assert body["logprobs"] == sent
    assert type(body["logprobs"]) is int
    assert_valid("completions", body)


def test_completions_stream_asks_for_usage() -> None:
    body = build_body("completions", "davinci-002", PROMPT, Params(stream=True))
    assert body["stream_options"] == {"include_usage": True}
    assert_valid("completions", body)


# ---------------------------------------------------------------- moderation checks


@pytest.mark.parametrize(
    "model", ["openai/omni-moderation-latest", "openai/text-moderation-latest"]
)
@pytest.mark.parametrize("output", ["Paris.", "", "naïve 🙂\n\nsecond line"])
def test_moderation_bodies_follow_the_spec(model: str, output: str) -> None:
    target = resolve(ModelSpec(id=model), {}, environ={})
    request = moderation_request(target, Case(id="a"), "default", output, sample=2)
    assert request.endpoint == "moderations"
    assert request.body == {"model": target.model, "input": output}
    assert_valid("moderations", request.body)


# ---------------------------------------------------------------- what cannot be sent


@pytest.mark.parametrize(
    ("endpoint", "values", "named"),
    [
        ("chat", {"echo": True}, "echo"),
        ("chat", {"echo": False}, "echo"),
        ("chat", {"best_of": 2}, "best_of"),
        ("chat", {"echo": True, "best_of": 2}, "echo, best_of"),
        ("completions", {"response_format": {"type": "json_object"}}, "response_format"),
        ("completions", {"top_logprobs": 2}, "top_logprobs"),
        ("completions", {"top_logprobs": 2, "response_format": {"type": "text"}}, "top_logprobs"),
    ],
)
def test_parameters_of_the_other_endpoint_are_unsendable(
    endpoint: Endpoint, values: dict[str, Any], named: str
) -> None:
    rendered = CHAT if endpoint == "chat" else PROMPT
    with pytest.raises(Unsendable, match=named):
        build_body(endpoint, "some-model", rendered, Params.model_validate(values))


# ---------------------------------------------------------------- property: anything in range


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
_common = {
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "max_tokens": st.integers(1, 4096),
    "n": st.integers(1, 128),
    "stop": st.one_of(_text, st.lists(_text, min_size=1, max_size=4)),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "logit_bias": st.dictionaries(
        st.integers(0, 100_000).map(str), st.integers(-100, 100), max_size=3
    ),
    "user": _text,
    "stream": st.booleans(),
}
_chat_only = {
    "logprobs": st.one_of(st.booleans(), st.integers(0, 20)),
    "top_logprobs": st.integers(0, 20),
    "response_format": st.sampled_from([{"type": "json_object"}, {"type": "text"}]),
}
_completions_only = {
    "logprobs": st.one_of(st.booleans(), st.integers(0, 5)),
    "echo": st.booleans(),
    "best_of": st.integers(1, 20),
}


def _some_of(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=_some_of({**_common, **_chat_only}), prompt=_text, as_messages=st.booleans())
def test_any_in_range_chat_params_give_a_valid_body(
    values: dict[str, Any], prompt: str, as_messages: bool
) -> None:
    rendered = (
        messages(("system", "s"), ("user", prompt)) if as_messages else Rendered(prompt=prompt)
    )
    body = build_body("chat", "gpt-4o-mini", rendered, Params.model_validate(values))
    assert_valid("chat", body)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=_some_of({**_common, **_completions_only}),
    prompt=_text,
    suffix=st.one_of(st.none(), _text),
)
def test_any_in_range_completions_params_give_a_valid_body(
    values: dict[str, Any], prompt: str, suffix: str | None
) -> None:
    rendered = Rendered(prompt=prompt, suffix=suffix)
    body = build_body("completions", "davinci-002", rendered, Params.model_validate(values))
    assert_valid("completions", body)


# ---------------------------------------------------------------- accepted, yet invalid on the wire


def _sendable_or_refused(endpoint: Endpoint, rendered: Rendered, values: dict[str, Any]) -> None:
    """Either evalkit refuses these params up front, or the body it builds is valid."""
    try:
        params = Params.model_validate(values)
    except ValidationError:
        return
    try:
        body = build_body(endpoint, "some-model", rendered, params)
    except Unsendable:
        return
    assert_valid(endpoint, body)


@pytest.mark.parametrize(
    ("endpoint", "values"),
    [
        pytest.param(
            "chat",
            {"logprobs": 21},
            id="chat-logprobs-21",
        ),
        pytest.param(
            "chat",
            {"logprobs": -1},
            id="chat-logprobs-negative",
        ),
        pytest.param(
            "completions",
            {"logprobs": 6},
            id="completions-logprobs-6",
        ),
        pytest.param(
            "completions",
            {"logprobs": -1},
            id="completions-logprobs-negative",
        ),
        pytest.param(
            "chat",
            {"stop": []},
            id="stop-empty-list",
        ),
        pytest.param(
            "chat",
            {"stop": ["a", "b", "c", "d", "e"]},
            id="chat-stop-5",
        ),
        pytest.param(
            "completions",
            {"stop": ["a", "b", "c", "d", "e"]},
            id="completions-stop-5",
        ),
        pytest.param(
            "chat",
            {"response_format": {"type": "xml"}},
            id="response-format-unknown-type",
        ),
        pytest.param(
            "chat",
            {"response_format": {"type": "json_schema"}},
            id="response-format-json-schema-without-schema",
        ),
        pytest.param(
            "chat",
            {"seed": 2**64},
            id="seed-beyond-int64",
        ),
        pytest.param(
            "chat",
            {"logprobs": 2, "top_logprobs": 2},
            id="control-in-range",
        ),
    ],
)
def test_accepted_params_never_build_an_invalid_body(
    endpoint: Endpoint, values: dict[str, Any]
) -> None:
    _sendable_or_refused(endpoint, CHAT if endpoint == "chat" else PROMPT, values)


def test_top_logprobs_alone_turns_logprobs_on() -> None:
    body = build_body("chat", "gpt-4", CHAT, Params(top_logprobs=3))
    assert_valid("chat", body)
    assert body.get("logprobs") is True


def test_tool_role_messages_are_refused_or_valid() -> None:
    try:
        message = Message.model_validate({"role": "tool", "content": "42"})
    except ValidationError:
        return
    suite = Suite.model_validate(
        {"prompt": [message.model_dump(exclude_none=True)], "cases": [{"id": "a"}]}
    )
    (variant,) = suite.variant_prompts().values()
    rendered = Renderer().prompt(suite, variant, suite.cases[0])
    try:
        body = build_body("chat", "gpt-4", rendered, Params())
    except Unsendable:
        return
    assert_valid("chat", body)


# ---------------------------------------------------------------- the example suites


def _example_suites() -> list[Path]:
    return sorted((REPO / "suites").glob("*.yaml"))


def test_there_are_example_suites() -> None:
    names = {p.name for p in _example_suites()}
    assert {"insert-docstrings.yaml", "support-triage.yaml"} <= names


@pytest.mark.parametrize("path", _example_suites(), ids=lambda p: p.name)
def test_example_suite_bodies_follow_the_spec(path: Path) -> None:
    suite = load_suite(path)
    assert check_suite(suite, environ={}) == []
    assert suite.models, f"{path.name} names no models"
    endpoints: set[str] = set()
    count = 0
    for model in suite.models:
        target = resolve(model, suite.endpoints, environ={})
        for request in plan(suite, target):
            assert_valid(request.endpoint, request.body)
            assert request.body["model"] == target.model
            endpoints.add(request.endpoint)
            count += 1
    assert count > 0
    assert endpoints


def test_openai_evals_samples_bodies_follow_thespec() -> None:
    """`capitals-evals.jsonl` (OpenAI Evals sample format), sent to a chat model."""
    suite = load_suite(REPO / "suites" / "capitals-evals.jsonl")
    target = resolve(ModelSpec(id="openai/gpt-4o-mini"), suite.endpoints, environ={})
    requests = list(plan(suite, target))
    assert len(requests) == len(suite.cases) > 0
    for request in requests:
        assert request.endpoint == "chat"
        assert_valid("chat", request.body)


def test_insert_suite_sends_suffix_and_its_params() -> None:
    suite = load_suite(REPO / "suites" / "insert-docstrings.yaml")
    target = resolve(suite.models[0], suite.endpoints, environ={})
    requests = list(plan(suite, target))
    assert len(requests) == len(suite.cases) * suite.samples
    first = requests[0].body
    assert requests[0].endpoint == "completions"
    assert first["suffix"].startswith("\n\nprint(")
    assert first["stop"] == ["\ndef "]
    assert first["temperature"] == 0.7 and first["max_tokens"] == 64
    assert len({r.key for r in requests}) == len(requests)
