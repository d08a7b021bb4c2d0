"""Comparing runs: flipped cases, the verdict by policy, and the CI gate's exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit import InputError, load_run, load_suite, run_suite
from evalkit.analysis.compare import compare_models, compare_runs, parse_policy
from fake_openai import FakeOpenAI
from tests.conftest import run_settings


def _suite(
    tmp_path: Path,
    name: str,
    wrong: set[int],
    cases: int = 40,
    suite: str = "gate",
    must: int | None = None,
) -> Path:
    lines = [
        f"name: {suite}",
        "models: [openai/gpt-3.5-turbo]",
        "prompt: [{role: user, content: 'ANSWER: {{ out }}'}]",
        "checks: [{equals: '{{ want }}'}]",
        "cases:",
    ]
    for i in range(cases):
        out = "nope" if i in wrong else f"a{i}"
        flag = ", must_pass: true" if i == must else ""
        lines.append(f"  - {{id: c{i}, vars: {{out: {out}, want: a{i}}}{flag}}}")
    path = tmp_path / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(path: Path, tmp_path: Path) -> Path:
    return run_suite(load_suite(path), run_settings(tmp_path)).run_dir


def _compare(base: Path, new: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalkit", "compare", str(base), str(new), *args],
        capture_output=True,
        text=True,
    )


def test_a_degraded_run_is_a_regression_and_exits_1(openai: FakeOpenAI, tmp_path: Path) -> None:
    base = _run(_suite(tmp_path, "base", wrong={1}), tmp_path)
    new = _run(_suite(tmp_path, "new", wrong={1, *range(10, 22)}), tmp_path)
    result = compare_runs(load_run(base), load_run(new))
    assert result.failed and result.verdict == "regression"
    assert sorted(f.case_id for f in result.regressions) == [
        f"c{i}" for i in sorted(range(10, 22), key=str)
    ]
    assert result.fixes == [] and result.p_value < 0.001 and result.delta == pytest.approx(-0.3)
    flip = result.regressions[0]
    assert flip.base_output.startswith("a") and flip.new_output == "nope"
    assert "expected" in json.loads(flip.reasons or "{}")["equals"]
    cli = _compare(base, new)
    assert cli.returncode == 1
    assert "REGRESSION" in cli.stdout and "12 regressions (pass -> fail)" in cli.stdout


def test_noise_is_not_a_regression(openai: FakeOpenAI, tmp_path: Path) -> None:
    base = _run(_suite(tmp_path, "base", wrong={1, 2, 3}), tmp_path)
    new = _run(_suite(tmp_path, "new", wrong={2, 3, 4}), tmp_path)  # one flips each way
    cli = _compare(base, new)
    assert cli.returncode == 0, cli.stdout
    assert (
        "NO REGRESSION" in cli.stdout and "1 regressions" in cli.stdout and "1 fixes" in cli.stdout
    )
    assert _compare(base, new, "--fail-on", "any").returncode == 1  # any flip fails this policy
    assert _compare(base, new, "--fail-on", "threshold:0.05").returncode == 0


def test_must_pass_cases_fail_the_gate_on_any_regression(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    base = _run(_suite(tmp_path, "base", wrong=set(), must=7), tmp_path)
    new = _run(_suite(tmp_path, "new", wrong={7}, must=7), tmp_path)
    result = compare_runs(load_run(base), load_run(new))
    assert result.failed and result.p_value > 0.05
    assert "must_pass" in result.reasons[0] and "c7" in result.reasons[0]


def test_cases_added_or_removed_are_reported(openai: FakeOpenAI, tmp_path: Path) -> None:
    base = _run(_suite(tmp_path, "base", wrong=set(), cases=10), tmp_path)
    new = _run(_suite(tmp_path, "new", wrong=set(), cases=12), tmp_path)
    result = compare_runs(load_run(base), load_run(new))
    assert result.cases == 10 and [k[0] for k in result.only_in_new] == ["c10", "c11"]
    assert "2 only in the new run" in _compare(base, new).stdout


def test_runs_of_different_suites_are_refused(openai: FakeOpenAI, tmp_path: Path) -> None:
    base = _run(_suite(tmp_path, "base", wrong=set(), cases=3), tmp_path)
    other = _run(_suite(tmp_path, "other", wrong=set(), cases=3, suite="another-suite"), tmp_path)
    with pytest.raises(InputError, match="different suites"):
        compare_runs(load_run(base), load_run(other))
    cli = _compare(base, other)
    assert cli.returncode == 2 and "different suites" in cli.stderr
    missing = _compare(base, tmp_path / "nope")
    assert missing.returncode == 2 and "no such run directory" in missing.stderr


def test_bad_policy_is_bad_input() -> None:
    assert parse_policy("threshold:0.1") == ("threshold", 0.1)
    with pytest.raises(InputError, match="--fail-on"):
        parse_policy("threshold:lots")


def test_model_comparison_pairs_frontier_and_dead_models(
    openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai.api_key = "sk-right"
    path = tmp_path / "m.yaml"
    path.write_text(
        f"""
endpoints:
  broken: {{base_url: "{openai.url}", api_key_env: WRONG_KEY, kind: chat}}
models: [openai/gpt-4, openai/gpt-3.5-turbo, broken/x]
prompt: [{{role: user, content: 'ANSWER: {{{{ out }}}}'}}]
checks: [{{equals: fine}}]
cases:
"""
        + "".join(
            f"  - {{id: c{i}, vars: {{out: {'fine' if i % 4 else 'bad'}}}}}\n" for i in range(20)
        )
    )
    monkeypatch.setenv("WRONG_KEY", "sk-wrong")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-right")
    settings = run_settings(tmp_path, max_error_rate=1)
    frame = load_run(run_suite(load_suite(path), settings).run_dir)
    comparison = compare_models(frame)
    summary = comparison.summary.set_index("label")
    assert summary.loc["openai/gpt-4", "pass_rate"] == pytest.approx(0.75)
    assert summary.loc["openai/gpt-4", "pass_low"] < 0.75 < summary.loc["openai/gpt-4", "pass_high"]
    assert comparison.frontier == ["openai/gpt-3.5-turbo"]  # as good, cheaper; the dead one is out
    pair = comparison.pairs.set_index(["a", "b"]).loc[("openai/gpt-4", "openai/gpt-3.5-turbo")]
    assert pair["delta"] == 0 and pair["p_value"] == 1.0 and not pair["significant"]
