"""The command line as a user runs it: a real subprocess, real exit codes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fake_openai import FakeOpenAI
from tests.conftest import cli_env

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
    assert "genai-prices" in rows["openai/gpt-4.1"] and "reasoning" in rows["openai/o3"]


def test_models_lists_only_the_ids_that_match() -> None:
    result = evalkit("models", "GPT-4.1")
    ids = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert result.returncode == 0 and "openai/gpt-4.1" in ids and "openai/gpt-4.1-mini" in ids
    assert all("gpt-4.1" in i for i in ids)


def test_unknown_option_is_a_usage_error() -> None:
    result = evalkit("validate", "--no-such-flag", "x.yaml")
    assert result.returncode == 2
    assert "No such option" in result.stderr


RUN_SUITE = """
models: [openai/gpt-3.5-turbo]
prompt: [{role: user, content: "ANSWER: {{ a }}"}]
cases:
"""


def _cases(count: int) -> str:
    return "".join(f"  - {{id: c{i}, vars: {{a: answer{i}}}}}\n" for i in range(count))


def test_run_prints_the_run_directory_and_exits_0(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    write("s.yaml", RUN_SUITE + _cases(5))
    result = subprocess.run(
        [sys.executable, "-m", "evalkit", "run", "s.yaml", "--out", "runs", "-j", "4"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cli_env(openai.url),
    )
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("run directory: "))
    run_dir = tmp_path / line.removeprefix("run directory: ")
    assert (run_dir / "results.parquet").exists()
    assert "openai/gpt-3.5-turbo: 5 requests, 0 errors" in result.stdout
    assert "5/5 done" in result.stderr  # plain progress lines when not on a terminal


def test_run_without_a_key_exits_2_before_sending(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    write("s.yaml", RUN_SUITE + _cases(2))
    result = subprocess.run(
        [sys.executable, "-m", "evalkit", "run", "s.yaml", "--out", "runs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cli_env(openai.url, key=None),
    )
    assert result.returncode == 2
    assert "OPENAI_API_KEY" in result.stderr and openai.count() == 0


def test_run_with_too_many_errors_exits_3(openai: FakeOpenAI, write: Write, tmp_path: Path) -> None:
    openai.script([400] * 3)
    write("s.yaml", RUN_SUITE + _cases(4))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "evalkit",
            "run",
            "s.yaml",
            "--out",
            "runs",
            "-j",
            "1",
            "--max-error-rate",
            "0.5",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cli_env(openai.url),
    )
    assert result.returncode == 3
    assert "error rate 75.0%" in result.stderr


def test_interrupt_keeps_what_finished_and_exits_3(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    import json
    import signal
    import time

    openai.latency_ms = 100
    write("s.yaml", RUN_SUITE + _cases(200))
    process = subprocess.Popen(
        [sys.executable, "-m", "evalkit", "run", "s.yaml", "--out", "runs", "-j", "2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(openai.url),
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    run_dir = tmp_path / line.strip().removeprefix("run directory: ")
    deadline = time.monotonic() + 30
    while openai.count() < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 3, err
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    journal = (run_dir / "journal.jsonl").read_text().splitlines()
    assert 0 < len(journal) < 200
    assert all(json.loads(x)["choices"] for x in journal)  # every kept line is whole
