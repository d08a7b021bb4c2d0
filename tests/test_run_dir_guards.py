"""Guards around the run directory: a budget no server can talk past, a resume that counts what
was spent, full and read-only disks, and journal lines or cache rows that are not what evalkit
writes. Real HTTP to the loopback fake, real (tiny or read-only) filesystems."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from evalkit import load_run, load_suite, run_suite
from evalkit.cli import main
from evalkit.execution.budget import max_cost
from evalkit.models.targets import resolve
from evalkit.models.tokens import Counter
from evalkit.planning.planner import plan
from evalkit.records.cache import FILE as CACHE_FILE
from evalkit.suite.endpoints import ModelSpec
from fake_openai import FakeOpenAI
from tests.conftest import cli_env, run_evalkit, run_settings

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


_settings = functools.partial(run_settings, concurrency=1, cache=False)


def _one_request(suite_path: Path) -> float:
    """The reservation of the suite's most expensive request."""
    suite = load_suite(suite_path)
    target = resolve(ModelSpec(id="openai/gpt-4"), suite.endpoints, os.environ)
    counter = Counter(target.info)
    return max(max_cost(request, counter) for request in plan(suite, target))


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


def _mount(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


def _remount_read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, capture_output=True)
    probe = where / ".probe"
    try:
        probe.write_text("x")
    except OSError:
        return
    probe.unlink()
    pytest.skip("the remounted filesystem is still writable for this user")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A mount point for a tmpfs the test mounts (tiny, or remounted read-only); unmounted after."""
    where = tmp_path / "disk"
    yield where
    if os.path.ismount(where):
        subprocess.run(["umount", "-l", str(where)], check=True)


# ----------------------------------------------------------------------------- item 13: budget


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -100_000, "completion_tokens": -100_000},  # negative: cost < 0
        {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None},  # missing
        {"prompt_tokens": 0, "completion_tokens": -5},  # one count negative
    ],
    ids=["negative", "missing", "one-negative"],
)
def test_misreported_usage_cannot_talk_the_run_past_max_cost(
    openai: FakeOpenAI, write: Write, tmp_path: Path, usage: dict[str, Any]
) -> None:
    path = write("b.yaml", SUITE + _cases(20))
    one = _one_request(path)
    openai.script([{"usage": usage}] * 20)
    result = run_suite(load_suite(path), _settings(tmp_path, max_cost=2.5 * one))
    assert result.status == "budget" and result.exit_code == 3
    assert 2 <= openai.count() <= 3  # 2 fit, the spare worker's reservation may be the third
    spent = _manifest(result.run_dir)["counts"]["spent_usd"]
    assert openai.count() * one * 0.99 <= spent <= 2.5 * one  # each charged its reservation
    frame = load_run(result.run_dir)
    assert len(frame) == openai.count()
    assert frame["cost_usd"].isna().all()  # unknown, never negative
    assert frame["prompt_tokens"].isna().all() or (frame["prompt_tokens"] >= 0).all()
    assert frame["completion_tokens"].isna().all()


def test_absurd_usage_is_unknown_not_a_crash_or_a_fortune(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    """More tokens than the model's context window holds is not believable."""
    path = write("b.yaml", SUITE + _cases(3))
    openai.script([{"usage": {"prompt_tokens": 2**62, "completion_tokens": 9_000_000}}] * 3)
    result = run_suite(load_suite(path), _settings(tmp_path))
    assert result.status == "complete" and openai.count() == 3
    frame = load_run(result.run_dir)
    assert frame["prompt_tokens"].isna().all() and frame["completion_tokens"].isna().all()
    assert frame["cost_usd"].isna().all()
    one = _one_request(path)
    spent = _manifest(result.run_dir)["counts"]["spent_usd"]
    assert 3 * one * 0.99 <= spent <= 3 * one * 1.01  # charged as the most each could cost


def test_a_resume_after_sigkill_counts_what_the_journal_spent(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    path = write("b.yaml", SUITE + _cases(20))
    one = _one_request(path)
    ceiling = 5.5 * one
    first = run_suite(load_suite(path), _settings(tmp_path, max_cost=ceiling))
    assert first.status == "budget"
    spent = _manifest(first.run_dir)["counts"]["spent_usd"]
    sent_before = openai.count()
    _as_if_killed(first.run_dir)
    openai.reset()
    again = main(["run", "--resume", str(first.run_dir), "--no-progress", "--no-cache"])
    assert again == 3
    assert openai.count() <= 1  # at most the one request that still fit
    total = _manifest(first.run_dir)["counts"]["spent_usd"]
    assert total <= ceiling and total >= spent
    frame = load_run(first.run_dir)
    assert len(frame) == sent_before + openai.count()
    assert frame["cost_usd"].sum() == pytest.approx(total)


def test_negative_costs_in_an_old_journal_are_unknown_and_not_spent_back(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    """A journal written before usage was checked may hold negative counts and costs, or
    counts beyond any 64-bit column."""
    path = write("b.yaml", SUITE + _cases(6))
    one = _one_request(path)
    first = run_suite(load_suite(path), _settings(tmp_path))
    journal = first.run_dir / "journal.jsonl"
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    for entry in lines[:3]:
        entry.update(prompt_tokens=-(10**6), completion_tokens=10**20, cost_usd=-50.0)
    journal.write_text("".join(json.dumps(e) + "\n" for e in lines[:4]))
    _as_if_killed(first.run_dir)
    frame = load_run(first.run_dir)
    assert len(frame) == 4
    assert not (frame["cost_usd"] < 0).any() and frame["cost_usd"].isna().sum() == 3
    assert not (frame["prompt_tokens"] < 0).any() and not (frame["total_tokens"] < 0).any()
    openai.reset()
    # c0..c2 count 0 (unknown), not -150, and c3 one request: one more fits under 2.5
    code = main(["run", "--resume", str(first.run_dir), "--max-cost", str(2.5 * one), "--no-cache"])
    assert code == 3 and openai.count() == 1
    manifest = _manifest(first.run_dir)
    assert manifest["status"] == "budget" and manifest["per_model"]["openai/gpt-4"]["cost_usd"] >= 0
    assert one * 1.5 <= manifest["counts"]["spent_usd"] <= 2.5 * one


# ----------------------------------------------------------------------------- item 18: disk


def test_a_full_disk_at_the_end_of_a_run_exits_3_and_leaves_no_temporary_manifest(
    openai: FakeOpenAI, write: Write, tmp_path: Path, disk: Path
) -> None:
    _mount(disk, "size=64k")
    write("s.yaml", SUITE.replace("gpt-4", "gpt-3.5-turbo") + _cases(300))
    command = ["run", "s.yaml", "--out", str(disk / "runs"), "-j", "2", "--no-cache"]
    result = run_evalkit(*command, cwd=tmp_path, env=cli_env(openai.url), timeout=120)
    assert result.returncode == 3, result.stderr
    assert "internal error" not in result.stderr
    assert "cannot write the journal" in result.stderr
    assert "manifest.json" in result.stderr and "--resume" in result.stderr
    (run_dir,) = (disk / "runs").iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == ["journal.jsonl", "manifest.json"]
    assert _manifest(run_dir)["status"] == "running"  # the old manifest, whole
    assert 10 < len(load_run(run_dir)) < 300


def test_a_run_directory_that_cannot_be_created_whole_is_bad_input_and_is_removed(
    openai: FakeOpenAI, write: Write, tmp_path: Path, disk: Path
) -> None:
    _mount(disk, "size=4k")  # room for the directory, not for the manifest
    (disk / "runs").mkdir()
    (disk / "filler").write_bytes(b"x" * 4096)
    path = write("s.yaml", SUITE + _cases(2))
    code = main(["run", str(path), "--out", str(disk / "runs"), "--no-progress"])
    assert code == 2 and openai.count() == 0
    assert list((disk / "runs").iterdir()) == []


def _run_copied_to(disk: Path, suite: Path, tmp_path: Path) -> Path:
    """A finished run of `suite`, copied onto a fresh 4 MB tmpfs at `disk` (to remount ro)."""
    _mount(disk, "size=4m")
    first = run_suite(load_suite(suite), _settings(tmp_path))
    run_dir = disk / first.run_dir.name
    subprocess.run(["cp", "-a", str(first.run_dir), str(run_dir)], check=True)
    return run_dir


def test_resuming_a_read_only_run_is_a_clear_error_and_sends_nothing(
    openai: FakeOpenAI,
    write: Write,
    tmp_path: Path,
    disk: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = _run_copied_to(disk, write("s.yaml", SUITE + _cases(4)), tmp_path)
    _as_if_killed(run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    _remount_read_only(disk)
    openai.reset()
    capsys.readouterr()
    assert main(["run", "--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "internal error" not in err
    assert str(run_dir) in err and "Read-only file system" in err
    assert "copy" in err  # says what to do
    assert openai.count() == 0
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_report_on_a_read_only_run_says_where_it_cannot_write_and_out_writes_elsewhere(
    openai: FakeOpenAI,
    write: Write,
    tmp_path: Path,
    disk: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = _run_copied_to(disk, write("s.yaml", SUITE + _cases(3)), tmp_path)
    _remount_read_only(disk)
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 3
    err = capsys.readouterr().err
    assert "internal error" not in err
    assert str(run_dir / "report.html") in err and "Read-only file system" in err
    assert "--out" in err
    assert not (run_dir / "report.html").exists()
    elsewhere = tmp_path / "reports"
    assert main(["report", str(run_dir), "--out", str(elsewhere)]) == 0
    assert sorted(p.name for p in elsewhere.iterdir()) == ["junit.xml", "report.html", "report.md"]


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
    [
        "{}",
        "[1, 2]",
        "not json",
        '{"choices": "x"}',
        '{"choices": []}',
        '{"choices": [7]}',
        # what an earlier release could cache: an answer whose text holds a lone surrogate
        '{"choices": [{"index": 0, "text": "answer1 \\ud83d", "finish_reason": "stop"}]}',
    ],
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


def test_cache_explain_shows_a_stored_body_that_is_not_json(
    openai: FakeOpenAI, write: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = load_suite(write("s.yaml", SUITE.replace("gpt-4", "gpt-3.5-turbo") + _cases(2)))
    result = run_suite(suite, _settings(tmp_path, cache=True))
    cache_dir = os.environ["EVALKIT_CACHE_DIR"]
    db = sqlite3.connect(Path(cache_dir) / CACHE_FILE)
    with db:
        db.execute("UPDATE answers SET body = 'garbage' WHERE body LIKE '%answer1 %'")
    db.close()
    capsys.readouterr()
    args = ["cache", "explain", str(result.run_dir), "c1", "openai/gpt-3.5-turbo"]
    assert main([*args, "--cache-dir", cache_dir]) == 0
    out = capsys.readouterr().out
    assert "in cache: yes" in out and "not JSON: 'garbage'" in out
