"""The public API from Python: run, resume, dry run, compare, gate and report, as the CLI
uses them, against the loopback fake server; the runner returns what it did, printing nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import evalkit
from evalkit.errors import exit_code
from tests.conftest import run_settings

Write = Callable[[str, str], Path]

SUITE = """
name: api
models: [openai/gpt-3.5-turbo]
params: {temperature: 0, max_tokens: 16}
prompt: [{role: user, content: "ANSWER: {{ out }}"}]
checks: [{equals: "{{ want }}"}]
cases:
"""


def _suite(write: Write, name: str, wrong: set[int], cases: int = 12) -> evalkit.Suite:
    lines = "".join(
        f"  - {{id: c{i}, vars: {{out: {'nope' if i in wrong else f'a{i}'}, want: a{i}}}}}\n"
        for i in range(cases)
    )
    return evalkit.load_suite(write(f"{name}.yaml", SUITE + lines))


def test_a_run_returns_its_result_and_prints_nothing(
    openai: object, write: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[Path] = []
    result = evalkit.run_suite(
        _suite(write, "s", wrong={1}), run_settings(tmp_path, on_start=started.append)
    )
    assert started == [result.run_dir] and result.run_dir.parent == tmp_path / "runs"
    assert capsys.readouterr().out == ""
    assert result.status == "complete" and result.failed_samples == 1 and result.exit_code == 1
    assert result.comparison is None


def test_a_run_ends_without_pandas_and_reads_its_frame_when_asked(
    openai: object, write: Write, tmp_path: Path
) -> None:
    """The end of a run (results.parquet, the summary the CLI prints) needs no pandas: a
    fifth of a 5,000-request run's time. `result.frame` then reads the run's DataFrame."""
    import subprocess
    import sys

    lines = "".join(f"  - {{id: c{i}, vars: {{out: a{i}, want: a{i % 5}}}}}\n" for i in range(10))
    path = write("quiet.yaml", SUITE + lines)
    code = f"""
import sys
from pathlib import Path
import evalkit
from evalkit import console
settings = evalkit.RunSettings(out=Path({str(tmp_path / "runs")!r}), progress=False)
result = evalkit.run_suite(evalkit.load_suite({str(path)!r}), settings)
text = console.run_summary(result)
print("pandas" in sys.modules, result.failed_samples, result.summary[0]["pass_rate"])
frame = result.frame
print("pandas" in sys.modules, len(frame), frame.equals(evalkit.load_run(result.run_dir)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["False 5 0.5", "True 10 True"]


def test_compare_gate_and_reports(
    openai: object, write: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = evalkit.run_suite(_suite(write, "base", wrong={1}), run_settings(tmp_path))
    new = evalkit.run_suite(_suite(write, "new", wrong={1, *range(3, 9)}), run_settings(tmp_path))

    comparison = evalkit.compare_runs(base.run_dir, new.run_dir)  # run directories
    assert isinstance(comparison, evalkit.RunComparison)
    assert comparison.failed and comparison.exit_code == 1 and len(comparison.regressions) == 6
    same = evalkit.compare_runs(evalkit.load_run(base.run_dir), base.frame)  # or frames
    assert not same.failed and same.exit_code == 0

    gated = evalkit.Gate.load(base.run_dir, "significant").judge(new)
    assert gated.comparison is not None and gated.comparison.failed and gated.exit_code == 1
    lenient = evalkit.Gate.load(base.run_dir, "threshold:0.9").judge(new)
    assert lenient.failed_samples == 7 and lenient.exit_code == 0  # the gate decides
    with pytest.raises(evalkit.InputError, match="--fail-on"):
        evalkit.Gate.load(base.run_dir, "sometimes")

    paths = evalkit.write_reports(new.run_dir, tmp_path / "rep", ["md", "junit"], comparison)
    assert [p.name for p in paths] == ["report.md", "junit.xml"] and all(p.exists() for p in paths)
    assert "regression" in paths[0].read_text().lower()
    assert capsys.readouterr().out == ""


def test_an_unfinished_run_is_resumed_when_the_offer_is_taken(
    openai: object, write: Write, tmp_path: Path
) -> None:
    suite = _suite(write, "s", wrong=set())
    first = evalkit.run_suite(suite, run_settings(tmp_path))
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    manifest["status"] = "interrupted"
    (first.run_dir / "manifest.json").write_text(json.dumps(manifest))

    offered: list[Path] = []

    def decline(run_dir: Path) -> bool:
        offered.append(run_dir)
        return False

    declined = evalkit.run_suite(suite, run_settings(tmp_path, offer_resume=decline))
    assert offered == [first.run_dir] and declined.run_dir != first.run_dir

    started: list[Path] = []
    taken = evalkit.run_suite(
        suite, run_settings(tmp_path, offer_resume=lambda _: True, on_start=started.append)
    )
    assert taken.run_dir == first.run_dir == started[0] and taken.status == "complete"
    assert evalkit.run_suite(suite, run_settings(tmp_path)).run_dir != first.run_dir  # no offer

    with pytest.raises(evalkit.InputError, match="complete"):
        evalkit.resume_run(first.run_dir, run_settings(tmp_path))


def test_resume_run_continues_a_killed_run(openai: Any, write: Write, tmp_path: Path) -> None:
    first = evalkit.run_suite(_suite(write, "s", wrong=set()), run_settings(tmp_path))
    journal = first.run_dir / "journal.jsonl"
    journal.write_text("".join(journal.read_text().splitlines(keepends=True)[:4]))
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    manifest.update(status="running", finished_at=None)
    (first.run_dir / "manifest.json").write_text(json.dumps(manifest))
    openai.reset()
    resumed = evalkit.resume_run(first.run_dir, run_settings(tmp_path, cache=False))
    assert resumed.run_dir == first.run_dir and resumed.status == "complete"
    assert 0 < openai.count() < 12 and len(evalkit.load_run(first.run_dir)) == 12


def test_dry_run_estimates_and_refuses_overflows(
    openai: object, write: Write, tmp_path: Path
) -> None:
    dry = evalkit.dry_run(_suite(write, "s", wrong=set()), run_settings(tmp_path))
    assert isinstance(dry, evalkit.DryRun) and len(dry) == 1 and dry[0] is dry.estimates[0]
    assert isinstance(dry[0], evalkit.ModelEstimate) and dry[0].requests == 12
    assert dry.as_dict()["models"][0]["model"] == "openai/gpt-3.5-turbo"
    dry.raise_for_problems()  # nothing over a context window
    assert not (tmp_path / "runs").exists()

    long = write(
        "o.yaml",
        "models: [{id: openai/gpt-4, context_window: 50}]\nparams: {max_tokens: 10}\n"
        f"prompt: '{'lorem ipsum ' * 40}{{{{ a }}}}'\ncases: [{{id: long, vars: {{a: b}}}}]\n",
    )
    over = evalkit.dry_run(evalkit.load_suite(long), run_settings(tmp_path))
    assert [o["case_id"] for o in over[0].overflows] == ["long"] and over.problems
    with pytest.raises(evalkit.SuiteError, match="case 'long'"):
        over.raise_for_problems()
    allowed = evalkit.dry_run(evalkit.load_suite(long), run_settings(tmp_path, allow_overflow=True))
    assert allowed.problems == [] and allowed[0].overflows


def test_one_function_decides_the_exit_code() -> None:
    assert exit_code() == 0
    assert exit_code(failed=True) == 1
    assert exit_code(evalkit.SuiteError([])) == exit_code(evalkit.UnknownModel("x")) == 2
    assert exit_code(evalkit.TemplateError("bad", ("prompt",))) == 2
    assert exit_code(evalkit.RunError("disk full")) == exit_code(complete=False) == 3
    assert exit_code(complete=False, failed=True) == 3
    assert exit_code(KeyboardInterrupt()) == 3
    assert exit_code(ZeroDivisionError()) == exit_code(evalkit.EvalkitError()) == 4
