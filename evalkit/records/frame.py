"""Rows → one pandas DataFrame, one row per sample, typed from the declared columns
(`rows.COLUMNS`); a run directory → its DataFrame (`load_run`)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.records.rows import COLUMNS, check_columns, column_dtypes, journal_rows
from evalkit.records.store import RESULTS, read_manifest

if TYPE_CHECKING:
    import pandas as pd


def to_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The typed DataFrame of `records` (rows as produced by `rows`)."""
    import pandas as pd

    records = list(records)
    frame = pd.DataFrame.from_records(records, columns=[*COLUMNS, *check_columns(records)])
    frame["started_at"] = pd.to_datetime(frame["started_at"], utc=True, format="ISO8601")
    return _typed(frame)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The declared dtypes, whatever pandas or Parquet inferred; a column added since the
    run was written (`cached_tokens`, ...) is there, unknown."""
    missing = [name for name in COLUMNS if name not in frame.columns]
    if missing:
        extra = [c for c in frame.columns if c not in COLUMNS]
        frame = frame.assign(**dict.fromkeys(missing)).reindex(columns=[*COLUMNS, *extra])
    return frame.astype(column_dtypes([c for c in frame.columns if c.startswith("check.")]))


def load_run(path: str | Path) -> pd.DataFrame:
    """The DataFrame of a run directory: one row per sample, typed columns (see COLUMNS)."""
    import pandas as pd

    run_dir = Path(path)
    manifest = read_manifest(run_dir)
    results = run_dir / RESULTS
    if results.exists() and manifest.get("status") != "running":
        try:
            return _typed(pd.read_parquet(results))
        except (OSError, ValueError, KeyError, TypeError) as exc:  # the journal has it all
            print(f"warning: {results} is unreadable ({exc}); reading the journal", file=sys.stderr)
    return frame_of_journal(run_dir, manifest)


def frame_of_journal(
    run_dir: Path, manifest: dict[str, Any] | None = None, warn: bool = True
) -> pd.DataFrame:
    """The DataFrame built from the journal; `warn`: about lines that are not entries."""
    return to_frame(journal_rows(run_dir, manifest, warn))
