"""Plain-text tables for the terminal and CI logs (no colour needed to read them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from evalkit.catalog import CATALOG

if TYPE_CHECKING:
    import pandas as pd


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first is the header) as left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def summary_table(summary: pd.DataFrame) -> str:
    """`evalkit.summarize` as text: one line per model and variant."""
    rows = [("model", "variant", "pass", "score", "stop", "length", "errors", "cost $", "p50 s")]
    for r in summary.to_dict("records"):
        rows.append(
            (
                str(r["model"]),
                str(r["variant"]) or "-",
                fmt(r["pass_rate"], "{:.0%}"),
                fmt(r["mean_score"], "{:.2f}"),
                fmt(r["stop_rate"], "{:.0%}"),
                fmt(r["length_rate"], "{:.0%}"),
                fmt(r["error_rate"], "{:.0%}"),
                fmt(r["cost_usd"], "{:.4f}"),
                fmt(r["latency_p50_s"], "{:.2f}"),
            )
        )
    return table(rows)


def models_table() -> str:
    """The catalogue: endpoint, context window, prices (USD per 1M tokens), notes."""
    rows = [("model", "endpoint", "context", "$/1M in", "$/1M out", "prices as of", "notes")]
    for info in CATALOG:
        notes = [info.note] if info.note else []
        if info.supports_suffix:
            notes.append("insert (suffix)")
        if info.deprecated:
            notes.append(f"shut down {info.deprecated}")
        rows.append(
            (
                info.id,
                info.kind,
                f"{info.context_window:,}",
                f"{info.input_per_mtok:.2f}",
                f"{info.output_per_mtok:.2f}",
                info.prices_as_of,
                "; ".join(notes),
            )
        )
    return table(rows)


def fmt(value: object, pattern: str) -> str:
    """`pattern` applied to a number; '-' for a missing one (None or NaN)."""
    number = float(value) if isinstance(value, int | float) else float("nan")
    return pattern.format(number) if number == number else "-"
