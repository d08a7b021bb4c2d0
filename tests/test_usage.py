"""Usage details: cached prompt tokens at the cached-input price, reasoning tokens as output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from evalkit import COLUMNS, load_run, load_suite, run_suite
from fake_openai import FakeOpenAI
from tests.conftest import run_settings

Write = Callable[[str, str], Path]


def _suite(model: str, cases: int = 2, stream: bool = False) -> str:
    lines = [
        f"models: [{model}]",
        'prompt: [{role: user, content: "Question {{ i }}"}]',
        f"params: {{max_tokens: 16, temperature: 0, stream: {str(stream).lower()}}}",
        "cases:",
    ]
    lines += [f"  - {{id: c{i}, vars: {{i: {i}}}}}" for i in range(cases)]
    return "\n".join(lines) + "\n"


DETAILS = {
    "prompt_tokens": 1000,
    "completion_tokens": 50,
    "prompt_tokens_details": {"cached_tokens": 600},
    "completion_tokens_details": {"reasoning_tokens": 20},
}


def test_cached_tokens_are_billed_at_the_cached_price_and_reasoning_tokens_as_output(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.script([{"usage": DETAILS}] * 2)
    path = write("s.yaml", _suite("openai/gpt-4o"))
    result = run_suite(load_suite(path), run_settings(tmp_path))
    frame = load_run(result.run_dir)
    assert frame["cached_tokens"].tolist() == [600, 600]
    assert frame["reasoning_tokens"].tolist() == [20, 20]
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output per million tokens
    expected = (400 * 2.50 + 600 * 1.25 + 50 * 10.00) / 1_000_000
    assert frame["cost_usd"].tolist() == pytest.approx([expected, expected])
    assert result.per_model["openai/gpt-4o"]["cost_usd"] == pytest.approx(2 * expected)


def test_a_model_without_a_cached_price_bills_the_whole_prompt_at_the_input_price(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.script([{"usage": DETAILS}] * 2)
    path = write("s.yaml", _suite("openai/gpt-4"))
    frame = load_run(run_suite(load_suite(path), run_settings(tmp_path)).run_dir)
    assert frame["cached_tokens"].tolist() == [600, 600]  # reported, but no cheaper price
    assert frame["cost_usd"].tolist() == pytest.approx([(1000 * 30 + 50 * 60) / 1e6] * 2)


def test_a_suite_can_give_a_models_cached_price(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    openai.script([{"usage": DETAILS}])
    model = "{id: openai/gpt-4, cached_input_per_mtok: 3.0}"
    frame = load_run(
        run_suite(load_suite(write("s.yaml", _suite(model, 1))), run_settings(tmp_path)).run_dir
    )
    assert frame["cost_usd"].tolist() == pytest.approx([(400 * 30 + 600 * 3 + 50 * 60) / 1e6])


def test_a_cached_count_larger_than_the_prompt_is_unknown_and_the_prompt_paid_in_full(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    impossible = {**DETAILS, "prompt_tokens_details": {"cached_tokens": 5000}}
    impossible["completion_tokens_details"] = {"reasoning_tokens": 51}
    openai.script([{"usage": impossible}])
    path = write("s.yaml", _suite("openai/gpt-4o", 1))
    frame = load_run(run_suite(load_suite(path), run_settings(tmp_path)).run_dir)
    assert frame["cached_tokens"].isna().all() and frame["reasoning_tokens"].isna().all()
    assert frame["cost_usd"].tolist() == pytest.approx([(1000 * 2.50 + 50 * 10.00) / 1e6])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_details_the_api_reports_are_read_from_answers_and_streams(
    openai: FakeOpenAI, write: Write, tmp_path: Path, stream: bool
) -> None:
    """The fake reports zero cached and reasoning tokens, as the API does for most requests:
    zero, not unknown."""
    path = write("s.yaml", _suite("openai/gpt-4o", 2, stream))
    frame = load_run(run_suite(load_suite(path), run_settings(tmp_path)).run_dir)
    assert frame["cached_tokens"].tolist() == [0, 0]
    assert frame["reasoning_tokens"].tolist() == [0, 0]
    assert (frame["ttft_s"].notna() == stream).all()


def test_a_run_written_before_these_columns_loads_with_them_unknown(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    import pandas as pd

    path = write("s.yaml", _suite("openai/gpt-4o", 2))
    run_dir = run_suite(load_suite(path), run_settings(tmp_path)).run_dir
    results = run_dir / "results.parquet"
    old = pd.read_parquet(results).drop(columns=["cached_tokens", "reasoning_tokens"])
    old.to_parquet(results, index=False)
    frame = load_run(run_dir)
    assert list(frame.columns[: len(COLUMNS)]) == list(COLUMNS)  # in their declared places
    assert frame["cached_tokens"].isna().all() and str(frame["cached_tokens"].dtype) == "Int64"


def test_the_report_shows_cached_and_reasoning_tokens(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    from evalkit import write_reports

    openai.script([{"usage": DETAILS}] * 2)
    run_dir = run_suite(
        load_suite(write("s.yaml", _suite("openai/gpt-4o"))), run_settings(tmp_path)
    ).run_dir
    (html,) = write_reports(run_dir, None, ("html",))
    assert "1,200 cached / 40 reasoning" in html.read_text(encoding="utf-8")
