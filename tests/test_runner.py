"""`evalkit run` against a real loopback server: concurrency, faults, retries, the run directory."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from evalkit import ConfigError, load_run, load_suite, run_suite
from fake_openai import FakeOpenAI
from tests.conftest import TEST_KEY, run_settings

Write = Callable[[str, str], Path]

SUITE = """
models: [openai/gpt-4, openai/gpt-3.5-turbo]
params: {temperature: 0, max_tokens: 16}
variants:
  terse: [{role: user, content: "Ticket: {{ ticket }}\\nANSWER: {{ queue }}"}]
  plain: "Ticket: {{ ticket }}\\nANSWER: {{ queue }}"
cases:
  - {id: refund, vars: {ticket: money back, queue: billing}}
  - {id: crash, vars: {ticket: app crashes, queue: technical}}
  - {id: login, vars: {ticket: cannot log in, queue: account}}
"""


def _journal(run_dir: Path) -> list[dict[str, object]]:
    lines = (run_dir / "journal.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_two_models_two_variants_give_one_row_per_sample(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    result = run_suite(load_suite(write("s.yaml", SUITE)), run_settings(tmp_path))
    assert result.status == "complete" and result.exit_code == 0
    frame = load_run(result.run_dir)
    assert len(frame) == 3 * 2 * 2 == openai.count()
    assert set(frame["model"]) == {"openai/gpt-4", "openai/gpt-3.5-turbo"}
    assert set(frame["variant"]) == {"terse", "plain"}
    refund = frame[(frame["case_id"] == "refund")]
    assert set(refund["output"]) == {"billing"}
    assert set(frame["finish_reason"]) == {"stop"}
    assert frame["cost_usd"].gt(0).all() and frame["prompt_tokens"].gt(0).all()
    gpt4 = frame[frame["model"] == "openai/gpt-4"].iloc[0]
    assert gpt4["cost_usd"] == pytest.approx(
        (gpt4["prompt_tokens"] * 30 + gpt4["completion_tokens"] * 60) / 1e6
    )
    assert not frame.duplicated(["case_id", "variant", "model", "sample"]).any()
    # identical bodies share a key (the cache may answer both): here the two variants agree
    assert frame["request_key"].nunique() == 6
    assert str(frame["started_at"].dtype) == "datetime64[ns, UTC]"
    assert frame["cached"].dtype == "boolean" and frame["sample"].dtype == "Int64"
    # a string prompt sent to a chat model became one user message
    plain = [
        r
        for r in openai.requests
        if r.body and r.body["messages"][0]["content"].startswith("Ticket")
    ]
    assert all(len(r.body["messages"]) == 1 for r in plain)  # type: ignore[index]
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["requests"] == 12
    assert manifest["suite"]["sha256"] and manifest["evalkit_version"]
    # results.parquet holds the same rows as the journal
    assert len(pd.read_parquet(result.run_dir / "results.parquet")) == 12


def test_rate_limit_storm_completes_every_case_once(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.rate_429 = 0.2
    cases = "\n".join(f"  - {{id: c{i}, vars: {{ticket: t{i}, queue: q{i}}}}}" for i in range(60))
    suite = SUITE.split("cases:")[0] + "cases:\n" + cases + "\n"
    result = run_suite(
        load_suite(write("storm.yaml", suite)), run_settings(tmp_path, concurrency=8)
    )
    frame = load_run(result.run_dir)
    assert result.status == "complete"
    assert len(frame) == 60 * 2 * 2
    assert not frame.duplicated(["case_id", "variant", "model", "sample"]).any()
    assert frame["error_type"].isna().all()
    assert frame["attempts"].max() > 1  # some requests were retried
    assert openai.count() > len(frame)  # the 429s really happened


def test_transient_faults_are_retried(openai: FakeOpenAI, write: Write, tmp_path: Path) -> None:
    openai.script(
        [
            "drop",
            503,
            {"status": 429, "retry_after_ms": "10"},
            "malformed_json",
            {"status": 429, "headers": {"x-ratelimit-reset-requests": "20ms"}},
            502,
        ]
    )
    path = write("one.yaml", SUITE.replace("openai/gpt-4, ", ""))
    result = run_suite(load_suite(path), run_settings(tmp_path, concurrency=1))
    frame = load_run(result.run_dir)
    assert result.status == "complete" and frame["error_type"].isna().all()
    assert frame["attempts"].sum() == len(frame) + 6


def test_a_request_that_fails_for_good_becomes_a_record(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.script([{"status": 400, "message": "max_tokens is too large"}, "no_choices"])
    path = write("one.yaml", SUITE.replace("openai/gpt-4, ", ""))
    result = run_suite(load_suite(path), run_settings(tmp_path, concurrency=1, max_error_rate=0.5))
    frame = load_run(result.run_dir)
    errors = frame[frame["error_type"].notna()]
    assert sorted(errors["error_type"]) == ["bad_request", "bad_response"]
    assert (
        "max_tokens is too large" in errors[errors["error_type"] == "bad_request"]["error"].iloc[0]
    )
    assert errors["attempts"].tolist() == [1, 1]  # not retried
    assert len(frame) == 6 and result.status == "complete"  # the run went on


def test_error_rate_above_the_limit_fails_the_run(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.script([500] * 4)
    path = write("one.yaml", SUITE.replace("openai/gpt-4, ", ""))
    result = run_suite(load_suite(path), run_settings(tmp_path, concurrency=1, max_retries=1))
    assert result.status == "failed" and result.exit_code == 3
    assert result.reason is not None and "--max-error-rate" in result.reason
    assert len(load_run(result.run_dir)) == 6


def test_unauthorized_stops_sending_to_that_model(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.api_key = "sk-the-right-one"
    cases = "\n".join(f"  - {{id: c{i}, vars: {{ticket: t, queue: q}}}}" for i in range(50))
    suite = SUITE.split("cases:")[0].replace("openai/gpt-4, ", "") + "cases:\n" + cases + "\n"
    result = run_suite(load_suite(write("auth.yaml", suite)), run_settings(tmp_path, concurrency=2))
    assert result.status == "failed" and result.exit_code == 3
    assert result.reason is not None and "stopped sending" in result.reason
    assert openai.count() <= 4  # not 100
    frame = load_run(result.run_dir)
    assert set(frame["error_type"]) == {"auth"}


def test_a_server_that_cannot_be_reached_stops_its_model_after_ten_requests(
    write: Write, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cases = "\n".join(f"  - {{id: c{i}, vars: {{ticket: t, queue: q}}}}" for i in range(60))
    suite = SUITE.split("cases:")[0].replace("openai/gpt-4, ", "") + "cases:\n" + cases + "\n"
    environ = {"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "OPENAI_API_KEY": TEST_KEY}
    settings = run_settings(tmp_path, concurrency=2, max_retries=2, environ=environ)
    result = run_suite(load_suite(write("down.yaml", suite)), settings)
    assert result.status == "failed" and result.exit_code == 3
    assert result.reason is not None and "10 requests in a row could not connect" in result.reason
    frame = load_run(result.run_dir)
    assert set(frame["error_type"]) == {"connection"}
    assert 10 <= len(frame) <= 14  # the ten, and what was in flight then; not all 60


def test_missing_api_key_names_the_variable_and_sends_nothing(
    openai: FakeOpenAI, write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigError, match="set the environment variable OPENAI_API_KEY"):
        run_suite(load_suite(write("s.yaml", SUITE)), run_settings(tmp_path))
    assert openai.count() == 0 and not (tmp_path / "runs").exists()


def test_unknown_model_on_the_command_line_is_bad_input(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    from evalkit import SuiteError

    with pytest.raises(SuiteError, match="unknown model 'openai/gpt-5x'"):
        run_suite(
            load_suite(write("s.yaml", SUITE)), run_settings(tmp_path, models=["openai/gpt-5x"])
        )
    assert openai.count() == 0


def test_declared_endpoint_with_its_own_key_variable(
    openai: FakeOpenAI, write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai.api_key = "sk-vllm-key"
    monkeypatch.setenv("MY_VLLM_KEY", "sk-vllm-key")
    suite = f"""
    endpoints:
      vllm: {{base_url: "{openai.url}", api_key_env: MY_VLLM_KEY, kind: chat, label: local-vllm}}
    models: [vllm/llama-3-8b]
    prompt: "ANSWER: ok"
    cases: [{{id: a, vars: {{}}}}]
    """
    result = run_suite(load_suite(write("e.yaml", suite)), run_settings(tmp_path))
    frame = load_run(result.run_dir)
    assert result.status == "complete" and frame["output"].tolist() == ["ok"]
    assert frame["model"].tolist() == ["local-vllm/llama-3-8b"]
    assert openai.requests[0].body["model"] == "llama-3-8b"  # type: ignore[index]
    assert frame["cost_usd"].tolist() == [0.0]  # no prices known for a self-hosted model


def test_n_choices_become_one_row_each_and_split_the_cost(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    suite = """
    models: [openai/gpt-3.5-turbo-instruct]
    params: {temperature: 1, n: 3, max_tokens: 8}
    prompt: "ANSWER: four words are here"
    cases: [{id: a, vars: {}}]
    """
    result = run_suite(load_suite(write("n.yaml", suite)), run_settings(tmp_path))
    frame = load_run(result.run_dir)
    assert frame["sample"].tolist() == [0, 1, 2]
    assert frame["output"].nunique() == 3 and openai.count() == 1
    journal = _journal(result.run_dir)
    assert frame["cost_usd"].sum() == pytest.approx(journal[0]["cost_usd"])
    assert frame["completion_tokens"].sum() == journal[0]["completion_tokens"]


def test_streaming_records_time_to_first_token(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    suite = """
    models: [openai/gpt-4]
    params: {stream: true, max_tokens: 16}
    prompt: [{role: user, content: "ANSWER: streamed in several words"}]
    cases: [{id: a, vars: {}}]
    """
    openai.script(["truncated_sse"])
    result = run_suite(load_suite(write("st.yaml", suite)), run_settings(tmp_path))
    row = load_run(result.run_dir).iloc[0]
    assert row["output"] == "streamed in several words" and row["finish_reason"] == "stop"
    assert row["ttft_s"] > 0 and row["attempts"] == 2  # the truncated stream was sent again
    assert row["prompt_tokens"] > 0  # usage arrived in the last chunk


def test_samples_get_distinct_keys(openai: FakeOpenAI, write: Write, tmp_path: Path) -> None:
    suite = """
    models: [openai/gpt-3.5-turbo-instruct]
    params: {temperature: 0.8, max_tokens: 32}
    prompt: "def add(a, b):\\n"
    suffix: "\\nprint(add(1, 2))\\n"
    samples: 5
    cases: [{id: add, vars: {}}]
    """
    result = run_suite(load_suite(write("ins.yaml", suite)), run_settings(tmp_path))
    frame = load_run(result.run_dir)
    assert frame["sample"].tolist() == [0, 1, 2, 3, 4] and frame["request_key"].is_unique
    assert [r.suffix for r in openai.requests] == ["\nprint(add(1, 2))\n"] * 5
    assert frame["suffix"].unique().tolist() == ["\nprint(add(1, 2))\n"]


def test_the_api_key_is_never_written_anywhere(
    openai: FakeOpenAI, write: Write, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    openai.script([{"status": 400, "message": f"bad key {TEST_KEY} in request"}])
    result = run_suite(load_suite(write("s.yaml", SUITE)), run_settings(tmp_path, max_error_rate=1))
    out, err = capfd.readouterr()
    assert TEST_KEY not in out + err
    for path in result.run_dir.iterdir():
        assert TEST_KEY.encode() not in path.read_bytes(), path.name
    frame = load_run(result.run_dir)
    assert frame["error"].str.contains("[redacted]", regex=False).any()
    assert openai.requests[0].headers["authorization"] == f"Bearer {TEST_KEY}"


def test_requests_really_run_concurrently(openai: FakeOpenAI, write: Write, tmp_path: Path) -> None:
    openai.latency_ms = 100
    cases = "\n".join(f"  - {{id: c{i}, vars: {{ticket: t, queue: q}}}}" for i in range(20))
    suite = "models: [openai/gpt-4]\nprompt: 'ANSWER: x'\ncases:\n" + cases + "\n"
    result = run_suite(load_suite(write("c.yaml", suite)), run_settings(tmp_path, concurrency=10))
    frame = load_run(result.run_dir).sort_values("started_at")
    # with 10 in flight, the 10th request starts before the first one finishes
    first_end = frame["started_at"].iloc[0] + pd.to_timedelta(frame["latency_s"].iloc[0], unit="s")
    assert frame["started_at"].iloc[9] < first_end
    assert Counter(frame["case_id"]).most_common(1)[0][1] == 1
