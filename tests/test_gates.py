"""Gates a suite declares (`gate:`, `--gate`): the schema, located errors, how each rule is
decided on a real run against the loopback fake, the exit code, the manifest and reports;
and the minimum detectable difference every fixed-sample comparison prints."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from evalkit import load_suite, parse_gate, run_suite
from evalkit.analysis.stats import paired_min_detectable_difference, wilson
from evalkit.errors import UsageError, exit_code
from fake_openai import FakeOpenAI
from tests.conftest import cli_env, run_evalkit, run_settings

Write = Callable[[str, str], Path]

CASES = 20
GOOD_IN_BAD = 10  # cases the bad variant still answers right: good 100%, bad 50%


def suite_text(gate: str = "", models: str = "[openai/gpt-4o-mini]") -> str:
    """Two variants on the fake (it answers the text after ANSWER:): `good` is always right,
    `bad` right on the first GOOD_IN_BAD cases only."""
    cases = "".join(
        f"  - {{id: c{i}, vars: {{answer: a{i}, bad: {f'a{i}' if i < GOOD_IN_BAD else 'wrong'}}}}}\n"
        for i in range(CASES)
    )
    return (
        f"name: gated\nmodels: {models}\n"
        'variants:\n  good: "ANSWER: {{ answer }}"\n  bad: "ANSWER: {{ bad }}"\n'
        "checks:\n"
        '  - {equals: "{{ answer }}", name: correct}\n'
        "  - {contains: a, name: has_a, required: false}\n"
        f"{gate}cases:\n{cases}"
    )


def run(
    openai: FakeOpenAI, tmp_path: Path, *args: str, suite: str = "s.yaml"
) -> tuple[int, str, str, Path | None]:
    """`evalkit run SUITE ARGS` as a user runs it: exit code, stdout, stderr, run directory."""
    result = run_evalkit(
        "run", suite, "--out", "runs", "--no-progress", *args, cwd=tmp_path, env=cli_env(openai.url)
    )
    found = re.search(r"^run directory: (.+)$", result.stdout, re.MULTILINE)
    run_dir = tmp_path / found[1] if found else None
    return result.returncode, result.stdout, result.stderr, run_dir


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


# the compact syntax


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("pass_rate>=0.9", {"pass_rate": {"min": 0.9}}),
        ("pass_rate >= 90%", {"pass_rate": {"min": 0.9}}),
        (
            "pass_rate[model=openai/gpt-4o,check=valid_json]>=0.8",
            {"pass_rate": {"min": 0.8, "model": "openai/gpt-4o", "check": "valid_json"}},
        ),
        ("few-shot>zero-shot", {"better": {"variant": "few-shot", "than": "zero-shot"}}),
        (
            "openai/b>openai/a[margin=0.05]",
            {"better": {"model": "openai/b", "than": "openai/a", "margin": 0.05}},
        ),
        ("B>=A", {"not_worse": {"model": "B", "than": "A"}}),
    ],
)
def test_the_compact_syntax_states_what_the_yaml_does(text: str, data: dict) -> None:
    rule = parse_gate(text, variants={"few-shot", "zero-shot"})
    assert rule.model_dump(exclude_none=True, exclude_defaults=True) == data
    again = parse_gate(rule.text, {"few-shot", "zero-shot"})  # outputs name a rule this way
    assert again.model_dump() == rule.model_dump() and again.expression == rule.text


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("pass_rate>0.9", "pass_rate>=0.9"),
        ("pass_rate>=1.5", "not between 0 and 1"),
        ("pass_rate>=lots", "not a number"),
        ("pass_rate[modle=x]>=0.9", "[modle=x] is not an option"),
        ("a>b[model=x]", "[model=x] is not an option"),
        ("a>=a", "compared with itself"),
        ("quality is good", "not a gate"),
    ],
)
def test_bad_syntax_is_a_usage_error(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=re.escape(says)) as caught:
        parse_gate(text)
    assert caught.value.exit_code == 2 and repr(text) in str(caught.value)


def test_bad_gate_option_exits_2_before_anything_is_sent(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    write("s.yaml", suite_text())
    code, _, err, run_dir = run(openai, tmp_path, "--gate", "pass_rate=0.9")
    assert code == 2 and "--gate 'pass_rate=0.9': not a gate" in err
    assert run_dir is None and openai.count() == 0


# located errors


def test_gate_names_that_do_not_exist_are_located_errors(write: Write, tmp_path: Path) -> None:
    gate = (
        "gate:\n"
        "  - pass_rate: {min: 0.9, variant: goood}\n"
        "  - pass_rate: {min: 0.9, model: openai/gpt-4o}\n"
        "  - pass_rate: {min: 0.9, check: corect}\n"
        "  - better: {variant: good, than: worse}\n"
    )
    write("s.yaml", suite_text(gate))
    result = run_evalkit("validate", "s.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "s.yaml:10: gate[0].pass_rate.variant: variant 'goood' is not one of this run's variants "
        "(good, bad) (did you mean 'good'?)",
        "s.yaml:11: gate[1].pass_rate.model: model 'openai/gpt-4o' is not one of this run's "
        "models (openai/gpt-4o-mini) (did you mean 'openai/gpt-4o-mini'?)",
        "s.yaml:12: gate[2].pass_rate.check: check 'corect' is not one of this run's checks "
        "(correct, has_a) (did you mean 'correct'?)",
        "s.yaml:13: gate[3].better.than: variant 'worse' is not one of this run's variants "
        "(good, bad)",
    ]


def test_malformed_gate_rules_are_located_errors(write: Write, tmp_path: Path) -> None:
    gate = (
        "gate:\n"
        "  - pass_rate: {min: 1.5}\n"
        "  - better: {than: bad}\n"
        "  - pass_rat: 0.9\n"
        "  - {pass_rate: 0.9, better: {variant: good, than: bad}}\n"
    )
    write("s.yaml", suite_text(gate))
    result = run_evalkit("validate", "s.yaml", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith("s.yaml:10: gate[0].pass_rate.min: ") and "1" in lines[0]
    assert lines[1].startswith("s.yaml:11: gate[1].better: ") and "exactly one of model" in lines[1]
    assert lines[2].startswith("s.yaml:12: gate[2].pass_rat: ") and "unknown key" in lines[2]
    assert lines[3].startswith("s.yaml:13: gate[3]: ") and "pass_rate, better" in lines[3]


def test_a_gate_option_naming_nothing_of_the_run_exits_2(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    write("s.yaml", suite_text())
    code, _, err, run_dir = run(openai, tmp_path, "--gate", "pass_rate[variant=great]>=0.5")
    assert code == 2 and run_dir is None and openai.count() == 0
    assert (
        "--gate: 'pass_rate[variant=great]>=0.5': variant 'great' is not one of this run's" in err
    )


# deciding the gate, and the exit code


def test_a_gate_that_holds_exits_0_though_samples_failed(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    gate = (
        "gate:\n  - pass_rate: {min: 0.9, variant: good}\n  - better: {variant: good, than: bad}\n"
    )
    write("s.yaml", suite_text(gate))
    code, out, err, run_dir = run(openai, tmp_path)
    assert code == 0, err
    assert "10 sample(s) failed their checks; the gate decides the exit code" in out
    low, high = wilson(CASES, CASES)
    assert "gate held" in out
    assert (
        f"held    pass_rate[variant=good]>=0.9  openai/gpt-4o-mini [good]: 100.0% of 20 cases "
        f"pass (20/20, 95% Wilson interval {low:.1%} to {high:.1%}), at least 90.0%" in out
    )
    assert "held    good>bad  good vs bad (openai/gpt-4o-mini): good +50.0 points" in out
    assert "McNemar p = 0.00195 < 0.05" in out  # 10 disagreements, all won by good: 2 / 2^10
    assert run_dir is not None
    gate_record = manifest(run_dir)["gate"]
    assert gate_record["held"] is True and gate_record["source"] == "suite"
    assert gate_record["rules"] == ["pass_rate[variant=good]>=0.9", "good>bad"]
    assert [o["held"] for o in gate_record["outcomes"]] == [True, True]


def test_a_gate_that_fails_exits_1_with_the_interval_that_decided(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    gate = "gate:\n  - pass_rate: 0.75\n  - pass_rate: {min: 0.6, check: has_a}\n"
    write("s.yaml", suite_text(gate))
    code, out, _, run_dir = run(openai, tmp_path)
    assert code == 1
    low, high = wilson(GOOD_IN_BAD, CASES)
    assert "gate FAILED (2 of 4)" in out
    assert (
        f"FAILED  pass_rate>=0.75  openai/gpt-4o-mini [bad]: 50.0% of 20 cases pass (10/20, 95% "
        f"Wilson interval {low:.1%} to {high:.1%}), below 75.0%" in out
    )
    assert "held    pass_rate>=0.75  openai/gpt-4o-mini [good]: 100.0%" in out
    assert (
        "FAILED  pass_rate[check=has_a]>=0.6  openai/gpt-4o-mini [bad]: check has_a: 50.0%" in out
    )
    assert run_dir is not None and manifest(run_dir)["gate"]["held"] is False


def test_the_gate_option_replaces_the_suite_gate(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    write("s.yaml", suite_text("gate:\n  - pass_rate: 0.99\n"))  # fails on its own: bad is 50%
    code, out, err, run_dir = run(
        openai, tmp_path, "--gate", "pass_rate[variant=good]>=0.9", "--gate", "good>bad"
    )
    assert code == 0, err
    assert "pass_rate>=0.99" not in out and "good>bad" in out
    assert run_dir is not None
    record = manifest(run_dir)
    assert record["gate"]["source"] == "command line"
    assert record["options"]["gates"] == ["pass_rate[variant=good]>=0.9", "good>bad"]
    code, out, _, _ = run(openai, tmp_path, "--gate", "bad>=good")
    assert code == 1 and "FAILED  bad>=good  bad vs good (openai/gpt-4o-mini)" in out
    assert "worse, McNemar p = 0.00195 < 0.05" in out


def test_comparisons_of_models_are_paired_per_variant(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    """The fake answers every model alike: no model is better, none is shown worse."""
    write("s.yaml", suite_text(models="[openai/gpt-4o-mini, openai/gpt-4.1-mini]"))
    code, out, _, _ = run(
        openai,
        tmp_path,
        "--gate",
        "openai/gpt-4.1-mini>=openai/gpt-4o-mini",
        "--gate",
        "openai/gpt-4.1-mini>openai/gpt-4o-mini[margin=0.05]",
    )
    assert code == 1
    for variant in ("good", "bad"):
        subject = f"openai/gpt-4.1-mini vs openai/gpt-4o-mini ({variant})"
        assert f"held    openai/gpt-4.1-mini>=openai/gpt-4o-mini  {subject}: " in out
        assert f"FAILED  openai/gpt-4.1-mini>openai/gpt-4o-mini[margin=0.05]  {subject}" in out
    assert "the interval's low end is not above +5 points" in out
    # no disagreement in 20 cases: nothing smaller than everything could have been seen
    assert "with 20 cases this comparison could not detect any difference" in out


def test_a_run_that_cannot_complete_exits_3_whatever_the_gate(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.script([400] * 10)
    write("s.yaml", suite_text("gate:\n  - pass_rate: 0.0\n"))  # would hold on any run
    code, out, err, run_dir = run(openai, tmp_path, "-j", "1")
    assert code == 3 and "error rate" in err
    assert "gate held" not in out and run_dir is not None
    assert manifest(run_dir)["gate"]["held"] is None  # not judged: the run did not complete


def test_without_a_gate_failed_samples_exit_1_as_before(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    write("s.yaml", suite_text())
    code, out, _, run_dir = run(openai, tmp_path)
    assert code == 1 and "10 sample(s) failed their checks\n" in out and "\ngate " not in out
    assert run_dir is not None and manifest(run_dir).get("gate") is None


def test_a_baseline_regression_fails_a_run_whose_gate_holds(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    write("s.yaml", suite_text())
    _, _, _, base = run(openai, tmp_path)
    write("s.yaml", suite_text().replace('bad: "ANSWER: {{ bad }}"', 'bad: "ANSWER: nope"'))
    assert base is not None
    code, out, _, _ = run(
        openai, tmp_path, "--gate", "pass_rate[variant=good]>=0.9", "--baseline", str(base)
    )
    assert code == 1 and "gate held" in out and "REGRESSION" in out


def test_the_exit_code_is_decided_in_one_place() -> None:
    assert exit_code(failed=True, gates=[True, True]) == 0  # the gate decides, not the samples
    assert exit_code(gates=[True, False]) == 1
    assert exit_code(complete=False, gates=[True]) == 3
    assert exit_code(failed=True) == 1 and exit_code() == 0


def test_the_python_api_judges_the_suite_gate(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    path = write(
        "s.yaml", suite_text("gate:\n  - better: {variant: good, than: bad, margin: 0.2}\n")
    )
    result = run_suite(load_suite(path), run_settings(tmp_path))
    assert result.gates is not None and [g.held for g in result.gates] == [True]
    outcome = result.gates[0]
    assert outcome.cases == CASES and outcome.observed == pytest.approx(0.5)
    assert outcome.low > 0.2 and result.exit_code == 0


# reports, compare, and the minimum detectable difference


def test_reports_show_the_gate_and_report_reads_it_back(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    write("s.yaml", suite_text("gate:\n  - pass_rate: 0.75\n"))
    code, _, _, run_dir = run(openai, tmp_path, "--report")
    assert code == 1 and run_dir is not None
    for name in ("report.md", "junit.xml", "report.html"):
        (run_dir / name).unlink()
    assert run_evalkit("report", str(run_dir), cwd=tmp_path).returncode == 0  # from the manifest
    md = (run_dir / "report.md").read_text()
    assert "### ❌ Gate: failed" in md
    assert "| `pass_rate>=0.75` | openai/gpt-4o-mini \\[bad\\] | **failed** | 50.0% of 20" in md
    html = (run_dir / "report.html").read_text()
    assert '<section id="gate">' in html and "Gate: failed" in html
    assert "<code>pass_rate&gt;=0.75</code>" in html
    suites = {s.get("name"): s for s in ET.fromstring((run_dir / "junit.xml").read_text())}
    gate = suites["gated.gate"]
    assert gate.get("tests") == "2" and gate.get("failures") == "1"
    failing = [t for t in gate if t.find("failure") is not None]
    assert [t.get("name") for t in failing] == ["pass_rate>=0.75 openai/gpt-4o-mini [bad]"]


def test_every_comparison_says_what_it_could_have_detected(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    write("s.yaml", suite_text("gate:\n  - pass_rate: 0.0\n"))
    code, out, _, base = run(openai, tmp_path, "--report")
    # the run's own two variants: 10 of 20 cases disagree
    expected = round(100 * paired_min_detectable_difference(CASES, discordance=0.5))
    line = f"with 20 cases this comparison could only detect a difference of {expected} points"
    assert code == 0 and line in out  # the summary's paired difference of the variants
    assert base is not None and line in (base / "report.md").read_text()
    assert line in (base / "report.html").read_text()
    # two runs: the second breaks 8 of the bad variant's 10 right answers
    worse = suite_text()
    for i in range(8):
        worse = worse.replace(f"bad: a{i}}}", "bad: zz}")
    write("s.yaml", worse)
    _, _, _, new = run(openai, tmp_path)
    assert new is not None
    result = run_evalkit("compare", str(base), str(new), cwd=tmp_path)
    assert result.returncode == 1 and "8 regressions" in result.stdout
    mdd = round(100 * paired_min_detectable_difference(2 * CASES, discordance=8 / (2 * CASES)))
    assert 0 < mdd < 100
    assert f"with 40 cases this comparison could only detect a difference of {mdd} points" in (
        result.stdout
    )
    assert "the baseline's gate: 2 of 2 held" in result.stdout  # read back from its manifest


def test_a_resumed_run_is_judged_by_the_gate_it_started_with(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    write("s.yaml", suite_text())
    code, _, _, run_dir = run(
        openai, tmp_path, "--gate", "pass_rate[variant=good]>=0.9", "--max-cost", "0"
    )
    assert code == 3 and run_dir is not None  # the ceiling stopped it before a request
    assert manifest(run_dir)["gate"]["held"] is None
    result = run_evalkit(
        "run",
        "--resume",
        str(run_dir),
        "--max-cost",
        "1000",
        "--no-progress",
        cwd=tmp_path,
        env=cli_env(openai.url),
    )
    assert result.returncode == 0, result.stdout + result.stderr  # bad's failures do not count
    assert "held    pass_rate[variant=good]>=0.9" in result.stdout
    record = manifest(run_dir)["gate"]
    assert record["held"] is True and record["source"] == "command line"


def test_a_shard_is_not_judged_by_the_gate(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    write("s.yaml", suite_text("gate:\n  - pass_rate: 0.0\n"))  # would hold on any run
    code, out, _, run_dir = run(openai, tmp_path, "--shard", "1/2")
    assert code == 1 and "gate held" not in out  # as without a gate: failed samples count
    assert run_dir is not None and manifest(run_dir)["gate"]["held"] is None
