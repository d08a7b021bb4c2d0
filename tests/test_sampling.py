"""Resampling policies, escalation of max_tokens, reducers and the summary table."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from scipy.special import comb

from evalkit import (
    load_run,
    load_suite,
    pass_at_k,
    pass_hat_k,
    reduce_samples,
    run_suite,
    summarize,
)
from evalkit.execution.sampling import mean_logprob, select
from fake_openai import FakeOpenAI
from tests.conftest import run_settings

Write = Callable[[str, str], Path]


def _samples(*reasons: str) -> list[tuple[int, dict[str, object]]]:
    return [(i, {"finish_reason": r, "text": f"s{i}"}) for i, r in enumerate(reasons)]


def test_select_policies_pick_by_sample_index_not_arrival() -> None:
    samples = _samples("length", "stop", "stop")
    assert select("all", samples) == [0, 1, 2]
    assert select("first_stop", list(reversed(samples))) == [1]
    assert select("until_stop", samples) == [1]
    assert select("first_stop", _samples("length", "length")) == [0]  # nothing stopped
    assert select("first_stop", []) == []


def test_best_logprob_prefers_the_most_confident_stopped_sample() -> None:
    samples = [
        (
            0,
            {
                "finish_reason": "stop",
                "logprobs": {"content": [{"logprob": -2.0}, {"logprob": -1.0}]},
            },
        ),
        (1, {"finish_reason": "stop", "logprobs": {"token_logprobs": [-0.1, -0.3]}}),
        (2, {"finish_reason": "length", "logprobs": {"token_logprobs": [0.0]}}),
    ]
    assert select("best_logprob", samples) == [1]
    assert (
        mean_logprob([{"content": [{"logprob": -1.0}]}, {"content": [{"logprob": -3.0}]}]) == -2.0
    )
    assert mean_logprob(None) is None


@pytest.mark.parametrize(
    ("n", "c", "k"), [(10, 3, 1), (10, 3, 5), (5, 0, 2), (5, 5, 5), (20, 7, 3)]
)
def test_pass_at_k_matches_the_combinatorial_definition(n: int, c: int, k: int) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(
        1 - comb(n - c, k, exact=True) / comb(n, k, exact=True)
    )
    assert pass_hat_k(n, c, k) == pytest.approx(comb(c, k, exact=True) / comb(n, k, exact=True))
    assert math.isnan(pass_at_k(2, 1, 3))


def test_reduce_samples_and_majority_vote() -> None:
    frame = pd.DataFrame(
        {
            "model": ["m"] * 4,
            "variant": [""] * 4,
            "case_id": ["a"] * 4,
            "output": ["x", "x", "y", "x"],
            "passed": [True, True, False, True],
            "score": [1.0, 1.0, 0.0, 1.0],
        }
    )
    row = reduce_samples(frame, k=2).iloc[0]
    assert (row["samples"], row["passes"], row["majority_output"]) == (4, 3, "x")
    assert row["majority_passed"] and row["pass_at_k"] == pytest.approx(1.0)
    assert row["pass_hat_k"] == pytest.approx(0.5) and row["mean_score"] == pytest.approx(0.75)


INSERT = """
models: [openai/gpt-3.5-turbo-instruct]
params: {temperature: 0.7, max_tokens: 4}
prompt: "{{ prefix }}"
suffix: "\\nprint(f())\\n"
samples: 5
select: SELECT
resample_temperature: 0.9
checks: [{finish_reason: stop}]
cases:
  - {id: short, vars: {prefix: "ANSWER: ok\\n"}}
  - {id: long, vars: {prefix: "LENGTH_UNTIL_MAX=16 ANSWER: a b c d e f g h\\n"}}
  - {id: never, vars: {prefix: "LENGTH_UNTIL_MAX=999 ANSWER: a b c d e f g h\\n"}}
"""


def _run(write: Write, tmp_path: Path, text: str) -> tuple[pd.DataFrame, Path]:
    settings = run_settings(tmp_path)
    result = run_suite(load_suite(write("s.yaml", text)), settings)
    return load_run(result.run_dir), result.run_dir


def test_first_stop_selects_stop_samples_and_raises_max_tokens(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    frame, run_dir = _run(write, tmp_path, INSERT.replace("SELECT", "first_stop"))
    short = frame[frame["case_id"] == "short"]
    assert len(short) == 5 and short["selected"].tolist() == [True, False, False, False, False]
    long = frame[frame["case_id"] == "long"].sort_values("sample")
    # 4 -> 8 -> 16 tokens: two rounds ended all in length, the third stopped
    assert long["max_tokens"].tolist() == [4] * 5 + [8] * 5 + [16] * 5
    assert set(long[long["max_tokens"] == 16]["finish_reason"]) == {"stop"}
    assert long[long["selected"]]["sample"].tolist() == [10]
    never = frame[frame["case_id"] == "never"]
    assert never["max_tokens"].max() == 16  # capped at 4 × max_tokens
    assert never["selected"].sum() == 1 and not never[never["selected"]]["passed"].any()
    temperatures = [json.loads(p)["temperature"] for p in short.sort_values("sample")["params"]]
    assert temperatures == [0.7, 0.9, 0.9, 0.9, 0.9]  # resample_temperature after the first
    journal = [json.loads(x) for x in (run_dir / "journal.jsonl").read_text().splitlines()]
    selections = [e for e in journal if e.get("kind") == "select"]
    assert {e["case_id"]: e["rounds"] for e in selections} == {"short": 1, "long": 3, "never": 3}
    summary = summarize(frame).iloc[0]
    assert summary["pass_rate"] == pytest.approx(2 / 3)
    assert 0 < summary["stop_rate"] < 1 and summary["length_rate"] > 0.5


def test_until_stop_stops_sampling_at_the_first_stop(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    frame, _ = _run(write, tmp_path, INSERT.replace("SELECT", "until_stop"))
    assert len(frame[frame["case_id"] == "short"]) == 1
    long = frame[frame["case_id"] == "long"]
    assert long["max_tokens"].tolist() == [4] * 5 + [8] * 5 + [16]


def test_select_all_keeps_every_sample_and_does_not_escalate(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    frame, _ = _run(write, tmp_path, INSERT.replace("SELECT", "all"))
    assert len(frame) == 15 and frame["selected"].all()
    assert set(frame["max_tokens"]) == {4}


def test_checks_flow_into_the_frame(openai: FakeOpenAI, write: Write, tmp_path: Path) -> None:
    suite = """
    models: [openai/gpt-4]
    prompt: [{role: user, content: "ANSWER: {{ a }}"}]
    checks: [{finish_reason: stop}, {contains: "{{ want }}", weight: 3}]
    cases:
      - {id: good, vars: {a: billing, want: bill}}
      - {id: bad, vars: {a: technical, want: bill}, expect: [{not: {contains: tech}, name: no_tech, required: false}]}
    """
    frame, _ = _run(write, tmp_path, suite)
    good, bad = frame.set_index("case_id").loc["good"], frame.set_index("case_id").loc["bad"]
    assert good["passed"] and good["score"] == 1.0 and pd.isna(good["check.no_tech"])
    assert not bad["passed"] and bad["check.finish_reason"] and not bad["check.contains"]
    assert bad["score"] == pytest.approx(1 / 5)  # finish_reason 1×1, contains 0×3, no_tech 0×1
    assert "not found" in json.loads(bad["check_reasons"])["contains"]
    assert frame["check.contains.score"].dtype == "float64"


def test_judge_grades_through_the_runner(openai: FakeOpenAI, write: Write, tmp_path: Path) -> None:
    suite = """
    models: [openai/gpt-3.5-turbo]
    prompt: [{role: user, content: "ANSWER: {{ a }}"}]
    checks: [{judge: {model: openai/gpt-4, rubric: "Polite?\\nANSWER: {{ verdict }}"}}]
    cases:
      - {id: "yes", vars: {a: thanks, verdict: "VERDICT: PASS"}}
      - {id: "no", vars: {a: go away, verdict: "VERDICT: FAIL"}}
      - {id: garbled, vars: {a: hmm, verdict: "I cannot decide"}}
    """
    frame, run_dir = _run(write, tmp_path, suite)
    by_case = frame.set_index("case_id")
    assert by_case.loc["yes", "check.judge"] and by_case.loc["yes", "passed"]
    assert not by_case.loc["no", "check.judge"]
    assert not by_case.loc["garbled", "passed"]
    assert (
        "could not read a verdict" in json.loads(by_case.loc["garbled", "check_reasons"])["judge"]
    )
    assert (frame["judge_cost_usd"] > 0).all()  # judge calls are costed and linked
    judged = [r.body for r in openai.requests if r.body and r.body["model"] == "gpt-4"]
    assert len(judged) == 3
    assert any("The model's answer:\nthanks" in b["messages"][1]["content"] for b in judged)
    journal = [json.loads(x) for x in (run_dir / "journal.jsonl").read_text().splitlines()]
    judge_entries = [e for e in journal if e.get("kind") == "judge"]
    assert len(judge_entries) == 3 and all(e["prompt_tokens"] for e in judge_entries)


def test_judge_that_errors_is_a_failed_check_not_a_crash(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    suite = """
    models: [openai/gpt-3.5-turbo]
    prompt: [{role: user, content: "ANSWER: hi"}]
    checks: [{judge: {model: openai/gpt-4, rubric: "ok?"}}]
    cases: [{id: a, vars: {}}]
    """
    openai.script(["ok", {"status": 400, "message": "judge broke"}])
    frame, _ = _run(write, tmp_path, suite)
    row = frame.iloc[0]
    assert not row["passed"] and "judge call failed" in json.loads(row["check_reasons"])["judge"]
