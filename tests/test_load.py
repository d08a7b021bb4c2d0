"""Loading suites: every format feature, and errors located by file and line."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from evalkit import Message, SuiteError, load_suite

Write = Callable[[str, str], Path]


def test_inline_chat_suite_with_checks_and_case_params(write: Write) -> None:
    path = write(
        "triage.yaml",
        """
        description: Route tickets
        models: [openai/gpt-4, {id: openai/gpt-3.5-turbo, label: turbo, concurrency: 4}]
        params: {temperature: 0, max_tokens: 8}
        prompt:
          - {role: system, content: "Answer with one word.", name: router}
          - {role: user, content: "Ticket: {{ ticket }}"}
        checks: [{finish_reason: stop}]
        cases:
          - id: refund
            vars: {ticket: "money back"}
            expect: [{equals: billing}, {not: {contains: sorry}, weight: 2, name: polite}]
            params: {max_tokens: 2}
            must_pass: true
        """,
    )
    suite = load_suite(path)
    assert suite.name == "triage"  # defaults to the file name
    assert [m.id for m in suite.models] == ["openai/gpt-4", "openai/gpt-3.5-turbo"]
    assert suite.models[1].label == "turbo" and suite.models[1].concurrency == 4
    assert isinstance(suite.prompt, list) and suite.prompt[0] == Message(
        role="system", content="Answer with one word.", name="router"
    )
    case = suite.cases[0]
    assert case.must_pass
    assert case.params is not None and case.params.over(suite.params).set_values() == {
        "temperature": 0,
        "max_tokens": 2,
    }
    negated = case.expect[1]
    assert (negated.kind, negated.arg, negated.negate, negated.weight, negated.label) == (
        "contains",
        "sorry",
        True,
        2,
        "polite",
    )
    assert suite.checks[0].kind == "finish_reason" and suite.checks[0].arg == "stop"


def test_cases_from_jsonl_relative_to_the_suite(write: Write, tmp_path: Path) -> None:
    write("sub/cases.jsonl", '{"id": "a", "vars": {"q": 1}}\n\n{"vars": {"q": 2}}\n')
    path = write("sub/suite.yaml", 'prompt: "Q: {{ q }}"\ncases: cases.jsonl\n')
    suite = load_suite(path)
    assert [c.id for c in suite.cases] == ["a", "case-2"]
    assert suite.cases[1].vars == {"q": 2}


def test_cases_from_a_yaml_list_file(write: Write) -> None:
    write("cases.yaml", "- id: x\n  vars: {q: 1}\n- id: y\n  vars: {q: 2}\n  expect: 5\n")
    path = write("suite.yaml", 'prompt: "{{ q }}"\ncases: cases.yaml\n')
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert [str(p).split(": ", 1)[0] for p in info.value.problems] == [
        f"{Path(path).parent / 'cases.yaml'}:5"
    ]


def test_openai_evals_samples_are_accepted_as_they_are(write: Write) -> None:
    lines = [
        {"input": [{"role": "user", "content": "Capital of France?"}], "ideal": "Paris"},
        {"input": "2+2=", "ideal": ["4", "four"], "topic": "math"},
    ]
    path = write("evals.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    suite = load_suite(path)
    first, second = suite.cases
    assert first.messages == [Message(role="user", content="Capital of France?")]
    assert first.expect[0].kind == "match" and first.expect[0].arg == "Paris"
    assert second.prompt == "2+2=" and second.expect[0].arg == ["4", "four"]
    assert second.vars == {"topic": "math"}  # other keys become variables


def test_variants_shorthand_and_full_form(write: Write) -> None:
    path = write(
        "ab.yaml",
        """
        variants:
          terse: "Q: {{ q }}"
          chat: [{role: user, content: "{{ q }}"}]
          full: {prompt: "Q: {{ q }}\\nA:", params: {temperature: 1}}
        cases: [{vars: {q: hi}}]
        """,
    )
    variants = load_suite(path).variant_prompts()
    assert list(variants) == ["terse", "chat", "full"]
    assert variants["terse"] is not None and variants["terse"].prompt == "Q: {{ q }}"
    full = variants["full"]
    assert full is not None and full.params is not None and full.params.temperature == 1


def test_prompt_and_variants_together_is_an_error(write: Write) -> None:
    path = write("both.yaml", 'prompt: "x"\nvariants: {a: "y"}\ncases: [{vars: {}}]\n')
    with pytest.raises(SuiteError, match=r"either prompt .* or variants"):
        load_suite(path)


def test_several_errors_are_reported_at_once(write: Write) -> None:
    path = write(
        "many.yaml",
        """
        prompt: "x"
        samples: -1
        cases:
          - {vars: {}, expect: [{regex: "("}]}
          - {vars: {}, bogus: 1}
        """,
    )
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    lines = sorted(p.line for p in info.value.problems)
    assert lines == [2, 4, 5]
    assert info.value.exit_code == 2


def test_duplicate_yaml_keys_are_reported(write: Write) -> None:
    path = write("dup.yaml", 'prompt: "a"\nprompt: "b"\ncases: [{vars: {}}]\n')
    with pytest.raises(
        SuiteError, match=r"dup.yaml:2: prompt: duplicate key 'prompt' \(first at line 1\)"
    ):
        load_suite(path)


def test_a_yaml_boolean_id_asks_for_quotes(write: Write) -> None:
    path = write("b.yaml", 'prompt: "x"\ncases:\n  - {id: yes, vars: {}}\n')
    with pytest.raises(SuiteError, match=r"b.yaml:3: cases\[0\].id: YAML reads this id as true"):
        load_suite(path)


def test_a_suite_must_be_a_mapping(write: Write) -> None:
    with pytest.raises(SuiteError, match="must be a mapping"):
        load_suite(write("list.yaml", "- a\n- b\n"))


def test_binary_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_bytes(b"name: x\n\x00\x01\x02\xff")
    with pytest.raises(SuiteError, match="not a text file"):
        load_suite(path)


def test_jsonl_line_that_is_not_an_object(write: Write) -> None:
    path = write("c.jsonl", '{"vars": {}}\n[1, 2]\n')
    with pytest.raises(SuiteError, match=r"c.jsonl:2: each line must be a JSON object"):
        load_suite(path)


def test_trailing_newlines_in_templates_survive_loading(write: Write) -> None:
    path = write(
        "keep.yaml", 'prompt: "def f():\\n"\nsuffix: "\\n\\nprint(f())\\n"\ncases: [{vars: {}}]\n'
    )
    suite = load_suite(path)
    assert suite.prompt == "def f():\n" and suite.suffix == "\n\nprint(f())\n"


def test_loading_leaves_the_cycle_collector_as_it_was(write: Write) -> None:
    """YAML is read with the collector paused: it is back on after a load, failed or not, and
    stays off for a caller who had turned it off."""
    good = write("good.yaml", 'prompt: "{{ q }}"\ncases: [{vars: {q: 1}}]\n')
    bad = write("bad.yaml", 'prompt: "{{ q }}"\ncases: [{vars: {q: *nowhere}}]\n')
    load_suite(good)
    assert gc.isenabled()
    with pytest.raises(SuiteError, match="found undefined alias"):
        load_suite(bad)
    assert gc.isenabled()
    gc.disable()
    try:
        load_suite(good)
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize(
    ("value", "shown"),
    [("!!int x", "'x' is not a valid !!int"), ("!!timestamp 2020-13-45", "!!timestamp")],
)
def test_a_tagged_value_that_is_not_what_its_tag_says_is_located(
    write: Write, value: str, shown: str
) -> None:
    path = write("bad.yaml", f"prompt: hi\ncases:\n  - id: a\n    vars: {{n: {value}}}\n")
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    [problem] = error.value.problems
    assert (problem.line, problem.what) == (4, problem.what)
    assert shown in problem.what and problem.what.startswith("invalid YAML")
