"""A 100,000-case suite loads and validates with memory proportionate to its size."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from evalkit import check_suite, load_suite


@pytest.mark.slow
def test_hundred_thousand_cases_from_jsonl(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    with cases.open("w", encoding="utf-8") as out:
        for i in range(100_000):
            record = {
                "id": f"c{i}",
                "vars": {"q": f"question {i}"},
                "expect": [{"contains": "{{ q }}"}],
            }
            out.write(json.dumps(record) + "\n")
    suite_path = tmp_path / "big.yaml"
    suite_path.write_text('models: [openai/gpt-4]\nprompt: "Q: {{ q }}"\ncases: cases.jsonl\n')
    file_size = cases.stat().st_size
    tracemalloc.start()
    try:
        suite = load_suite(suite_path)
        problems = check_suite(suite)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(suite.cases) == 100_000 and problems == []
    assert suite.cases[-1].id == "c99999"
    assert peak < 60 * file_size, f"peak {peak / 1e6:.0f} MB for a {file_size / 1e6:.0f} MB file"
