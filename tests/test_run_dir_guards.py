"""Guards around the run directory: a budget no server can talk past, a resume that counts what
was spent, full and read-only disks, and journal lines or cache rows that are not what evalkit
writes. Real HTTP to the loopback fake, real (tiny or read-only) filesystems."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from evalkit import RunSettings, load_run, load_suite, run_suite
from evalkit.cache import FILE as CACHE_FILE
from evalkit.cli import main
from tests.fake_openai import FakeOpenAI

Write = Callable[[str, str], Path]

# gpt-4 has prices; every answer uses its whole max_tokens, so a request costs its reservation
SUITE = """
models: [openai/gpt-4]
params: {temperature: 0, max_tokens: 10}
prompt: [{role: user, content: "ANSWER: {{ a }} one two three four five six seven eight nine ten"}]
cases:
"""


def _cases(count: int) -> str:
    return "".join(f"  - {{id: c{i}, vars: {{a: answer{i}}}}}\n" for i in range(count))


def _settings(tmp_path: Path, **overrides: Any) -> RunSettings:
    values: dict[str, Any] = {
        "out": tmp_path / "runs",
        "retry_initial_s": 0.01,
        "progress": False,
        "concurrency": 1,
        "cache": False,
    }
    values.update(overrides)
    return RunSettings(**values)


def _manifest(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "manifest.json").read_text()))


def _as_if_killed(run_dir: Path) -> None:
    """Leave `run_dir` as SIGKILL does: manifest still `running`, no counts, no results."""
    manifest = _manifest(run_dir)
    for name in ("counts", "per_model", "reason"):
        manifest.pop(name, None)
    manifest.update(status="running", finished_at=None)
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (run_dir / "results.parquet").unlink()


# ----------------------------------------------------------------------------- item 18: records

NOT_REQUESTS = [
    {},
    {"case_id": "c0", "model": "openai/gpt-4"},  # no key
    {"key": "k", "case_id": "c1", "model": "openai/gpt-4", "sample": "zero"},
    {"key": "k2", "case_id": "c1", "model": "openai/gpt-4", "sample": 0, "n": 10**9},
    {"key": "k3", "case_id": "c1", "model": "m", "sample": 0, "choices": [5]},
    {"key": "k4", "case_id": "c1", "model": "m", "sample": 0, "started_at": "yesterday"},
    {"key": "k5", "case_id": "c1", "model": "m", "sample": 0, "latency_s": "fast"},
    {"key": "k6", "case_id": "c1", "model": "m", "sample": 0, "choices": [{"checks": {"a": 1}}]},
    {"kind": "retire", "slots": 5},
    {"kind": "retire", "slots": [["c0"]]},
    {"kind": "select", "case_id": "c0", "model": "openai/gpt-4", "selected": 3},
    {"kind": "judge", "case_id": "c0", "model": "openai/gpt-4", "sample": 0, "check": "x"},
    {"kind": "weird"},
]


def test_journal_lines_that_are_not_entries_are_skipped_with_a_warning(
    openai: FakeOpenAI, write: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write("s.yaml", SUITE + _cases(6))
    first = run_suite(load_suite(path), _settings(tmp_path))
    journal = first.run_dir / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    bad = [json.dumps(entry) + "\n" for entry in NOT_REQUESTS]
    journal.write_text("".join(lines[:3] + bad))  # c0..c2 finished, then garbage
    _as_if_killed(first.run_dir)
    capsys.readouterr()
    frame = load_run(first.run_dir)
    assert sorted(frame["case_id"]) == ["c0", "c1", "c2"]  # no phantom rows
    err = capsys.readouterr().err
    assert f"{journal}:4: " in err and "skipped" in err
    assert err.count("warning:") <= 6  # a few lines, then how many more
    openai.reset()
    assert main(["run", "--resume", str(first.run_dir), "--no-progress", "--no-cache"]) == 0
    sent = sorted(r.body["messages"][-1]["content"].split()[1] for r in openai.requests)
    assert sent == ["answer3", "answer4", "answer5"]  # nothing finished is sent again
    frame = load_run(first.run_dir)
    assert sorted(frame["case_id"]) == [f"c{i}" for i in range(6)]
    assert frame["output"].notna().all()


@pytest.mark.parametrize(
    "stored",
    ["{}", "[1, 2]", "not json", '{"choices": "x"}', '{"choices": []}', '{"choices": [7]}'],
)
def test_a_cache_row_that_is_not_an_answer_is_a_miss_with_a_warning(
    openai: FakeOpenAI,
    write: Write,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    stored: str,
) -> None:
    suite = load_suite(write("s.yaml", SUITE.replace("gpt-4", "gpt-3.5-turbo") + _cases(3)))
    run_suite(suite, _settings(tmp_path, cache=True))
    cache_file = Path(os.environ["EVALKIT_CACHE_DIR"]) / CACHE_FILE
    db = sqlite3.connect(cache_file)
    with db:
        db.execute("UPDATE answers SET answer = ? WHERE body LIKE '%answer1 %'", (stored,))
    db.close()
    openai.reset()
    capsys.readouterr()
    again = run_suite(suite, _settings(tmp_path, cache=True))
    assert again.status == "complete" and again.exit_code == 0
    assert openai.count() == 1  # only the broken row is asked again
    assert "warning:" in capsys.readouterr().err
    frame = load_run(again.run_dir).set_index("case_id")
    assert len(frame) == 3 and frame.loc["c1", "output"].startswith("answer1")
    assert not frame.loc["c1", "cached"] and frame.loc["c0", "cached"]
    openai.reset()
    third = run_suite(suite, _settings(tmp_path, cache=True))  # the row was replaced
    assert third.exit_code == 0 and openai.count() == 0


def test_an_unreadable_results_file_is_read_from_the_journal_with_a_warning(
    openai: FakeOpenAI, write: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_suite(load_suite(write("s.yaml", SUITE + _cases(3))), _settings(tmp_path))
    expected = load_run(result.run_dir)
    (result.run_dir / "results.parquet").write_bytes(b"PAR1 not really PAR1")
    capsys.readouterr()
    frame = load_run(result.run_dir)
    assert "results.parquet is unreadable" in capsys.readouterr().err
    assert frame[["case_id", "output", "cost_usd"]].equals(
        expected[["case_id", "output", "cost_usd"]]
    )
    assert main(["report", str(result.run_dir), "--format", "md"]) == 0
