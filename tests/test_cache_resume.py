"""The response cache, resuming killed runs, `--max-cost` and `--dry-run`, against the fake server."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from evalkit import load_run, load_suite, run_suite
from evalkit.cli import main
from evalkit.execution.budget import max_cost
from evalkit.execution.runner import dry_run, resume_run
from evalkit.models.targets import resolve
from evalkit.models.tokens import Counter as TokenCounter
from evalkit.planning.planner import plan
from evalkit.records.cache import FILE as CACHE_FILE
from evalkit.records.cache import lookup_entry
from evalkit.records.store import read_journal
from evalkit.suite.endpoints import ModelSpec
from fake_openai import FakeOpenAI
from tests.conftest import cli_env, run_evalkit, run_settings

Write = Callable[[str, str], Path]
SLOT = ["case_id", "variant", "model", "sample"]

SUITE = """
models: [openai/gpt-3.5-turbo]
params: {temperature: 0, max_tokens: 16}
prompt: [{role: user, content: "ANSWER: {{ a }}"}]
cases:
"""


def _cases(count: int, start: int = 0) -> str:
    return "".join(f"  - {{id: c{i}, vars: {{a: answer{i}}}}}\n" for i in range(start, count))


_settings = functools.partial(run_settings, concurrency=1)


def _answers(server: FakeOpenAI) -> list[str]:
    """The `ANSWER:` text of every completion request the server received (one per case)."""
    out = []
    for record in server.requests:
        body = record.body
        text = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        out.append(text.split("ANSWER: ", 1)[1].split("\n", 1)[0])
    return out


def _evalkit(server: FakeOpenAI, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_evalkit(*args, cwd=cwd, env=cli_env(server.url), timeout=120)


def _simulate_kill(run_dir: Path, keep: int) -> list[str]:
    """Leave `run_dir` as a SIGKILL after `keep` journal lines would: status running, no
    results; returns the journal lines dropped."""
    journal = run_dir / "journal.jsonl"
    lines = journal.read_text(encoding="utf-8").splitlines(keepends=True)
    journal.write_text("".join(lines[:keep]), encoding="utf-8")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for name in ("counts", "per_model", "reason"):
        manifest.pop(name, None)
    manifest.update(status="running", finished_at=None)
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (run_dir / "results.parquet").unlink()
    return lines[keep:]


def _manifest(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "manifest.json").read_text()))


# ----------------------------------------------------------------------------- cache


def test_a_second_identical_run_is_answered_by_the_cache(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    suite = load_suite(write("s.yaml", SUITE + _cases(4)))
    first = run_suite(suite, _settings(tmp_path, concurrency=4))
    assert first.status == "complete" and openai.count() == 4
    openai.reset()
    second = run_suite(suite, _settings(tmp_path, concurrency=4))
    assert second.status == "complete" and openai.count() == 0
    before = load_run(first.run_dir).set_index("case_id").sort_index()
    after = load_run(second.run_dir).set_index("case_id").sort_index()
    assert not before["cached"].any() and before["cost_usd"].gt(0).all()
    assert after["cached"].all() and after["cost_usd"].eq(0).all()
    assert after["prompt_tokens"].gt(0).all() and after["completion_tokens"].gt(0).all()
    assert after["prompt_tokens"].tolist() == before["prompt_tokens"].tolist()
    assert after["completion_tokens"].tolist() == before["completion_tokens"].tolist()
    assert after["output"].tolist() == before["output"].tolist()
    assert _manifest(second.run_dir)["counts"]["cached"] == 4
    assert second.per_model["openai/gpt-3.5-turbo"]["cost_usd"] == 0


def test_samples_never_collide_in_the_cache(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    suite = load_suite(
        write(
            "s.yaml",
            SUITE.replace("temperature: 0", "temperature: 0.8").replace(
                "cases:", "samples: 5\ncases:"
            )
            + _cases(1),
        )
    )
    first = run_suite(suite, _settings(tmp_path))
    assert openai.count() == 5
    openai.reset()
    second = run_suite(suite, _settings(tmp_path))
    assert openai.count() == 0
    frame = load_run(second.run_dir).sort_values("sample")
    assert frame["sample"].tolist() == [0, 1, 2, 3, 4] and frame["cached"].all()
    assert frame["request_key"].is_unique
    assert set(frame["request_key"]) == set(load_run(first.run_dir)["request_key"])


@pytest.mark.parametrize(
    "edit",
    [
        ("prompt", "ANSWER: {{ a }}", "Reply. ANSWER: {{ a }}"),
        ("param", "temperature: 0,", "temperature: 0.5,"),
        ("model", "models: [openai/gpt-3.5-turbo]", "models: [openai/gpt-4]"),
    ],
    ids=lambda e: e[0],
)
def test_a_changed_prompt_param_or_model_misses(
    openai: FakeOpenAI, write: Write, tmp_path: Path, edit: tuple[str, str, str]
) -> None:
    _, old, new = edit
    base = SUITE + _cases(3)
    assert old in base
    run_suite(load_suite(write("base.yaml", base)), _settings(tmp_path))
    assert openai.count() == 3
    openai.reset()
    changed = run_suite(
        load_suite(write("changed.yaml", base.replace(old, new))), _settings(tmp_path)
    )
    assert openai.count() == 3
    assert not load_run(changed.run_dir)["cached"].any()
    openai.reset()
    run_suite(load_suite(write("again.yaml", base)), _settings(tmp_path))
    assert openai.count() == 0  # the original answers are still there


def test_errors_are_never_cached(openai: FakeOpenAI, write: Write, tmp_path: Path) -> None:
    suite = load_suite(write("s.yaml", SUITE + _cases(3)))
    openai.script([{"status": 400, "message": "scripted failure"}])
    first = run_suite(suite, _settings(tmp_path, max_error_rate=1))
    failed = load_run(first.run_dir).dropna(subset=["error_type"])
    assert failed["case_id"].tolist() == ["c0"] and openai.count() == 3
    openai.reset()
    second = run_suite(suite, _settings(tmp_path, max_error_rate=1))
    assert _answers(openai) == ["answer0"]  # only the failed request is sent again
    frame = load_run(second.run_dir)
    assert frame["error_type"].isna().all() and len(frame) == 3
    assert frame.set_index("case_id")["cached"].to_dict() == {"c0": False, "c1": True, "c2": True}


def test_no_cache_sends_everything_and_writes_nothing(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    suite = load_suite(write("s.yaml", SUITE + _cases(3)))
    folder = Path(os.environ["EVALKIT_CACHE_DIR"])
    run_suite(suite, _settings(tmp_path, cache=False))
    assert openai.count() == 3 and not (folder / CACHE_FILE).exists()
    run_suite(suite, _settings(tmp_path))  # fills the cache
    openai.reset()
    result = run_suite(suite, _settings(tmp_path, cache=False))
    assert openai.count() == 3  # not read either
    assert not load_run(result.run_dir)["cached"].any()


def test_refresh_sends_everything_and_overwrites(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    suite = load_suite(write("s.yaml", SUITE + _cases(3)))
    folder = Path(os.environ["EVALKIT_CACHE_DIR"])
    first = run_suite(suite, _settings(tmp_path))
    keys = load_run(first.run_dir)["request_key"].tolist()
    stored = {key: lookup_entry(folder, key) for key in keys}
    assert all(stored.values())
    openai.reset()
    refreshed = run_suite(suite, _settings(tmp_path, refresh=True))
    assert openai.count() == 3
    frame = load_run(refreshed.run_dir)
    assert not frame["cached"].any() and frame["cost_usd"].gt(0).all()
    for key in keys:
        again = lookup_entry(folder, key)
        assert again is not None and again["created_at"] > stored[key]["created_at"]  # type: ignore[index]
    openai.reset()
    run_suite(suite, _settings(tmp_path))
    assert openai.count() == 0
    from evalkit.records.cache import stats

    assert stats(folder)["entries"] == 3  # replaced, not duplicated


def test_a_corrupt_cache_warns_and_the_run_goes_on_without_it(
    openai: FakeOpenAI, write: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = Path(os.environ["EVALKIT_CACHE_DIR"])
    folder.mkdir(parents=True)
    (folder / CACHE_FILE).write_bytes(b"\x00\xffthis is not an SQLite database\x13\x37" * 64)
    suite = load_suite(write("s.yaml", SUITE + _cases(3)))
    for _ in range(2):
        openai.reset()
        result = run_suite(suite, _settings(tmp_path))
        err = capsys.readouterr().err
        assert "warning: cache" in err and "running without the cache" in err
        assert result.status == "complete" and openai.count() == 3
        frame = load_run(result.run_dir)
        assert len(frame) == 3 and not frame["cached"].any()


def test_a_locked_cache_warns_and_the_run_goes_on_without_it(
    openai: FakeOpenAI, write: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    folder = Path(os.environ["EVALKIT_CACHE_DIR"])
    folder.mkdir(parents=True)
    holder = sqlite3.connect(folder / CACHE_FILE, isolation_level=None)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the file
    try:
        result = run_suite(load_suite(write("s.yaml", SUITE + _cases(3))), _settings(tmp_path))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capsys.readouterr().err
    assert "warning: cache" in err and "locked" in err and "running without the cache" in err
    assert result.status == "complete" and openai.count() == 3


def test_cache_stats_clear_and_explain(openai: FakeOpenAI, write: Write, tmp_path: Path) -> None:
    suite = load_suite(
        write(
            "s.yaml",
            SUITE.replace("[openai/gpt-3.5-turbo]", "[openai/gpt-3.5-turbo, openai/gpt-4]")
            + _cases(2),
        )
    )
    folder = tmp_path / "mycache"
    result = run_suite(suite, _settings(tmp_path, cache_dir=folder))
    frame = load_run(result.run_dir)
    key = frame[(frame["case_id"] == "c1") & (frame["model"] == "openai/gpt-4")][
        "request_key"
    ].item()

    stats = _evalkit(openai, tmp_path, "cache", "stats", "--cache-dir", "mycache")
    assert stats.returncode == 0, stats.stderr
    assert "4 answers" in stats.stdout and CACHE_FILE in stats.stdout
    assert "  gpt-4: 2" in stats.stdout and "  gpt-3.5-turbo: 2" in stats.stdout

    run_dir = str(result.run_dir)

    def explain_case(case: str) -> subprocess.CompletedProcess[str]:
        return _evalkit(
            openai,
            tmp_path,
            "cache",
            "explain",
            run_dir,
            case,
            "openai/gpt-4",
            "--cache-dir",
            "mycache",
        )

    explain = explain_case("c1")
    assert explain.returncode == 0, explain.stderr
    out = explain.stdout
    assert f"key {key} (sample 0" in out and "in cache: yes" in out
    assert f"endpoint URL: {openai.url}/chat" in out and "model: openai/gpt-4" in out
    assert '"model": "gpt-4"' in out and "ANSWER: answer1" in out and "answer0" not in out

    unknown = explain_case("nope")
    assert unknown.returncode == 2 and "no request for case 'nope'" in unknown.stderr

    cleared = _evalkit(openai, tmp_path, "cache", "clear", "--cache-dir", "mycache")
    assert cleared.returncode == 0 and "removed 4 cached answers" in cleared.stdout
    assert (
        "0 answers" in _evalkit(openai, tmp_path, "cache", "stats", "--cache-dir", "mycache").stdout
    )
    gone = explain_case("c1")
    assert gone.returncode == 0 and "in cache: no" in gone.stdout and f"key {key}" in gone.stdout
    assert openai.count() == 4  # none of the cache commands sent anything


# ----------------------------------------------------------------------------- resume


def test_a_killed_run_resumes_without_sending_anything_twice(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.latency_ms = 50
    write("s.yaml", SUITE + _cases(80))
    with (tmp_path / "first.log").open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "evalkit",
                "run",
                "s.yaml",
                "--out",
                "runs",
                "-j",
                "4",
                "--no-progress",
            ],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=cli_env(openai.url),
        )
        deadline = time.monotonic() + 60
        while openai.count() < 20 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.005)
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -9, (tmp_path / "first.log").read_text()
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert _manifest(run_dir)["status"] == "running"
    journaled = [e for e in read_journal(run_dir) if not e.get("kind")]
    done = {e["case_id"] for e in journaled}
    assert len(done) == len(journaled) and 0 < len(done) < 80

    openai.reset()
    openai.latency_ms = 0
    resumed = _evalkit(
        openai, tmp_path, "run", "--resume", str(run_dir), "--no-progress", "--no-cache"
    )
    assert resumed.returncode == 0, resumed.stderr
    sent = Counter(f"c{answer.removeprefix('answer')}" for answer in _answers(openai))
    assert not set(sent) & done  # nothing journaled before the resume was sent again
    assert set(sent) == {f"c{i}" for i in range(80)} - done and set(sent.values()) == {1}
    frame = load_run(run_dir)
    assert len(frame) == 80 and not frame.duplicated(SLOT).any()
    assert set(frame["case_id"]) == {f"c{i}" for i in range(80)}
    assert frame["error_type"].isna().all()
    assert (frame["output"] == "answer" + frame["case_id"].str[1:]).all()
    manifest = _manifest(run_dir)
    assert manifest["status"] == "complete"
    assert manifest["resumes"][-1]["reused_requests"] == len(done)


def test_cases_with_one_prompt_each_keep_their_own_rows_on_resume(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    """Two cases that send the same body have one request key: a resumed run reuses the
    answer for both, each under its own case id, and sends nothing."""
    text = SUITE + "".join(f"  - {{id: c{i}, vars: {{a: same}}}}\n" for i in range(3))
    result = run_suite(load_suite(write("s.yaml", text)), _settings(tmp_path, cache=False))
    _simulate_kill(result.run_dir, keep=1)  # killed once the first case was journaled
    openai.reset()
    resume_run(result.run_dir, _settings(tmp_path, cache=False))
    assert openai.count() == 0
    frame = load_run(result.run_dir)
    assert sorted(frame["case_id"]) == ["c0", "c1", "c2"]
    assert frame["error_type"].isna().all() and (frame["output"] == "same").all()


def test_a_torn_last_journal_line_is_sent_again_on_resume(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    suite = load_suite(write("s.yaml", SUITE + _cases(10)))
    result = run_suite(suite, _settings(tmp_path, cache=False))
    dropped = _simulate_kill(result.run_dir, keep=6)
    torn = json.loads(dropped[0])
    assert torn["case_id"] == "c6"
    with (result.run_dir / "journal.jsonl").open("a", encoding="utf-8") as journal:
        journal.write(dropped[0][: len(dropped[0]) // 2])  # died mid-line
    openai.reset()
    resumed = resume_run(result.run_dir, _settings(tmp_path, cache=False))
    assert resumed.status == "complete"
    assert sorted(_answers(openai)) == ["answer6", "answer7", "answer8", "answer9"]
    frame = load_run(result.run_dir)
    assert sorted(frame["case_id"]) == sorted(f"c{i}" for i in range(10))
    assert not frame.duplicated(SLOT).any() and frame["error_type"].isna().all()


def test_resuming_a_complete_run_is_bad_input(
    openai: FakeOpenAI, write: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_suite(load_suite(write("s.yaml", SUITE + _cases(2))), _settings(tmp_path))
    openai.reset()
    capsys.readouterr()
    assert main(["run", "--resume", str(result.run_dir)]) == 2
    err = capsys.readouterr().err
    assert "this run is complete; there is nothing to resume" in err and str(result.run_dir) in err
    assert openai.count() == 0 and _manifest(result.run_dir)["status"] == "complete"


def test_resume_after_the_suite_changed(openai: FakeOpenAI, write: Write, tmp_path: Path) -> None:
    path = write("s.yaml", SUITE + _cases(10))
    result = run_suite(load_suite(path), _settings(tmp_path, cache=False))
    _simulate_kill(result.run_dir, keep=6)  # c0..c5 finished
    text = path.read_text()
    text = text.replace("{a: answer1}", "{a: changed1}")
    text = text.replace("  - {id: c2, vars: {a: answer2}}\n", "")
    path.write_text(text + "  - {id: c10, vars: {a: answer10}}\n")
    openai.reset()
    resumed = resume_run(result.run_dir, _settings(tmp_path, cache=False))
    assert resumed.status == "complete"
    assert sorted(_answers(openai)) == sorted(
        ["changed1", "answer6", "answer7", "answer8", "answer9", "answer10"]
    )  # c0, c3, c4, c5 reused
    frame = load_run(result.run_dir)
    assert sorted(frame["case_id"]) == sorted(["c0", "c1", *(f"c{i}" for i in range(3, 11))])
    assert not frame.duplicated(SLOT).any()
    outputs = frame.set_index("case_id")["output"]
    assert outputs["c1"] == "changed1" and outputs["c10"] == "answer10"
    resume = _manifest(result.run_dir)["resumes"][-1]
    assert resume["changed_cases"] == ["c1"] and resume["removed_cases"] == ["c2"]
    assert resume["suite_changed"] is True


def test_an_unfinished_run_is_offered_for_resume(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    path = write("s.yaml", SUITE + _cases(4))
    result = run_suite(load_suite(path), _settings(tmp_path, cache=False))
    _simulate_kill(result.run_dir, keep=2)
    openai.reset()
    again = _evalkit(openai, tmp_path, "run", "s.yaml", "--out", "runs", "--no-progress")
    assert again.returncode == 0, again.stderr
    assert f"runs/{result.run_dir.name} did not finish" in again.stderr
    assert f"`evalkit run --resume runs/{result.run_dir.name}`" in again.stderr
    assert len(list((tmp_path / "runs").iterdir())) == 2  # not interactive: a new run


# ----------------------------------------------------------------------------- budget

BUDGET_SUITE = """
models: [openai/gpt-4]
params: {temperature: 0, max_tokens: 10}
prompt: [{role: user, content: "ANSWER: {{ a }} one two three four five six seven eight nine ten eleven"}]
cases:
"""


def test_a_ceiling_below_one_request_sends_nothing(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    path = write("b.yaml", BUDGET_SUITE + _cases(3))
    out = tmp_path / "runs"
    code = main(["run", str(path), "--out", str(out), "--max-cost", "0.0001", "--no-progress"])
    assert code == 3
    (run_dir,) = out.iterdir()
    manifest = _manifest(run_dir)
    assert manifest["status"] == "budget" and "--max-cost" in manifest["reason"]
    assert manifest["counts"]["requests"] == 0 and manifest["counts"]["spent_usd"] == 0
    assert openai.count() == 0 and len(load_run(run_dir)) == 0


def test_the_run_stops_within_one_request_of_the_ceiling(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    suite = load_suite(write("b.yaml", BUDGET_SUITE + _cases(40)))
    target = resolve(ModelSpec(id="openai/gpt-4"), suite.endpoints, os.environ)
    counter = TokenCounter(target.info)
    one = max(max_cost(request, counter) for request in plan(suite, target))
    ceiling = 5.5 * one
    result = run_suite(suite, _settings(tmp_path, max_cost=ceiling))
    assert result.status == "budget" and result.exit_code == 3
    manifest = _manifest(result.run_dir)
    spent = manifest["counts"]["spent_usd"]
    assert ceiling - one < spent <= ceiling
    assert 5 <= openai.count() < 40
    frame = load_run(result.run_dir)
    assert len(frame) == openai.count() and frame["error_type"].isna().all()
    sent = sorted(answer.split()[0] for answer in _answers(openai))
    assert sorted(frame["output"].str.split().str[0]) == sent  # every paid answer is a row
    assert set(frame["finish_reason"]) == {"length"}  # each used its whole max_tokens
    assert frame["cost_usd"].sum() == pytest.approx(spent)
    assert "--max-cost" in manifest["reason"]


# ----------------------------------------------------------------------------- dry run

DRY_SUITE = """
models: [openai/gpt-4, openai/gpt-3.5-turbo]
params: {max_tokens: 16}
samples: 2
variants:
  chat: [{role: user, content: "ANSWER: {{ a }}"}]
  plain: "Please. ANSWER: {{ a }}"
cases:
"""


def test_dry_run_counts_requests_and_sends_nothing(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    write("d.yaml", DRY_SUITE + _cases(3))
    estimates = dry_run(load_suite(tmp_path / "d.yaml"), _settings(tmp_path))
    assert {e.model: e.requests for e in estimates} == {
        "openai/gpt-4": 12,
        "openai/gpt-3.5-turbo": 12,
    }
    assert all(e.max_cost_usd > e.min_cost_usd > 0 and not e.overflows for e in estimates)
    cli = _evalkit(openai, tmp_path, "run", "d.yaml", "--dry-run", "--json", "--out", "runs")
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    assert {m["model"]: m["requests"] for m in report["models"]} == {
        "openai/gpt-4": 12,
        "openai/gpt-3.5-turbo": 12,
    }
    table = _evalkit(openai, tmp_path, "run", "d.yaml", "--dry-run", "--out", "runs")
    assert table.returncode == 0 and "nothing sent (dry run)" in table.stdout
    assert openai.count() == 0 and not (tmp_path / "runs").exists()


OVERFLOW_SUITE = """
models: [{id: openai/gpt-4, context_window: 50}]
params: {max_tokens: 10}
prompt: [{role: user, content: "{{ text }}\\nANSWER: {{ a }}"}]
cases:
  - {id: short, vars: {text: hi, a: fine}}
  - {id: long, vars: {text: LONG, a: big}}
"""


def test_a_case_over_the_context_window_is_listed_and_refused(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    write("o.yaml", OVERFLOW_SUITE.replace("LONG", "lorem ipsum " * 40))
    estimates = dry_run(load_suite(tmp_path / "o.yaml"), _settings(tmp_path))
    assert [o["case_id"] for o in estimates[0].overflows] == ["long"]
    assert estimates[0].overflows[0]["context_window"] == 50

    dry = _evalkit(openai, tmp_path, "run", "o.yaml", "--dry-run", "--json")
    assert dry.returncode == 2
    assert [o["case_id"] for o in json.loads(dry.stdout)["models"][0]["overflows"]] == ["long"]
    assert "case 'long'" in dry.stderr and "--allow-overflow" in dry.stderr

    refused = _evalkit(openai, tmp_path, "run", "o.yaml", "--out", "runs", "--no-progress")
    assert refused.returncode == 2
    assert "case 'long'" in refused.stderr and "context window of 50" in refused.stderr
    assert "case 'short'" not in refused.stderr
    assert openai.count() == 0 and not (tmp_path / "runs").exists()

    allowed = _evalkit(
        openai, tmp_path, "run", "o.yaml", "--out", "runs", "--no-progress", "--allow-overflow"
    )
    assert allowed.returncode == 0, allowed.stderr
    assert sorted(_answers(openai)) == ["big", "fine"]
