"""Hostile suites: whatever a suite file holds, evalkit answers with located errors (exit 2).

Inputs that once hung, crashed or took gigabytes run in a subprocess with a memory ceiling
and a timeout, so that a regression fails the test instead of the machine.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from evalkit import SuiteError, check_suite, load_suite
from evalkit.errors import TemplateError
from evalkit.suite.endpoints import ModelSpec
from evalkit.suite.render import Renderer
from fake_openai import FakeOpenAI
from tests.conftest import cli_env, run_evalkit

Write = Callable[[str, str], Path]
MODELS = "models: [openai/gpt-4o-mini]\n"


# `evalkit ARGS` with 3 GB of address space at most, for at most 60 s (or `timeout`)
evalkit = functools.partial(run_evalkit, memory_limit=3 << 30, timeout=60)


def _messages(error: SuiteError) -> list[str]:
    return [str(p) for p in error.problems]


# ----------------------------------------------------------------------------- JSONL suites


def test_problems_in_a_jsonl_suite_are_reported_at_their_line(write: Write) -> None:
    path = write("c.jsonl", '{"prompt": "hi"}\n{"prompt": 3}\n{"promt": "x"}\n')
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    assert _messages(caught.value) == [
        f"{path}:2: cases[1].prompt: Input should be a valid string",
        f"{path}:3: cases[2].promt: unknown key 'promt' (did you mean 'prompt'?)",
    ]


def test_a_jsonl_line_nested_ten_thousand_deep_is_a_located_error(write: Write) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    path = write("c.jsonl", '{"prompt": "hi"}\n{"vars": {"q": ' + deep + "}}\n")
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    assert _messages(caught.value) == [f"{path}:2: nested more than 100 levels deep"]


def test_a_jsonl_line_nested_past_the_limit_is_refused_before_use(write: Write) -> None:
    deep = "[" * 150 + "]" * 150  # json reads it; pydantic, Jinja and json.dumps would recurse
    path = write("c.jsonl", '{"prompt": "hi", "vars": {"q": ' + deep + "}}\n")
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    assert _messages(caught.value)[0].startswith(f"{path}:1: cases[0].vars.q")
    assert "nested more than 100 levels deep" in _messages(caught.value)[0]


@pytest.mark.parametrize("line", ['{"vars": {"q": "\\ud83d"}}', '{"vars": {"\\udc00": 1}}'])
def test_a_lone_surrogate_in_a_case_is_a_located_error(write: Write, line: str) -> None:
    path = write(
        "c.jsonl", '{"prompt": "{{ q }}", "vars": {"q": "\\ud83d\\ude00"}}\n' + line + "\n"
    )
    with pytest.raises(SuiteError) as caught:
        check_suite(load_suite(path), [ModelSpec(id="openai/gpt-4o-mini")])
    [message] = _messages(caught.value)
    assert message.startswith(f"{path}:2: cases[1].vars")
    assert "a lone UTF-16 surrogate" in message


@pytest.mark.parametrize("name", ["s.yaml", "c.jsonl"])
def test_a_bom_does_not_shift_the_line_of_a_bad_byte(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "a"}\n\xff\n')
    with pytest.raises(SuiteError, match=rf"{name}:2: not a text file"):
        load_suite(path)


# ----------------------------------------------------------------------------- YAML structure


def _alias_bomb(indent: str) -> str:
    """A 'billion laughs': 600 bytes whose aliases stand for 10**9 strings."""
    lines = ["x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 9):
        lines.append(f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]")
    return "".join(f"{indent}{line}\n" for line in lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            'prompt: "hi"\ncases:\n  - vars:\n' + _alias_bomb("      "),
            ":10: aliases repeat more than 1,000,000 nodes",  # *x4 ten times, on x5's line
            id="alias-bomb-in-vars",
        ),
        pytest.param(
            'prompt: "hi"\ncases: [{vars: {q: &r [*r]}}]\n',
            ":3: alias *r is inside the node it names",
            id="recursive-alias",
        ),
        pytest.param(
            'prompt: "hi"\ncases: [{vars: {q: ' + "[" * 100_000 + "]" * 100_000 + "}}]\n",
            ":3: nested more than 100 levels deep",
            id="nested-100000-deep",
        ),
    ],
)
def test_yaml_that_expands_or_nests_without_bound_is_refused(
    write: Write, tmp_path: Path, text: str, expected: str
) -> None:
    write("s.yaml", MODELS + text)
    result = evalkit("validate", "s.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"s.yaml{expected}"), result.stderr


def _nested(lists: int) -> str:
    """A suite whose case's `q` holds `lists` nested lists, one opened per line from line 5
    (the suite, `cases`, the case and its `vars` are the four collections around them)."""
    return (
        MODELS + 'prompt: "hi"\ncases:\n  - vars:\n      q: ' + "[\n" * lists + "]" * lists + "\n"
    )


def test_nesting_is_refused_at_the_collection_that_passes_the_bound(write: Write) -> None:
    load_suite(write("ok.yaml", _nested(96)))  # 100 collections deep: the most there may be
    path = write("deep.yaml", _nested(97))
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    assert _messages(caught.value) == [f"{path}:101: nested more than 100 levels deep"]


def test_aliases_count_together_and_are_refused_at_the_one_past_the_bound(write: Write) -> None:
    """Each alias repeats 1,001 nodes (a list of 1,000); the 1,000th passes 1,000,000."""
    head = MODELS + 'prompt: "hi"\nlist: &a [' + ", ".join(["0"] * 1000) + "]\nrepeats:\n"
    within = write("within.yaml", head + "  - *a\n" * 999)
    with pytest.raises(SuiteError) as caught:
        load_suite(within)
    assert _messages(caught.value)[0] == f"{within}:3: list: unknown key 'list'"  # read whole
    past = write("past.yaml", head + "  - *a\n" * 1000)
    with pytest.raises(SuiteError) as caught:
        load_suite(past)
    assert _messages(caught.value) == [
        f"{past}:1004: aliases repeat more than 1,000,000 nodes; repeat less"
    ]


def test_the_first_problem_in_the_yaml_is_the_one_reported(write: Write) -> None:
    """The text is parsed once, composing as it goes: an undefined alias is reported where it
    stands, not a syntax error further on (which a separate screening pass met first)."""
    path = write("s.yaml", MODELS + 'prompt: "hi"\ncases: [{vars: {q: *nowhere}}]\nbroken: [\n')
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    assert _messages(caught.value) == [f"{path}:3: invalid YAML: found undefined alias"]


def test_aliases_within_the_budget_work_and_merges_may_override(write: Write) -> None:
    path = write(
        "s.yaml",
        """
        models: [openai/gpt-4o-mini]
        params: &p {temperature: 0, max_tokens: 5}
        prompt: "{{ q }}"
        cases:
          - {vars: {q: a}, params: {<<: *p, temperature: 1}}
          - {vars: {q: b}, params: *p}
        """,
    )
    suite = load_suite(path)
    assert check_suite(suite) == []
    assert [c.params.temperature for c in suite.cases if c.params] == [1, 0]


# ----------------------------------------------------------------------------- cases: files


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A cases file beside the suite's folder, not in it."""
    path = tmp_path / "elsewhere" / "secret.jsonl"
    path.parent.mkdir()
    path.write_text('{"vars": {"q": "outside"}}\n', encoding="utf-8")
    (tmp_path / "suite").mkdir()
    return path


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink"])
def test_a_cases_file_outside_the_suite_folder_needs_the_opt_in(
    tmp_path: Path, outside: Path, how: str
) -> None:
    name = {"relative": "../elsewhere/secret.jsonl", "absolute": str(outside)}.get(how, "in.jsonl")
    if how == "symlink":
        (tmp_path / "suite" / "in.jsonl").symlink_to(outside)
    path = tmp_path / "suite" / "s.yaml"
    path.write_text(f'{MODELS}prompt: "{{{{ q }}}}"\ncases: {name}\n', encoding="utf-8")
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    [message] = _messages(caught.value)
    assert message.startswith(f"{path}:3: cases: cases file '{name}' is outside the suite's folder")
    assert "--allow-outside-cases" in message
    assert load_suite(path, allow_outside_cases=True).cases[0].vars == {"q": "outside"}


@pytest.mark.parametrize("name", ["loop.jsonl", '"nul\\0.jsonl"'])
def test_a_cases_file_name_that_cannot_be_resolved_is_a_located_error(
    write: Write, tmp_path: Path, name: str
) -> None:
    (tmp_path / "loop.jsonl").symlink_to("loop.jsonl")
    path = write("s.yaml", f'{MODELS}prompt: "hi"\ncases: {name}\n')
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    [message] = _messages(caught.value)
    assert message.startswith(f"{path}:3: cases: cases file '"), message


def test_validate_and_dry_run_take_the_opt_in(tmp_path: Path, outside: Path) -> None:
    folder = tmp_path / "suite"
    (folder / "s.yaml").write_text(
        f'{MODELS}prompt: "{{{{ q }}}}"\ncases: ../elsewhere/secret.jsonl\n', encoding="utf-8"
    )
    for command in (["validate"], ["run", "--dry-run"]):
        refused = evalkit(*command, "s.yaml", cwd=folder)
        assert refused.returncode == 2 and "outside the suite's folder" in refused.stderr
        allowed = evalkit(*command, "s.yaml", "--allow-outside-cases", cwd=folder)
        assert allowed.returncode == 0, allowed.stderr


def test_resume_takes_the_opt_in_again(openai: FakeOpenAI, tmp_path: Path, outside: Path) -> None:
    folder = tmp_path / "suite"
    (folder / "s.yaml").write_text(
        f'{MODELS}prompt: "{{{{ q }}}}"\ncases: ../elsewhere/secret.jsonl\n', encoding="utf-8"
    )
    env = cli_env(openai.url)
    first = evalkit("run", "s.yaml", "--allow-outside-cases", "--no-progress", cwd=folder, env=env)
    assert first.returncode == 0, first.stderr
    [run_dir] = (folder / "reports" / "runs").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    manifest.update(status="running", finished_at=None)  # as if it had been killed
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    refused = evalkit("run", "--resume", str(run_dir), cwd=folder, env=env)
    assert refused.returncode == 2 and "outside the suite's folder" in refused.stderr
    resumed = evalkit("run", "--resume", str(run_dir), "--allow-outside-cases", cwd=folder, env=env)
    assert resumed.returncode == 0, resumed.stderr


# ----------------------------------------------------------------------------- templates

_BIG = "{% set s = 'a' * 1000000 %}"
_HOSTILE = {
    "power": ("{{ 10**(10**9) }}", "'**' would make an integer of more than 4,300 digits"),
    "format-filter": ("{{ '%0999999999d'|format(1) }}", "filter 'format' would build more than"),
    "percent": ("{{ '%0999999999d' % 1 }}", "'%' would build more than"),
    "percent-star": ("{{ '%*d' % (999999999, 1) }}", "'%' would build more than"),
    "str-format": ("{{ '{:0999999999d}'.format(1) }}", "format() would build more than"),
    "format-map": ("{{ '{a:>999999999}'.format_map({'a': 1}) }}", "format() would build more"),
    "repeat-text": ("{{ 'a' * 10**8 }}", "'*' would build more than"),
    "repeat-list": ("{{ ([1] * 10**7)|length }}", "'*' would build more than"),
    "join": (_BIG + "{{ ([s] * 1000)|join }}", "filter 'join' would build more than"),
    "show-a-list": (_BIG + "{{ [s] * 1000 }}", "the output would build more than"),
    "doubling": (_BIG + "{% set s = s ~ s %}" * 20 + "{{ s }}", "'~' would build more than"),
    "center": ("{{ 'a'.center(10**9) }}", "center() would build more than"),
    "tojson-indent": ("{{ [1]|tojson(indent=10**9) }}", "filter 'tojson' would build more"),
    "loop-of-text": ("{% for i in range(100000) %}" + "x" * 1000 + "{% endfor %}", "the output"),
    "output-cap": ("{{ 'a' * 4000001 }}", "renders to more than 4,000,000 characters"),
    "nested-ranges": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "took longer than 1 s to render",
    ),
}


def test_templates_cannot_amplify_without_bound(write: Write, tmp_path: Path) -> None:
    lines = [MODELS.strip(), "cases:"]
    where = {}
    for name, (template, _) in _HOSTILE.items():
        lines += [f"  - id: {name}", "    prompt: |-"]
        where[name] = len(lines)
        lines.append(f"      {template}")
    write("s.yaml", "\n".join(lines) + "\n")
    result = evalkit("validate", "s.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    errors = result.stderr.strip().splitlines()
    for i, (name, (_, expected)) in enumerate(_HOSTILE.items()):
        prefix = f"s.yaml:{where[name]}: cases[{i}].prompt: case '{name}': prompt: "
        assert any(e.startswith(prefix) and expected in e for e in errors), (name, errors)
    assert len(errors) == len(_HOSTILE)


def test_a_long_text_repeated_by_aliases_counts_against_the_budget(
    write: Write, tmp_path: Path
) -> None:
    text = "x" * 400_000  # plain text: no template to check, but 41 copies are 16.4 MB
    messages = ", ".join([f"&m {{role: user, content: {text}}}"] + ["*m"] * 40)
    write("s.yaml", f"{MODELS}cases:\n  - {{id: big, messages: [{messages}]}}\n")
    result = evalkit("validate", "s.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "s.yaml:3: cases[0].messages[40].content: " in result.stderr
    assert "the text would build more than the 16,000,000 characters" in result.stderr


def test_many_slow_templates_cost_seconds_not_a_budget_each(write: Write, tmp_path: Path) -> None:
    slow = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    cases = "".join(f'  - {{id: c{i}, prompt: "{slow}{i}"}}\n' for i in range(40))
    write("s.yaml", f"{MODELS}cases:\n{cases}")
    result = evalkit("validate", "s.yaml", cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert sum("took longer than 1 s" in e for e in errors) == 3
    assert sum("not rendered: 3 renders already took longer" in e for e in errors) == 37


@pytest.mark.parametrize("source", ["{{ 'a.b'|urlize }}", "{{ [1]|pprint }}", "{{ lipsum(2) }}"])
def test_html_and_debugging_helpers_are_not_available(source: str) -> None:
    with pytest.raises(TemplateError, match=r"urlize|pprint|lipsum"):
        Renderer().text(source, {}, ("prompt",))


# ----------------------------------------------------------------------------- model labels


@pytest.mark.parametrize(
    ("models", "line", "where", "first"),
    [
        ("  - openai/gpt-4o-mini\n  - openai/gpt-4o-mini\n", 3, "models[1]", 2),
        (
            "  - {id: openai/gpt-4o, label: fast}\n  - {id: openai/gpt-4o-mini, label: fast}\n",
            3,
            "models[1].label",
            2,
        ),
        ("  - vllm/m\n  - {id: openai/gpt-4o, label: box/m}\n", 3, "models[1].label", 2),
    ],
    ids=["same-id", "same-label", "endpoint-label"],
)
def test_two_models_with_one_label_are_a_located_error(
    write: Write, models: str, line: int, where: str, first: int
) -> None:
    path = write(
        "s.yaml",
        f"models:\n{models}endpoints:\n  vllm: {{base_url: 'http://127.0.0.1:9/v1', label: box}}\n"
        'prompt: "hi"\ncases: [{vars: {}}]\n',
    )
    [problem] = check_suite(load_suite(path))
    assert str(problem).startswith(f"{path}:{line}: {where}: two models are labelled")
    assert f"(first at {path}:{first})" in str(problem)


def test_the_same_model_twice_on_the_command_line_is_an_error(write: Write, tmp_path: Path) -> None:
    write("s.yaml", 'prompt: "hi"\ncases: [{vars: {}}]\n')
    result = evalkit(
        "validate", "s.yaml", "-m", "openai/gpt-4o", "-m", "openai/gpt-4o", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "s.yaml:1: --model openai/gpt-4o is given twice" in result.stderr
