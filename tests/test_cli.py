"""The command line as a user runs it: a real subprocess, real exit codes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).parent.parent
Write = Callable[[str, str], Path]


def evalkit(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalkit", *args], cwd=cwd, capture_output=True, text=True
    )


def test_help_lists_the_commands() -> None:
    result = evalkit("--help")
    assert result.returncode == 0
    assert "validate" in result.stdout and "models" in result.stdout


def test_no_arguments_shows_help() -> None:
    result = evalkit()
    assert "Usage" in result.stdout + result.stderr


def test_validate_the_example_suites() -> None:
    suites = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "suites").glob("*.yaml"))
    result = evalkit("validate", *suites)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok (") == len(suites)


def test_broken_suite_exits_2_with_file_line_errors(write: Write, tmp_path: Path) -> None:
    write("bad.yaml", 'prompt: "{{ q }}"\nsampels: 3\ncases:\n  - {id: a, vars: {}}\n')
    result = evalkit("validate", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "bad.yaml:2: sampels: unknown key 'sampels' (did you mean 'samples'?)" in result.stderr


def test_validate_reports_problems_of_every_suite(write: Write, tmp_path: Path) -> None:
    write("one.yaml", 'prompt: "{{ q }}"\ncases: [{vars: {}}]\n')
    write("two.yaml", "cases: []\n")
    result = evalkit("validate", "one.yaml", "two.yaml", "missing.yaml", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["missing.yaml", "one.yaml", "two.yaml"]


def test_model_option_overrides_the_suite_models(write: Write, tmp_path: Path) -> None:
    write("s.yaml", 'prompt: "Q"\nsuffix: "S"\ncases: [{vars: {}}]\n')
    assert evalkit("validate", "s.yaml", "-m", "openai/gpt-4", cwd=tmp_path).returncode == 2
    ok = evalkit("validate", "s.yaml", "-m", "openai/gpt-3.5-turbo-instruct", cwd=tmp_path)
    assert ok.returncode == 0 and "1 model(s)" in ok.stdout


def test_models_lists_the_catalogue_with_prices() -> None:
    result = evalkit("models")
    assert result.returncode == 0
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert {"openai/gpt-4", "openai/gpt-3.5-turbo-instruct", "openai/babbage-002"} <= set(rows)
    assert "30.00" in rows["openai/gpt-4"] and "60.00" in rows["openai/gpt-4"]
    assert "insert (suffix)" in rows["openai/gpt-3.5-turbo-instruct"]


def test_unknown_option_is_a_usage_error() -> None:
    result = evalkit("validate", "--no-such-flag", "x.yaml")
    assert result.returncode == 2
    assert "No such option" in result.stderr
