"""evalkit.analysis.summary: one summary, from a DataFrame or from a run's rows.

The run's end summarises its rows without pandas; `evalkit.summarize` summarises a
DataFrame. Both go through one function, so here the rows' summary must equal the frame's
line for line, and each figure must be what pandas computes from the same rows.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest

from evalkit import summarize
from evalkit.analysis.summary import SUMMARY_COLUMNS, summarize_rows
from evalkit.records.frame import to_frame

LATENCIES = [0.31, 0.05, 1.7, 0.2, 0.9, 0.44, 0.07, 2.5, 0.12]


def row(model: str, variant: str, case: str, **values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": model,
        "variant": variant,
        "case_id": case,
        "selected": True,
        "passed": True,
        "score": 1.0,
        "error_type": None,
        "finish_reason": "stop",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "cost_usd": 0.001,
        "judge_cost_usd": 0.0,
        "latency_s": 0.1,
        "ttft_s": None,
    }
    return {**base, **values}


def varied() -> list[dict[str, Any]]:
    rows = [
        row("m1", "", f"c{i}", latency_s=t, passed=i % 3 != 0, score=(i % 4) / 3)
        for i, t in enumerate(LATENCIES)
    ]
    rows += [
        row("m1", "", "c0", selected=False, passed=False),  # a second sample, not kept
        row("m1", "", "c9", error_type="timeout", passed=False, score=0.0, finish_reason=None),
        row("m1", "", "c10", finish_reason=None),  # answered, no finish reason: not counted
        row("m2", "v", "c0", finish_reason="length", ttft_s=0.02, prompt_tokens=None),
        row("m2", "v", "c1", score=float("nan"), cost_usd=None, judge_cost_usd=0.004),
        row("m1", "w", "c0", passed=None, selected=None),  # unknown: kept, and not a pass
    ]
    return rows


def test_rows_and_frame_give_the_same_summary() -> None:
    rows = varied()
    from_rows = pd.DataFrame(summarize_rows(rows), columns=SUMMARY_COLUMNS)
    from_frame = summarize(to_frame([dict(r) for r in rows]))
    pd.testing.assert_frame_equal(from_rows, from_frame)
    assert from_frame[["model", "variant"]].values.tolist() == [
        ["m1", ""],
        ["m2", "v"],
        ["m1", "w"],
    ]


def test_each_figure_is_what_pandas_computes_from_the_rows() -> None:
    rows = varied()
    (m1, m2, w) = summarize_rows(rows)
    frame = pd.DataFrame(rows[:12])
    kept = frame[frame["selected"]]
    assert m1["cases"] == 11 and m1["samples"] == 12
    assert m1["pass_rate"] == pytest.approx(kept["passed"].astype(float).mean())
    assert m1["mean_score"] == pytest.approx(kept["score"].mean())
    answered = frame[frame["error_type"].isna()]
    assert m1["latency_p50_s"] == pytest.approx(answered["latency_s"].quantile(0.5))
    assert m1["latency_p95_s"] == pytest.approx(answered["latency_s"].quantile(0.95))
    assert m1["stop_rate"] == 1.0  # the row without a finish reason is not in the denominator
    assert m1["error_rate"] == pytest.approx(1 / 12)
    assert m1["prompt_tokens"] == 120 and m1["cost_usd"] == pytest.approx(0.012)
    assert math.isnan(m1["ttft_p50_s"])
    assert m2["length_rate"] == 0.5 and m2["ttft_p50_s"] == pytest.approx(0.02)
    assert m2["prompt_tokens"] == 10  # the unknown count is not a zero, nor the sum unknown
    assert m2["mean_score"] == 1.0  # the NaN score is unknown
    assert m2["cost_usd"] == pytest.approx(0.005)  # a known cost plus the judge's
    assert (w["samples"], w["pass_rate"]) == (1, 0.0)


def test_nothing_to_summarise_is_no_lines() -> None:
    assert summarize_rows([]) == []
    assert summarize(to_frame([])).empty
