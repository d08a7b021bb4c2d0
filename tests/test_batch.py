"""Batch runs: the Batch API as a second executor, against the loopback fake's Batch API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from evalkit import load_run, load_suite, run_suite
from evalkit.records.store import read_journal
from fake_openai import FakeOpenAI
from tests.conftest import run_settings
from tests.openapi_spec import assert_valid

Write = Callable[[str, str], Path]
REPO = Path(__file__).resolve().parents[1]
TRIAGE = REPO / "suites" / "support-triage.yaml"
SAME = ["case_id", "variant", "model", "sample", "output", "finish_reason", "passed", "score"]


def batch_settings(tmp_path: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {"batch": True, "poll_interval_s": 0.05, "cache": False}
    values.update(overrides)
    return run_settings(tmp_path, **values)


def rows(run_dir: Path) -> pd.DataFrame:
    frame = load_run(run_dir)
    return frame[SAME].sort_values(["case_id", "variant", "model", "sample"]).reset_index(drop=True)


def chat_requests(openai: FakeOpenAI) -> int:
    return openai.count("/v1/chat/completions") + openai.count("/v1/completions")


def test_a_batch_run_gives_the_online_rows_at_the_batch_price(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    online = run_suite(load_suite(TRIAGE), run_settings(tmp_path / "online", cache=False))
    sent_online = chat_requests(openai)
    openai.reset()
    batched = run_suite(load_suite(TRIAGE), batch_settings(tmp_path / "batch"))
    assert chat_requests(openai) == 0  # nothing went online
    assert openai.batch_stats()["created"] == 2  # one batch per model
    assert openai.batch_stats()["lines"] == sent_online
    pd.testing.assert_frame_equal(rows(online.run_dir), rows(batched.run_dir))

    frame = load_run(batched.run_dir)
    assert frame["batch_id"].notna().all() and frame["batch_id"].str.startswith("batch_").all()
    assert frame["latency_s"].isna().all()  # not measured per line
    online_cost = load_run(online.run_dir).groupby("model")["cost_usd"].sum()
    batch_cost = frame.groupby("model")["cost_usd"].sum()
    # gpt-4 and gpt-3.5-turbo list no batch price: half the online one
    assert batch_cost.to_dict() == pytest.approx((online_cost / 2).to_dict())
    assert batched.status == online.status


def test_what_is_uploaded_follows_the_official_description(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    run_suite(load_suite(TRIAGE), batch_settings(tmp_path))
    creates = [r.body for r in openai.requests if r.path == "/v1/batches" and r.method == "POST"]
    assert len(creates) == 2
    for body in creates:
        assert_valid("batches", body)
    inputs = [f for f in openai.batches.files.all() if f.purpose == "batch"]
    assert len(inputs) == 2
    for file in inputs:
        for raw in file.data.decode().splitlines():
            line = json.loads(raw)
            assert set(line) == {"custom_id", "method", "url", "body"}
            assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
            assert_valid("chat", line["body"])


def test_the_journal_holds_every_remote_id_before_the_answers(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    result = run_suite(load_suite(TRIAGE), batch_settings(tmp_path))
    journal = list(read_journal(result.run_dir))
    kinds = [(e.get("kind"), e.get("event")) for e in journal]
    first_answer = kinds.index((None, None))
    assert kinds[:first_answer].count(("batch", "uploaded")) >= 1
    assert kinds[:first_answer].count(("batch", "submitted")) >= 1
    uploaded = [e for e in journal if e.get("event") == "uploaded"]
    keys = {k for e in uploaded for k in e["keys"]}
    answered = {e["key"] for e in journal if e.get("kind") is None}
    assert answered == keys
    assert {e.get("status") for e in journal if e.get("event") == "ended"} == {"completed"}


# ---------------------------------------------------------------- faults

SMALL = """\
name: small
models: [openai/gpt-4o-mini]
params: {temperature: 0, max_tokens: 8}
prompt: [{role: user, content: "Question {{ i }}: answer yes"}]
checks: [{icontains: "yes"}]
cases:
"""


def small_suite(write: Write, cases: int = 20) -> Path:
    lines = [f"  - {{id: c{i:03d}, vars: {{i: {i}}}}}" for i in range(cases)]
    return write("small.yaml", SMALL + "\n".join(lines) + "\n")


def answered(run_dir: Path) -> pd.DataFrame:
    frame = load_run(run_dir)
    assert frame["error_type"].isna().all(), frame["error"].dropna().tolist()
    return frame


def test_an_expired_batch_keeps_its_answers_and_sends_the_rest_again(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.script_batches([{"expire_after": 0.5}, "ok"])
    frame = answered(run_suite(load_suite(small_suite(write)), batch_settings(tmp_path)).run_dir)
    assert openai.batch_stats()["created"] == 2
    first, second = sorted(frame["batch_id"].unique(), key=frame["batch_id"].tolist().index)
    assert 0 < (frame["batch_id"] == first).sum() < len(frame)
    assert frame["attempts"][frame["batch_id"] == second].eq(2).all()


def test_a_batch_that_fails_validation_is_sent_again_then_given_up(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.script_batches([{"fail_validation": True}, "ok"])
    frame = answered(run_suite(load_suite(small_suite(write)), batch_settings(tmp_path)).run_dir)
    assert openai.batch_stats()["created"] == 2 and len(frame) == 20

    openai.reset()
    openai.script_batches([{"fail_validation": True}] * 3)
    result = run_suite(load_suite(small_suite(write)), batch_settings(tmp_path / "again"))
    frame = load_run(result.run_dir)
    assert openai.batch_stats()["created"] == 3  # bounded: at most 3 batches per request
    assert frame["error_type"].eq("batch_failed").all(), frame["error_type"].tolist()
    assert result.status != "complete"


def test_lines_that_answer_500_are_sent_again_in_a_new_batch(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.script_batches([{"error_rate": 0.05}, "ok"])
    suite = load_suite(small_suite(write, 100))
    frame = answered(run_suite(suite, batch_settings(tmp_path)).run_dir)
    assert openai.batch_stats()["created"] == 2
    retried = frame[frame["attempts"] == 2]
    assert 0 < len(retried) < 20
    assert openai.batch_stats()["lines"] == 100 + len(retried)


def test_a_truncated_output_file_loses_only_its_torn_line(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.script_batches([{"truncate_output": True}, "ok"])
    frame = answered(run_suite(load_suite(small_suite(write)), batch_settings(tmp_path)).run_dir)
    assert openai.batch_stats()["created"] == 2
    assert (frame["attempts"] == 2).sum() == 1


def test_a_line_for_a_request_never_sent_is_ignored_with_a_warning(
    openai: FakeOpenAI, write: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    openai.script_batches([{"extra_custom_id": "not-ours"}])
    frame = answered(run_suite(load_suite(small_suite(write)), batch_settings(tmp_path)).run_dir)
    assert len(frame) == 20 and openai.batch_stats()["created"] == 1
    assert "1 line(s) for requests this run never sent were ignored" in capsys.readouterr().err


def test_a_429_on_upload_is_retried(openai: FakeOpenAI, write: Write, tmp_path: Path) -> None:
    openai.script([{"status": 429, "retry_after_ms": 10}])
    answered(run_suite(load_suite(small_suite(write)), batch_settings(tmp_path)).run_dir)
    uploads = [r for r in openai.requests if r.path == "/v1/files" and r.method == "POST"]
    assert len(uploads) == 2 and openai.batch_stats()["uploads"] == 1


def test_a_missing_key_fails_before_any_upload(write: Write, tmp_path: Path) -> None:
    from tests.conftest import cli_env, run_evalkit

    with FakeOpenAI(latency_ms=0) as server:
        result = run_evalkit(
            "run",
            str(small_suite(write)),
            "--batch",
            "--out",
            str(tmp_path / "runs"),
            cwd=tmp_path,
            env=cli_env(server.url, key=None),
        )
        assert result.returncode == 2, result.stderr
        assert "needs an API key" in result.stderr
        assert server.count() == 0


# ---------------------------------------------------------------- kill, resume, cancel


def _start(args: list[str], tmp_path: Path, env: dict[str, str]) -> Any:
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "evalkit", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _killed_once_submitted(suite: Path, tmp_path: Path, env: dict[str, str]) -> Path:
    """`evalkit run SUITE --batch` SIGKILLed once its batch is submitted: its run directory."""
    import signal

    args = ["run", str(suite), "--batch", "--poll-interval", "0.05", "--no-cache"]
    killed = _start([*args, "--out", "runs"], tmp_path, env)
    run_dir = _wait_for_submitted(tmp_path / "runs")
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=30)
    return run_dir


def _wait_for_submitted(root: Path, timeout_s: float = 60) -> Path:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for journal in root.glob("*/journal.jsonl"):
            if '"event":"submitted"' in journal.read_text():
                return journal.parent
        time.sleep(0.05)
    raise AssertionError("no batch was ever submitted")


def test_a_killed_batch_run_resumes_by_reattaching_not_resubmitting(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:

    from tests.conftest import cli_env, run_evalkit

    openai.script_batches([{"seconds": 3}])
    env = cli_env(openai.url)
    run_dir = _killed_once_submitted(small_suite(write), tmp_path, env)
    assert openai.batch_stats()["created"] == 1
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running"

    resumed = run_evalkit("run", "--resume", str(run_dir), cwd=tmp_path, env=env)
    assert resumed.returncode in (0, 1), resumed.stderr
    assert openai.batch_stats()["created"] == 1  # re-attached: nothing submitted or paid twice
    assert openai.batch_stats()["uploads"] == 1
    assert chat_requests(openai) == 0
    frame = answered(run_dir)
    assert len(frame) == 20 and frame["batch_id"].nunique() == 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["options"]["batch"] is True and manifest["options"]["poll_interval_s"] == 0.05


def test_batches_shows_and_cancels_a_run_s_batches_and_a_resume_sends_the_rest(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:

    from tests.conftest import cli_env, run_evalkit

    openai.script_batches([{"stuck_after": 0.5}, "ok"])
    env = cli_env(openai.url)
    run_dir = _killed_once_submitted(small_suite(write), tmp_path, env)

    shown = run_evalkit("batches", str(run_dir), cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "openai/gpt-4o-mini" in shown.stdout and "requests" in shown.stdout
    cancelled = run_evalkit("batches", str(run_dir), "--cancel", cwd=tmp_path, env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "(cancel asked)" in cancelled.stdout

    resumed = run_evalkit("run", "--resume", str(run_dir), cwd=tmp_path, env=env)
    assert resumed.returncode in (0, 1), resumed.stderr
    frame = answered(run_dir)
    assert openai.batch_stats()["created"] == 2
    counts = frame["batch_id"].value_counts().tolist()
    assert len(counts) == 2 and sum(counts) == 20  # the cancelled batch's done lines kept


# ---------------------------------------------------------------- resampling and cost

INSERT_SUITE = """\
name: insert
models: [openai/gpt-3.5-turbo-instruct]
params: {temperature: 0.7, max_tokens: 8}
prompt: "LENGTH_UNTIL_MAX=16 def f{{ i }}(x):\\n    \\"\\"\\""
suffix: "\\n    return x\\n"
samples: 3
select: first_stop
max_tokens_cap: 32
checks: [{finish_reason: stop}]
cases:
"""


def insert_suite(write: Write, cases: int = 6) -> Path:
    lines = [f"  - {{id: f{i}, vars: {{i: {i}}}}}" for i in range(cases)]
    return write("insert.yaml", INSERT_SUITE + "\n".join(lines) + "\n")


def test_insert_mode_with_first_stop_resamples_in_batches(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    suite = load_suite(insert_suite(write))
    online = run_suite(suite, run_settings(tmp_path / "online", cache=False))
    openai.reset()
    batched = run_suite(suite, batch_settings(tmp_path / "batch"))
    online_frame, batch_frame = load_run(online.run_dir), load_run(batched.run_dir)
    assert (online_frame["round"] > 0).any(), "the suite should need a raised max_tokens round"
    columns = [*SAME, "round", "max_tokens", "selected"]
    order = ["case_id", "variant", "model", "sample"]
    pd.testing.assert_frame_equal(
        online_frame[columns].sort_values(order).reset_index(drop=True),
        batch_frame[columns].sort_values(order).reset_index(drop=True),
    )
    rounds = int(batch_frame["round"].max()) + 1
    assert openai.batch_stats()["created"] == rounds  # one batch per round
    assert chat_requests(openai) == 0
    bodies = [
        json.loads(x)
        for f in openai.batches.files.all()
        if f.purpose == "batch"
        for x in f.data.decode().splitlines()
    ]
    assert all("suffix" in b["body"] and b["url"] == "/v1/completions" for b in bodies)


def test_a_raised_round_may_go_online(openai: FakeOpenAI, write: Write, tmp_path: Path) -> None:
    suite = load_suite(insert_suite(write))
    result = run_suite(suite, batch_settings(tmp_path, batch_topup="online"))
    frame = load_run(result.run_dir)
    later = frame[frame["round"] > 0]
    assert len(later) and later["batch_id"].isna().all()
    assert frame[frame["round"] == 0]["batch_id"].notna().all()
    assert openai.batch_stats()["created"] == 1
    assert openai.count("/v1/completions") == len(later)


def test_catalogue_batch_prices_are_used_when_listed(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    from evalkit.models.catalog import lookup

    info = lookup("openai/gpt-4o-mini")
    assert info is not None and info.batch_prices is not None  # genai-prices lists it
    frame = answered(run_suite(load_suite(small_suite(write)), batch_settings(tmp_path)).run_dir)
    tokens = frame["prompt_tokens"].iloc[0], frame["completion_tokens"].iloc[0]
    expected = info.cost(int(tokens[0]), int(tokens[1]), batch=True)
    assert frame["cost_usd"].iloc[0] == pytest.approx(expected)
    assert expected < info.cost(int(tokens[0]), int(tokens[1]))


def test_dry_run_with_batch_shows_both_costs(tmp_path: Path) -> None:
    from tests.conftest import run_evalkit

    result = run_evalkit("run", str(TRIAGE), "--dry-run", "--batch", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    models = json.loads(result.stdout)["models"]
    for model in models:
        assert model["batch_max_cost_usd"] == pytest.approx(model["max_cost_usd"] / 2)
    table = run_evalkit("run", str(TRIAGE), "--dry-run", "--batch", cwd=tmp_path).stdout
    assert "batch min $" in table and "batch max $" in table


def test_a_batch_refused_for_some_lines_maps_them_to_their_cases(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.script_batches([{"invalid_lines": [3, 7]}, "ok"])
    result = run_suite(load_suite(small_suite(write)), batch_settings(tmp_path))
    journal = list(read_journal(result.run_dir))
    keys = next(e["keys"] for e in journal if e.get("event") == "uploaded")
    frame = load_run(result.run_dir)
    refused = frame[frame["error_type"].notna()]
    assert sorted(refused["request_key"]) == sorted([keys[2], keys[6]])
    assert refused["error"].str.contains(r"line [37]: Line [37]: the body is not valid").all()
    assert refused["error_type"].eq("bad_request").all()
    assert frame["error_type"].isna().sum() == 18  # the others, sent again in a new batch
    assert openai.batch_stats()["created"] == 2


def test_shards_run_as_batches_merge_into_the_unsharded_batch_run(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    from evalkit import Shard, merge_runs

    whole = run_suite(load_suite(TRIAGE), batch_settings(tmp_path / "whole"))
    shards = [
        run_suite(
            load_suite(TRIAGE), batch_settings(tmp_path / f"s{i}", shard=Shard.parse(f"{i}/2"))
        )
        for i in (1, 2)
    ]
    merged = merge_runs([s.run_dir for s in shards], tmp_path / "merged")
    pd.testing.assert_frame_equal(rows(whole.run_dir), rows(merged.run_dir))
    frame = load_run(merged.run_dir)
    assert frame["batch_id"].notna().all() and frame["batch_id"].nunique() == 4  # 2 per shard
    assert frame["cost_usd"].sum() == pytest.approx(load_run(whole.run_dir)["cost_usd"].sum())


def test_batch_and_online_runs_share_the_response_cache(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    suite_path = small_suite(write)
    cache = {"cache": True, "cache_dir": tmp_path / "cache"}
    run_suite(load_suite(suite_path), batch_settings(tmp_path / "b", **cache))
    online = run_suite(load_suite(suite_path), run_settings(tmp_path / "o", **cache))
    assert chat_requests(openai) == 0  # every answer the batch had, free
    assert load_run(online.run_dir)["cached"].all()
    openai.reset()
    other = write("other.yaml", suite_path.read_text().replace("small", "other"))
    run_suite(load_suite(other), run_settings(tmp_path / "o2", **cache))  # same requests
    again = run_suite(load_suite(other), batch_settings(tmp_path / "b2", **cache))
    assert openai.batch_stats()["created"] == 0 and load_run(again.run_dir)["cached"].all()


def test_max_cost_is_checked_before_a_request_joins_a_batch(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    suite = load_suite(small_suite(write, 40))
    full = run_suite(suite, batch_settings(tmp_path / "full"))
    per_request = load_run(full.run_dir)["cost_usd"].max()
    openai.reset()
    capped = run_suite(suite, batch_settings(tmp_path / "capped", max_cost=per_request * 5))
    assert capped.status == "budget"
    assert 0 < openai.batch_stats()["lines"] < 40
    assert load_run(capped.run_dir)["cost_usd"].sum() <= per_request * 5 + 1e-12


def test_a_responses_suite_runs_in_batch(openai: FakeOpenAI, tmp_path: Path) -> None:
    suite = load_suite(REPO / "suites" / "responses.yaml")
    online = run_suite(suite, run_settings(tmp_path / "online", cache=False))
    openai.reset()
    batched = run_suite(suite, batch_settings(tmp_path / "batch"))
    assert openai.count("/v1/responses") == 0
    inputs = [f for f in openai.batches.files.all() if f.purpose == "batch"]
    for file in inputs:
        for raw in file.data.decode().splitlines():
            line = json.loads(raw)
            assert line["url"] == "/v1/responses"
            assert_valid("responses", line["body"])
    pd.testing.assert_frame_equal(rows(online.run_dir), rows(batched.run_dir))


def test_a_later_round_is_one_batch_however_few_the_workers(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    # -j 1: two workers to begin with; each that parks on the raised round starts another
    suite = load_suite(insert_suite(write, cases=12))
    result = run_suite(suite, batch_settings(tmp_path, concurrency=1))
    frame = answered(result.run_dir)
    rounds = int(frame["round"].max()) + 1
    assert rounds > 1 and frame[frame["round"] == 1]["case_id"].nunique() == 12
    assert openai.batch_stats()["created"] == rounds


def test_until_stop_sends_every_case_s_next_sample_in_one_batch(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    # every sample ends in `length` (4 words, max_tokens 2, no raise past the cap): each case
    # sends its samples one after the other, and each sample is one batch of all 10 cases
    text = (
        "name: until\nmodels: [openai/gpt-4o-mini]\nparams: {temperature: 0, max_tokens: 2}\n"
        'prompt: [{role: user, content: "Q{{ i }} ANSWER: a b c d"}]\n'
        "samples: 3\nselect: until_stop\nmax_tokens_cap: 2\ncases:\n"
        + "".join(f"  - {{id: u{i}, vars: {{i: {i}}}}}\n" for i in range(10))
    )
    result = run_suite(load_suite(write("until.yaml", text)), batch_settings(tmp_path))
    frame = answered(result.run_dir)
    assert sorted(frame["sample"].unique()) == [0, 1, 2]
    assert (frame.groupby("case_id").size() == 3).all()
    assert openai.batch_stats()["created"] == 3
    assert openai.batch_stats()["lines"] == 30


def test_two_cases_with_one_prompt_are_one_line_and_two_rows(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    text = (
        SMALL + "  - {id: a, vars: {i: 1}}\n  - {id: b, vars: {i: 1}}\n  - {id: c, vars: {i: 2}}\n"
    )
    result = run_suite(load_suite(write("same.yaml", text)), batch_settings(tmp_path))
    frame = answered(result.run_dir)
    assert sorted(frame["case_id"]) == ["a", "b", "c"]
    outputs = dict(zip(frame["case_id"], frame["output"], strict=True))
    assert outputs["a"] == outputs["b"] != outputs["c"]
    assert openai.batch_stats()["lines"] == 2


def test_a_judge_grades_a_batch_run_online(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    text = (
        "name: judged\nmodels: [openai/gpt-3.5-turbo]\n"
        'prompt: [{role: user, content: "ANSWER: {{ a }}"}]\n'
        'checks: [{judge: {model: openai/gpt-4, rubric: "Polite?\\nANSWER: {{ verdict }}"}}]\n'
        "cases:\n"
        '  - {id: "yes", vars: {a: thanks, verdict: "VERDICT: PASS"}}\n'
        '  - {id: "no", vars: {a: go away, verdict: "VERDICT: FAIL"}}\n'
    )
    result = run_suite(load_suite(write("judged.yaml", text)), batch_settings(tmp_path))
    frame = answered(result.run_dir).set_index("case_id")
    assert frame.loc["yes", "check.judge"] and not frame.loc["no", "check.judge"]
    assert frame["batch_id"].notna().all() and (frame["judge_cost_usd"] > 0).all()
    assert openai.batch_stats()["lines"] == 2  # the answers went in a batch
    judged = [r.body for r in openai.requests if r.body and r.body.get("model") == "gpt-4"]
    assert len(judged) == 2  # the verdicts were asked online
