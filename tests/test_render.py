"""Rendering: strict, sandboxed, byte-for-byte."""

from __future__ import annotations

import pytest

from evalkit import Case, Check, Renderer, Suite, TemplateError, Variant
from evalkit.errors import Unsendable
from evalkit.models.catalog import lookup
from evalkit.planning.plan import endpoint_for
from evalkit.suite.render import Rendered


def _suite(**fields: object) -> Suite:
    return Suite.model_validate({"cases": [{"id": "c", "vars": {}}], **fields})


def test_chat_messages_are_rendered_with_the_case_vars() -> None:
    suite = _suite(prompt=[{"role": "user", "content": "Hi {{ name | upper }}", "name": "u1"}])
    case = Case(id="c", vars={"name": "ada"})
    rendered = Renderer().prompt(suite, suite.variant_prompts()[""], case)
    assert rendered.message_dicts() == [{"role": "user", "content": "Hi ADA", "name": "u1"}]


def test_prompt_and_suffix_keep_trailing_newlines() -> None:
    suite = _suite(prompt="def {{ f }}():\n", suffix="\n\nprint({{ f }}())\n")
    rendered = Renderer().prompt(suite, suite.variant_prompts()[""], Case(id="c", vars={"f": "g"}))
    assert rendered == Rendered(prompt="def g():\n", suffix="\n\nprint(g())\n")


def test_unknown_variable_names_the_variable() -> None:
    with pytest.raises(TemplateError) as info:
        Renderer().text("Hello {{ who }}", {}, ("prompt",))
    assert info.value.undefined and "'who' is undefined" in info.value.what


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ x.__class__ }}",
    ],
)
def test_templates_cannot_reach_python_internals(source: str) -> None:
    with pytest.raises(TemplateError) as info:
        Renderer().text(source, {"x": 1}, ("prompt",))
    assert "not allowed" in info.value.what or "undefined" in info.value.what


def test_syntax_error_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="template syntax error"):
        Renderer().text("{{ unclosed", {}, ("prompt",))


def test_case_prompt_overrides_the_suite_prompt() -> None:
    suite = _suite(prompt="suite {{ q }}")
    case = Case(id="c", vars={"q": 1}, messages=[{"role": "user", "content": "own {{ q }}"}])  # type: ignore[list-item]
    rendered = Renderer().prompt(suite, suite.variant_prompts()[""], case)
    assert rendered.message_dicts() == [{"role": "user", "content": "own 1"}]


def test_variant_suffix_wins_over_suite_suffix() -> None:
    suite = _suite(suffix="S", variants={"a": {"prompt": "P", "suffix": "V"}, "b": "P"})
    variants = suite.variant_prompts()
    renderer = Renderer()
    assert renderer.prompt(suite, variants["a"], Case(id="c")).suffix == "V"
    assert renderer.prompt(suite, variants["b"], Case(id="c")).suffix == "S"
    assert isinstance(variants["b"], Variant)


def test_expected_values_are_templates() -> None:
    check = Check.model_validate({"contains_any": ["{{ a }}", "x{{ b }}"]})
    rendered = Renderer().check(check, {"a": "one", "b": 2}, ("expect",))
    assert rendered.arg == ["one", "x2"]
    schema = Check.model_validate({"json_schema": {"type": "string", "pattern": "{{ not_a_var }}"}})
    assert Renderer().check(schema, {}, ("expect",)) is schema  # schemas are not templates


def test_string_prompt_to_a_chat_model_goes_to_chat() -> None:
    info = lookup("openai/gpt-3.5-turbo")
    assert info is not None
    assert endpoint_for(Rendered(prompt="Q"), info) == "chat"


def test_insert_mode_needs_a_completions_model_that_supports_suffix() -> None:
    instruct, davinci2, chat = (
        lookup("openai/gpt-3.5-turbo-instruct"),
        lookup("openai/davinci-002"),
        lookup("openai/gpt-4"),
    )
    assert instruct is not None and davinci2 is not None and chat is not None
    insert = Rendered(prompt="a", suffix="b")
    assert endpoint_for(insert, instruct) == "completions"
    with pytest.raises(Unsendable, match="does not support insert mode"):
        endpoint_for(insert, davinci2)
    with pytest.raises(Unsendable, match="needs the completions endpoint"):
        endpoint_for(insert, chat)
