"""Rows → the Arrow table that `results.parquet` holds, written without pandas.

A run's end needs no DataFrame: importing pandas and building one costs a 5,000-request run
a fifth of its time. `pyarrow.array` imports pandas on first use, but its JSON reader does
not, so the rows go to Arrow as JSON lines under an explicit schema (the declared columns,
and a boolean and a score column per check), a slice at a time so memory stays flat. The
schema carries the pandas metadata `DataFrame.to_parquet` would write, so `pd.read_parquet`
gives the declared dtypes back as it did. Rows Arrow will not take (a count that is not a
whole number) go through the DataFrame instead, which is what they always went through, and
so do large runs, where the DataFrame's columnar conversion pays its import back.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.records.rows import check_columns, column_dtypes

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

SLICE_ROWS = 10_000  # rows per JSON slice, and per Parquet row group
# JSON costs about 24 µs a row, the DataFrame 13 µs and 0.3 s of pandas import (100,000 rows:
# 2.4 s against 1.3 s): past this many rows the DataFrame's way is the faster one
FRAME_ABOVE = 25_000
BLOCK_BYTES = 1 << 20  # Arrow's own block size, unless a line is longer
_ASCII = json.JSONEncoder()  # escapes every non-ASCII character: one byte per character

# pandas dtype -> (Arrow type name, the pandas metadata's pandas_type, numpy_type, metadata)
_KINDS: dict[str, tuple[str, str, str, dict[str, str] | None]] = {
    "string": ("large_string", "object", "string", None),
    "Int64": ("int64", "int64", "Int64", None),
    "float64": ("float64", "float64", "float64", None),
    "boolean": ("bool_", "bool", "boolean", None),
    "datetime64[ns, UTC]": ("timestamp", "datetimetz", "datetime64[ns]", {"timezone": "UTC"}),
}


def schema(dtypes: dict[str, str]) -> pa.Schema:
    """The Arrow schema of these columns, with the pandas metadata that restores them."""
    import pyarrow as pa

    fields, described = [], []
    for name, dtype in dtypes.items():
        arrow, pandas_type, numpy_type, metadata = _KINDS[dtype]
        kind = pa.timestamp("ns", tz="UTC") if arrow == "timestamp" else getattr(pa, arrow)()
        fields.append(pa.field(name, kind))
        described.append(
            {
                "name": name,
                "field_name": name,
                "pandas_type": pandas_type,
                "numpy_type": numpy_type,
                "metadata": metadata,
            }
        )
    pandas_meta = {
        "index_columns": [],
        "column_indexes": [],
        "columns": described,
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
    }
    return pa.schema(fields, metadata={"pandas": json.dumps(pandas_meta)})


def write_rows(
    rows: Sequence[dict[str, Any]],
    path: Path,
    slice_rows: int = SLICE_ROWS,
    frame_above: int = FRAME_ABOVE,
) -> None:
    """Write the rows (`rows.records`) as a Parquet file at `path`, `slice_rows` at a time;
    more than `frame_above` rows go the DataFrame's way. Raises an OSError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(rows) > frame_above:
        _through_frame(rows, path)
        return
    arrow_schema = schema(column_dtypes(check_columns(rows)))
    try:
        with pq.ParquetWriter(path, arrow_schema) as writer:
            for part in _slices(rows, arrow_schema, slice_rows):
                writer.write_table(part)
    except pa.ArrowInvalid:  # a row Arrow will not take: the DataFrame's way, from the start
        _through_frame(rows, path)


def _through_frame(rows: Sequence[dict[str, Any]], path: Path) -> None:
    from evalkit.records.frame import to_frame

    write_frame(to_frame(rows), path)


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    """Write a DataFrame (`to_frame`, `load_run`) as a Parquet file at `path`."""
    frame.to_parquet(path, index=False)


def _slices(
    rows: Sequence[dict[str, Any]], arrow_schema: pa.Schema, slice_rows: int
) -> Iterator[pa.Table]:
    import pyarrow.json as pj

    options = pj.ParseOptions(explicit_schema=arrow_schema, unexpected_field_behavior="ignore")
    for start in range(0, len(rows), slice_rows):
        lines = list(map(_ASCII.encode, rows[start : start + slice_rows]))
        # blocks are parsed in parallel; a line longer than its block would be refused (in
        # ASCII JSON a character is a byte)
        longest = max(map(len, lines), default=0)
        read = pj.ReadOptions(block_size=max(BLOCK_BYTES, longest + 1))
        text = "\n".join(lines).encode("ascii")
        yield pj.read_json(io.BytesIO(text), read_options=read, parse_options=options)
