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
