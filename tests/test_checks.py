"""The check catalogue: each check passes, fails, and rejects a bad configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkit import Check, SuiteError, load_suite
from evalkit.scoring.checks import combine
from evalkit.scoring.evaluate import evaluate

RECORD = {"finish_reason": "stop", "completion_tokens": 12, "latency_s": 0.25, "cost_usd": 0.002}


def _verdict(
    spec: object, output: str, record: dict[str, object] | None = None
) -> tuple[bool, float, str]:
    v = evaluate(Check.model_validate(spec), output, record or RECORD)
    return v.passed, v.score, v.reason


@pytest.mark.parametrize(
    ("spec", "passing", "failing"),
    [
        ({"equals": "billing"}, " billing\n", "Billing"),
        ({"equals": {"value": "billing", "ignore_case": True}}, "BILLING", "bill"),
        ({"contains": "refund"}, "a refund now", "a Refund now"),
        ({"icontains": "refund"}, "a REFUND now", "money back"),
        ({"not_contains": "sorry"}, "fine", "so sorry"),
        ({"starts_with": "Yes"}, "Yes, sure", "Well, yes"),
        ({"ends_with": "."}, "done.", "done"),
        ({"contains_any": ["cat", "dog"]}, "hot dog", "bird"),
        ({"contains_all": ["sum(", "len("]}, "sum(x)/len(x)", "sum(x)"),
        ({"match": ["Paris", "paris"]}, " Paris, France", "It is Paris"),
        ({"regex": r"^\d{3}-\d{4}$"}, "555-1234", "5551234"),
        ({"is_json": None}, '{"a": 1}', "{a: 1}"),
        ({"json_schema": {"type": "object", "required": ["a"]}}, '{"a": 1}', '{"b": 1}'),
        (
            {"json_path": {"path": "$.items[1].name", "equals": "y"}},
            '{"items": [{"name": "x"}, {"name": "y"}]}',
            '{"items": [{"name": "x"}]}',
        ),
        ({"similarity": {"value": "hello world", "threshold": 0.8}}, "hello world!", "goodbye"),
        ({"not": {"contains": "AI"}}, "I am a person", "As an AI"),
    ],
)
def test_output_checks_pass_and_fail(spec: object, passing: str, failing: str) -> None:
    assert _verdict(spec, passing)[0] is True
    passed, score, reason = _verdict(spec, failing)
    assert passed is False and score < 1 and reason


@pytest.mark.parametrize(
    ("spec", "record", "expected"),
    [
        ({"finish_reason": "stop"}, {"finish_reason": "stop"}, True),
        ({"finish_reason": ["stop", "length"]}, {"finish_reason": "length"}, True),
        ({"finish_reason": "stop"}, {"finish_reason": "content_filter"}, False),
        ({"max_completion_tokens": 12}, RECORD, True),
        ({"max_tokens": 11}, RECORD, False),
        ({"max_latency_ms": 300}, RECORD, True),
        ({"max_latency_ms": 200}, RECORD, False),
        ({"max_cost_usd": 0.01}, RECORD, True),
        ({"max_cost": 0.001}, RECORD, False),
        ({"max_cost_usd": 1}, {"cost_usd": None}, False),
    ],
)
def test_record_checks(spec: object, record: dict[str, object], expected: bool) -> None:
    assert _verdict(spec, "x", record)[0] is expected


def test_contains_all_scores_partially_and_similarity_scores_its_ratio() -> None:
    assert _verdict({"contains_all": ["a", "b", "c", "d"]}, "a b")[1] == pytest.approx(0.5)
    assert 0.5 < _verdict({"similarity": "kitten"}, "sitten")[1] < 1


def test_combine_uses_required_checks_and_weights() -> None:
    checks = {
        "a": Check.model_validate({"contains": "x", "weight": 3}),
        "b": Check.model_validate({"contains": "y", "required": False}),
    }
    verdicts = {name: evaluate(c, "x alone", {}) for name, c in checks.items()}
    results = {name: (v.passed, v.score) for name, v in verdicts.items()}
    meta = {name: (c.weight, c.required) for name, c in checks.items()}
    assert combine(results, meta) == (True, pytest.approx(0.75))


@pytest.mark.parametrize(
    ("check", "error"),
    [
        ("{regex: '(['}", "regex: invalid pattern"),
        ("{json_schema: {type: 12}}", "not a valid JSON Schema"),
        ("{python: not-a-ref}", "expected 'module:function'"),
        ("{finish_reason: stopped}", "finish_reason"),
        ("{contains: [a, b]}", "contains: Input should be a valid string"),
        ("{similarity: {value: x, threshold: 2}}", "threshold"),
        ("{judge: {rubric: polite}}", "judge: model: Field required"),
        ("{contains: a, equals: b}", "exactly one kind"),
        ("{contians: a}", "did you mean 'contains'"),
    ],
)
def test_bad_check_configuration_is_reported_at_validation(
    check: str, error: str, tmp_path: Path
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"prompt: 'Q'\ncases:\n  - vars: {{}}\n    expect: [{check}]\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert error in str(info.value) and info.value.problems[0].line == 4


def test_python_check_runs_a_function_from_the_suite_folder(tmp_path: Path) -> None:
    (tmp_path / "grading.py").write_text(
        "def shout(output, record):\n"
        "    return output.isupper(), 'not shouting'\n"
        "def half(output, record):\n"
        "    return 0.5\n"
        "def boom(output, record):\n"
        "    raise RuntimeError('grader broke')\n"
    )

    def run(ref: str, output: str) -> tuple[bool, float, str]:
        v = evaluate(Check.model_validate({"python": ref}), output, RECORD, tmp_path)
        return v.passed, v.score, v.reason

    assert run("grading:shout", "HEY")[0] is True
    assert run("grading:shout", "hey") == (False, 0.0, "not shouting")
    assert run("grading:half", "x") == (True, 0.5, "")
    passed, _, reason = run("grading:boom", "x")
    assert not passed and "RuntimeError: grader broke" in reason
    passed, _, reason = run("grading:missing", "x")
    assert not passed and "has no function missing" in reason
    passed, _, reason = run("nowhere:f", "x")
    assert not passed and "no module file" in reason
