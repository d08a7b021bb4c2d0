"""Whole-suite validation: models, endpoints, ids, checks rendered per case."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from evalkit import ModelSpec, check_suite, load_suite
from tests.conftest import run_settings

Write = Callable[[str, str], Path]


def test_example_suites_are_valid() -> None:
    root = Path(__file__).parent.parent / "suites"
    paths = sorted(root.glob("*.yaml"))
    assert len(paths) >= 2
    for path in paths:
        assert check_suite(load_suite(path)) == [], path


def test_models_given_on_the_command_line_replace_the_suites(write: Write) -> None:
    path = write(
        "s.yaml", 'models: [openai/gpt-4]\nprompt: "Q"\nsuffix: "S"\ncases: [{vars: {}}]\n'
    )
    suite = load_suite(path)
    assert check_suite(suite)  # gpt-4 cannot take a suffix
    assert check_suite(suite, [ModelSpec(id="openai/gpt-3.5-turbo-instruct")]) == []


def test_declared_endpoint_models_resolve(write: Write) -> None:
    path = write(
        "e.yaml",
        """
        endpoints:
          vllm: {base_url: "http://127.0.0.1:8000/v1/", api_key_env: VLLM_KEY, kind: chat}
        models: [vllm/llama-3-8b, nowhere/x]
        prompt: "Q"
        cases: [{vars: {}}]
        """,
    )
    problems = check_suite(load_suite(path))
    assert [p.where for p in problems] == ["models[1]"]
    assert "unknown provider 'nowhere'" in problems[0].what


def test_unknown_openai_model_with_a_declared_kind_is_accepted(write: Write) -> None:
    path = write(
        "n.yaml",
        """
        models: [{id: openai/gpt-next, kind: chat, input_per_mtok: 1, output_per_mtok: 2}]
        prompt: "Q"
        cases: [{vars: {}}]
        """,
    )
    assert check_suite(load_suite(path)) == []


def test_check_referring_to_a_missing_var_names_the_case(write: Write) -> None:
    path = write(
        "c.yaml",
        """
        prompt: "Q {{ q }}"
        checks: [{equals: "{{ answer }}"}]
        cases:
          - {id: good, vars: {q: 1, answer: "1"}}
          - {id: bad, vars: {q: 2}}
        """,
    )
    problems = check_suite(load_suite(path))
    assert len(problems) == 1
    assert problems[0].line == 2 and "case 'bad'" in problems[0].what
    assert "'answer' is undefined" in problems[0].what


def test_templated_regex_is_compiled_per_case(write: Write) -> None:
    path = write(
        "r.yaml",
        """
        prompt: "Q"
        cases:
          - {id: ok, vars: {p: "a+"}, expect: [{regex: "{{ p }}"}]}
          - {id: broken, vars: {p: "a("}, expect: [{regex: "{{ p }}"}]}
        """,
    )
    problems = check_suite(load_suite(path))
    assert [(p.line, p.where) for p in problems] == [(4, "cases[1].expect[0]")]
    assert "invalid pattern 'a('" in problems[0].what


def test_judge_model_must_exist(write: Write) -> None:
    path = write(
        "j.yaml",
        """
        prompt: "Q"
        checks: [{judge: {model: openai/gpt-44, rubric: "Is it polite?"}}]
        cases: [{vars: {}}]
        """,
    )
    problems = check_suite(load_suite(path))
    assert len(problems) == 1 and problems[0].what.startswith("judge: unknown model")


def test_invalid_json_schema_is_reported_at_load(write: Write) -> None:
    from evalkit import SuiteError

    path = write(
        "js.yaml", 'prompt: "Q"\ncases: [{vars: {}, expect: [{json_schema: {type: 5}}]}]\n'
    )
    try:
        load_suite(path)
    except SuiteError as exc:
        assert "not a valid JSON Schema" in str(exc) and exc.problems[0].line == 2
    else:
        raise AssertionError("an invalid schema was accepted")


def test_a_string_prompt_to_a_chat_model_is_counted_as_the_message_it_is_sent_as(
    tmp_path: Path,
) -> None:
    """Validation counts the prompt as sent (one user message, with its overhead), as the
    estimate does: one window is an overflow for both, one token more fits both."""
    from evalkit import dry_run
    from evalkit.models.catalog import lookup
    from evalkit.models.tokens import Counter

    text = "lorem ipsum dolor " * 20
    sent = Counter(lookup("openai/gpt-4")).body({"messages": [{"role": "user", "content": text}]})
    assert sent > Counter(lookup("openai/gpt-4")).text(text) + 1
    for window, overflows in ((sent + 1, False), (sent, True)):
        path = tmp_path / f"w{window}.yaml"
        path.write_text(
            f'models: [{{id: openai/gpt-4, context_window: {window}}}]\nprompt: "{text}"\n'
            "cases: [{id: c}]\n"
        )
        suite = load_suite(path)
        problems = [str(p) for p in check_suite(suite, environ={})]
        estimate = dry_run(suite, run_settings(tmp_path, environ={}))
        assert bool(estimate[0].overflows) is overflows
        assert [p for p in problems if "context window" in p] == (
            [str(p) for p in estimate.problems] if overflows else []
        )
        assert all(f"{sent} prompt tokens + max_tokens 1" in p for p in problems)
