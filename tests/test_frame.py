"""evalkit.records.rows and .frame: journal entries → rows → the typed DataFrame, one row per
sample.

Entries are built by `records.request_entry` from a planned request, the way a run journals them;
load_run over real runs is exercised in test_cache_resume.py and test_api.py. Here: n choices
→ n rows with tokens and cost split so sums are what was paid, error rows, cached rows, the
declared dtypes, check columns, and how later entries replace earlier ones.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from evalkit import COLUMNS
from evalkit.models.targets import resolve
from evalkit.planning.plan import Request
from evalkit.planning.planner import plan
from evalkit.providers import ProviderError
from evalkit.records.entries import Answer, Provenance, request_entry
from evalkit.records.frame import to_frame
from evalkit.records.rows import records, rows
from evalkit.suite.endpoints import ModelSpec
from evalkit.suite.spec import Suite

STARTED = "2026-01-02T03:04:05.123456+00:00"


def request(n: int = 1, sample: int = 0, case: str = "a") -> Request:
    params = {"n": n} if n > 1 else {}
    suite = Suite.model_validate(
        {"prompt": "Q {{ x }}", "params": params, "cases": [{"id": case, "vars": {"x": 1}}]}
    )
    target = resolve(ModelSpec(id="openai/gpt-4o-mini"), {}, {"OPENAI_BASE_URL": "http://t/v1"})
    return list(plan(suite, target, samples=sample + 1))[sample]


def answer(n: int, prompt_tokens: int = 10, completion_tokens: int = 7) -> Answer:
    return {
        "choices": [
            {"index": i, "text": f"out{i}", "finish_reason": "stop", "logprobs": None}
            for i in range(n)
        ],
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "system_fingerprint": "fp",
        "latency_s": 0.5,
        "ttft_s": None,
    }


def entry(n: int = 1, sample: int = 0, cached: bool = False, **usage: int) -> dict[str, Any]:
    made = request_entry(request(n, sample), answer(n, **usage), Provenance(STARTED, 1, cached))
    return dict(made)


def test_n_choices_become_n_rows_whose_sums_are_what_was_paid() -> None:
    e = entry(n=3, prompt_tokens=10, completion_tokens=7)
    assert e["cost_usd"] > 0
    got = rows(e, "r", "s")
    assert [r["output"] for r in got] == ["out0", "out1", "out2"]
    assert [r["prompt_tokens"] for r in got] == [4, 3, 3]  # 10 split, remainder to the first
    assert sum(r["completion_tokens"] for r in got) == 7
    assert [r["total_tokens"] for r in got] == [
        p + c for p, c in zip([4, 3, 3], [r["completion_tokens"] for r in got], strict=True)
    ]
    assert sum(r["cost_usd"] for r in got) == pytest.approx(e["cost_usd"])
    assert len({r["request_key"] for r in got}) == 1


def test_sample_numbers_count_across_requests_and_choices() -> None:
    """Request sample s with n choices gives rows s*n .. s*n+n-1."""
    got = records([entry(n=2, sample=0), entry(n=2, sample=1)], "r", "s")
    assert sorted(r["sample"] for r in got) == [0, 1, 2, 3]


def test_cached_rows_cost_nothing_but_keep_their_tokens() -> None:
    (row,) = rows(entry(cached=True), "r", "s")
    assert row["cached"] is True and row["cost_usd"] == 0.0
    assert (row["prompt_tokens"], row["completion_tokens"]) == (10, 7)


def test_error_entry_is_one_failed_row_with_unknown_usage() -> None:
    error = ProviderError("server_error", "boom", retryable=True, status=500)
    e = request_entry(request(n=2), error, Provenance(STARTED, 3))
    frame = to_frame(records([e], "r", "s"))
    assert len(frame) == 2  # one row per sample the request stood for
    assert frame["error_type"].tolist() == ["server_error"] * 2
    assert not frame["passed"].any() and (frame["score"] == 0.0).all()
    assert frame["prompt_tokens"].isna().all() and frame["cost_usd"].isna().all()
    assert frame["total_tokens"].isna().all() and frame["attempts"].tolist() == [3, 3]


@pytest.mark.parametrize("bad", [-1, 1.5, float("nan"), 10**12])
def test_unbelievable_token_counts_are_unknown(bad: Any) -> None:
    e = entry()
    e["prompt_tokens"], e["cost_usd"] = bad, float("inf")
    (row,) = records([e], "r", "s")
    assert row["prompt_tokens"] is None and row["cost_usd"] is None
    assert row["total_tokens"] == 7  # the known part


def test_frame_has_declared_columns_and_dtypes_then_check_columns() -> None:
    e = entry(n=2)
    e["choices"][0]["checks"] = {"contains": (True, 1.0, ""), "judge": (False, 0.25, "meh")}
    e["choices"][1]["checks"] = {"contains": (False, 0.0, "missing"), "judge": (True, 1.0, "")}
    e["check_meta"] = {"contains": [1.0, True], "judge": [3.0, False]}
    frame = to_frame(records([e], "run1", "suite1"))
    assert list(frame.columns) == [
        *COLUMNS,
        "check.contains",
        "check.contains.score",
        "check.judge",
        "check.judge.score",
    ]
    for name, (dtype, _) in COLUMNS.items():
        assert str(frame[name].dtype) == dtype, name
    assert str(frame["check.contains"].dtype) == "boolean"
    assert str(frame["check.judge.score"].dtype) == "float64"
    assert frame["started_at"].iloc[0] == pd.Timestamp(STARTED)
    assert frame["run_id"].tolist() == ["run1"] * 2 and frame["suite"].iloc[0] == "suite1"
    # passed: only required checks count; score: weighted mean (1*1 + 3*0.25) / 4
    assert frame["passed"].tolist() == [True, False]
    assert frame["score"].tolist() == pytest.approx([0.4375, 0.75])
    assert frame["check_reasons"].tolist() == ['{"judge": "meh"}', '{"contains": "missing"}']


def test_prompt_messages_and_vars_are_json_text() -> None:
    (row,) = rows(entry(), "r", "s")
    assert row["prompt"] == '[{"role": "user", "content": "Q 1"}]'
    assert row["vars"] == '{"x": 1}'


def test_a_later_entry_for_the_same_sample_replaces_the_earlier() -> None:
    first, again = entry(), entry(cached=True)
    again["choices"][0]["text"] = "second"
    (row,) = records([first, again], "r", "s")
    assert row["output"] == "second" and row["cached"] is True


def test_retire_drops_the_group_and_select_marks_unselected() -> None:
    kept, gone = entry(n=2), request_entry(request(case="b"), answer(1), Provenance(STARTED, 1))
    retire = {"kind": "retire", "slots": [["b", "", gone["model"]]]}
    select = {
        "kind": "select",
        "case_id": "a",
        "variant": "",
        "model": kept["model"],
        "samples": [0, 1],
        "selected": [1],
    }
    got = records([kept, gone, retire, select], "r", "s")
    assert {r["case_id"] for r in got} == {"a"}
    assert {r["sample"]: r["selected"] for r in got} == {0: False, 1: True}


def test_judge_verdict_adds_a_check_and_its_cost() -> None:
    e = entry()
    e["check_meta"] = {"judge": [1.0, True]}
    verdict = {
        "kind": "judge",
        "case_id": "a",
        "variant": "",
        "model": e["model"],
        "sample": 0,
        "check": "judge",
        "passed": False,
        "score": 0.2,
        "reason": "wrong",
        "cost_usd": 0.003,
    }
    (row,) = records([e, verdict], "r", "s")
    assert (row["check.judge"], row["check.judge.score"]) == (False, 0.2)
    assert row["judge_cost_usd"] == pytest.approx(0.003)
    assert (row["passed"], row["score"]) == (False, pytest.approx(0.2))
