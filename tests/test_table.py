"""evalkit.records.table: a run's rows → `results.parquet` without pandas.

The oracle is what the file was before: the rows' DataFrame written by pandas. Both files are
read back with `pd.read_parquet` (not `load_run`, which would re-type whatever it read), so
the pandas metadata written by hand is checked too: same columns, dtypes and values.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from evalkit.providers import ProviderError
from evalkit.records.entries import Provenance, request_entry
from evalkit.records.frame import to_frame
from evalkit.records.rows import records
from evalkit.records.table import write_frame, write_rows
from tests.test_frame import STARTED, answer, entry, request


def case_entry(case: str, n: int = 1, cached: bool = False) -> dict[str, Any]:
    return dict(request_entry(request(n, case=case), answer(n), Provenance(STARTED, 1, cached)))


def varied_rows() -> list[dict[str, Any]]:
    """Rows of every kind: n choices with checks, an error, a cached answer, text that JSON
    escapes, a score that is NaN, a sample the select policy dropped."""
    checked = entry(n=2)
    checked["choices"][0]["checks"] = {"contains": (True, 1.0, ""), "judge": (False, 0.25, "no")}
    checked["choices"][1]["checks"] = {"contains": (False, 0.0, "missing")}
    checked["check_meta"] = {"contains": [1.0, True], "judge": [3.0, False]}
    error = ProviderError("server_error", 'boom\n"quoted"', retryable=True, status=500)
    failed = request_entry(request(case="b"), error, Provenance(STARTED, 3))
    odd = case_entry("c", cached=True)
    odd["choices"][0]["text"] = 'é \u2028 \x00 "x" \\ \U0001f600'
    select = {"kind": "select", "case_id": "a", "variant": "", "model": checked["model"]}
    out = records([checked, failed, odd, {**select, "samples": [0, 1], "selected": [1]}], "r", "s")
    out[-1]["score"] = float("nan")
    return out


def read_both(rows: list[dict[str, Any]], tmp_path: Path, **kwargs: Any) -> tuple[Any, Any]:
    ours, pandas_way = tmp_path / "rows.parquet", tmp_path / "frame.parquet"
    write_rows(rows, ours, **kwargs)
    write_frame(to_frame(rows), pandas_way)
    return pd.read_parquet(ours), pd.read_parquet(pandas_way)


def row_groups(tmp_path: Path) -> int:
    """Row groups of the rows' file: one per slice, where the DataFrame's way writes one."""
    return int(pq.ParquetFile(tmp_path / "rows.parquet").num_row_groups)


def test_rows_read_back_as_the_dataframe_would_have_written_them(tmp_path: Path) -> None:
    ours, expected = read_both(varied_rows(), tmp_path)
    pd.testing.assert_frame_equal(ours, expected)
    assert str(ours["check.judge"].dtype) == "boolean" and str(ours["sample"].dtype) == "Int64"
    assert ours["output"].iloc[-1] == 'é \u2028 \x00 "x" \\ \U0001f600'
    assert ours["started_at"].iloc[0] == pd.Timestamp(STARTED)


def test_many_rows_are_written_a_slice_at_a_time_in_order(tmp_path: Path) -> None:
    rows = records([case_entry(f"c{i}", n=2) for i in range(7)], "r", "s")
    ours, expected = read_both(rows, tmp_path, slice_rows=3)
    pd.testing.assert_frame_equal(ours, expected)
    assert row_groups(tmp_path) == 5
    assert ours["case_id"].tolist() == [f"c{i // 2}" for i in range(14)]


def test_a_row_longer_than_arrows_blocks_is_read_whole(tmp_path: Path) -> None:
    rows = records([entry(), case_entry("b"), case_entry("c")], "r", "s")
    rows[1]["output"] = "é" * (3 << 20)  # 3 Mi characters, 18 MiB as escaped JSON
    ours, expected = read_both(rows, tmp_path, slice_rows=2)
    pd.testing.assert_frame_equal(ours, expected)
    assert row_groups(tmp_path) == 2  # Arrow read it: the DataFrame's way is one group
    assert len(ours["output"].iloc[1]) == 3 << 20


def test_a_large_run_is_written_the_dataframe_way(tmp_path: Path) -> None:
    rows = records([case_entry(f"c{i}") for i in range(4)], "r", "s")
    ours, expected = read_both(rows, tmp_path, slice_rows=1, frame_above=3)
    pd.testing.assert_frame_equal(ours, expected)
    assert row_groups(tmp_path) == 1  # one group: not the slices


def test_a_row_arrow_refuses_is_written_the_dataframe_way(tmp_path: Path) -> None:
    rows = records([entry(), case_entry("b")], "r", "s")
    rows[1]["max_tokens"] = 16.0  # a whole number written as a float: not an int64 to Arrow
    ours, expected = read_both(rows, tmp_path, slice_rows=1)
    pd.testing.assert_frame_equal(ours, expected)
    assert ours["max_tokens"].tolist()[1] == 16 and row_groups(tmp_path) == 1


def test_no_rows_is_a_file_with_every_column(tmp_path: Path) -> None:
    ours, expected = read_both([], tmp_path)
    assert list(ours.columns) == list(expected.columns) and len(ours) == 0
    pd.testing.assert_series_equal(ours.dtypes, expected.dtypes)


def test_writing_rows_does_not_import_pandas(tmp_path: Path) -> None:
    """The point of the module: the end of a run writes its results without pandas."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from evalkit.records.table import write_rows\n"
        "row = {'case_id': 'a', 'sample': 0, 'started_at': '2026-01-02T03:04:05+00:00'}\n"
        f"write_rows([row], Path({str(tmp_path / 'one.parquet')!r}))\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    frame = pd.read_parquet(tmp_path / "one.parquet")
    assert frame["case_id"].tolist() == ["a"] and frame["output"].isna().all()


@pytest.mark.parametrize("column", ["prompt_tokens", "cost_usd", "cached", "started_at"])
def test_unknown_values_are_missing_not_zero(column: str, tmp_path: Path) -> None:
    rows = records([entry()], "r", "s")
    rows[0][column] = None
    ours, expected = read_both(rows, tmp_path)
    assert ours[column].isna().tolist() == [True]
    pd.testing.assert_frame_equal(ours, expected)
