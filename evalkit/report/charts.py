"""The report's charts, drawn by matplotlib into inline SVG strings.

Figures are built with `matplotlib.figure.Figure` and saved by the SVG canvas, never through
pyplot: no backend is selected (not even Agg; a user's notebook keeps its own), and with no
global figure registry nothing leaks however many reports a process writes (no plt.close).
Every chart is drawn from a few aggregated numbers per model, so 100,000 rows cost no more
than 100. Element ids are prefixed per chart so several SVGs can share one HTML page.
"""

from __future__ import annotations

import io
import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from evalkit.report import RunReport

PASS, FRONTIER, MUTED = "#2f855a", "#c05621", "#4a5568"
FINISH_COLOURS = {
    "stop": "#2f855a",
    "length": "#d69e2e",
    "content_filter": "#805ad5",
    "tool_calls": "#3182ce",
    "function_call": "#319795",
    "error": "#c53030",
}
MAX_CHECKS = 30


def charts(report: RunReport) -> dict[str, str]:
    """Chart title → inline SVG, for the charts this run has data for."""
    from matplotlib import rc_context

    drawn: dict[str, str] = {}
    with rc_context(
        {
            "svg.fonttype": "none",  # text stays text: smaller, searchable, crisp
            "text.parse_math": False,  # a `$` in a model or check name is not mathtext
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        for title, draw in (
            ("Pass rate (cases, 95% Wilson interval)", _pass_rates),
            ("Cost per case vs pass rate", _cost_quality),
            ("Latency (s)", _latency),
            ("Time to first token (s)", _ttft),
            ("Finish reasons", _finish_reasons),
            ("Pass rate per check", _checks),
        ):
            figure = draw(report)
            if figure is not None:
                drawn[title] = svg(figure, f"c{len(drawn)}")
    return drawn


def svg(figure: Figure, prefix: str) -> str:
    """The figure as an `<svg>` element: no XML prolog, no metadata, no namespace URLs."""
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.hashsalt": prefix}):  # deterministic ids
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = re.sub(r"<defs>\s*<style[^>]*>.*?</style>\s*</defs>\s*", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    text = re.sub(r'\s(width|height)="[\d.]+pt"', "", text, count=2)
    text = re.sub(r'id="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r"(href=\"|url\()#", rf"\g<1>#{prefix}-", text)
    return re.sub(r"<!--.*?-->\s*", "", text, flags=re.S)


def _figure(rows: int, width: float = 7.5) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    rows = min(max(rows, 2), 60)  # a chart taller than ~20 inches helps nobody
    figure = Figure(figsize=(width, 0.9 + 0.32 * rows), layout="constrained")
    return figure, figure.subplots()


def _pass_rates(report: RunReport) -> Figure:
    table = report.case_counts
    labels = list(table.index)
    rates = table["passed"] / table["cases"].where(table["cases"] > 0)
    figure, axes = _figure(len(labels))
    y = list(range(len(labels)))[::-1]
    low = (rates - table["low"]).clip(lower=0).fillna(0)
    high = (table["high"] - rates).clip(lower=0).fillna(0)
    axes.barh(y, rates.fillna(0), color=PASS, height=0.6)
    axes.errorbar(rates.fillna(0), y, xerr=[low, high], fmt="none", ecolor="#1a202c", capsize=3)
    for position, rate in zip(y, rates, strict=True):
        text = "-" if math.isnan(rate) else f"{rate:.0%}"
        axes.text(
            1.01, position, text, va="center", fontsize=8, transform=axes.get_yaxis_transform()
        )
    axes.set_yticks(y, labels)
    axes.set_xlim(0, 1)
    axes.xaxis.set_major_formatter("{x:.0%}")
    return figure


def _cost_quality(report: RunReport) -> Figure:
    """One marker per model [variant], named in the legend (labels beside points collide)."""
    summary = report.models.summary
    frontier = set(report.models.frontier)
    figure, axes = _figure(6 + len(summary) // 2, width=7.5)
    cost = summary["cost_per_case_usd"].astype(float).fillna(0)
    rate = summary["pass_rate"].astype(float).fillna(0)
    on = summary["label"].isin(frontier)
    line = sorted(zip(cost[on], rate[on], strict=True))
    if len(line) > 1:
        axes.plot(*zip(*line, strict=True), color=FRONTIER, linewidth=1, zorder=2)
    for index, (x, y, name) in enumerate(zip(cost, rate, summary["label"], strict=True)):
        best = name in frontier
        axes.scatter(
            [x],
            [y],
            color=f"C{index % 10}",
            marker="*" if best else "o",
            s=140 if best else 50,
            edgecolors=FRONTIER if best else "none",
            label=f"{name}  (frontier)" if best else str(name),
            zorder=4 if best else 3,
        )
    positive = cost[cost > 0]
    if len(positive) == len(cost) and positive.max() / positive.min() >= 50:
        from matplotlib.ticker import NullFormatter

        axes.set_xscale("log")
        axes.xaxis.set_minor_formatter(NullFormatter())
    axes.xaxis.set_major_formatter(_dollars)
    axes.set_xlabel("cost per case (USD)")
    axes.set_ylabel("pass rate")
    axes.set_ylim(-0.05, 1.08)
    axes.yaxis.set_major_formatter("{x:.0%}")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return figure


def _dollars(value: float, _position: object = None) -> str:
    """Axis ticks in dollars (mathtext is off, so matplotlib's log labels would read raw)."""
    return f"${value:.2g}" if 0 < abs(value) < 0.01 else f"${value:.2f}"


def _latency(report: RunReport) -> Figure | None:
    return _distribution(report, "latency_s")


def _ttft(report: RunReport) -> Figure | None:
    return _distribution(report, "ttft_s")


def _distribution(report: RunReport, column: str) -> Figure | None:
    """Box plots drawn from quantiles (whiskers at p5 and p95): no raw point reaches the SVG.

    Drawn with bars and lines rather than `Axes.bxp`, which reads every rcParam and so makes
    matplotlib import pyplot and pick a backend (a GUI one, on a desktop).
    """
    import numpy as np

    frame = report.frame
    answered = frame[frame["error_type"].isna() & frame[column].notna()]
    if answered.empty:
        return None
    grouped = answered.groupby(["model", "variant"], sort=False, observed=True)[column]
    table = grouped.quantile(np.array([0.05, 0.25, 0.5, 0.75, 0.95])).unstack().to_dict("index")
    rows = [
        (n, table[report.label_keys[n]]) for n in report.labels if report.label_keys[n] in table
    ]
    figure, axes = _figure(len(rows))
    y = list(range(len(rows)))[::-1]
    q = {p: [float(row[p]) for _, row in rows] for p in (0.05, 0.25, 0.5, 0.75, 0.95)}
    box = [high - low for low, high in zip(q[0.25], q[0.75], strict=True)]
    axes.barh(y, box, left=q[0.25], height=0.5, color="#bee3f8", edgecolor="#1a202c")
    axes.hlines(y, q[0.05], q[0.25], color="#1a202c", linewidth=1)
    axes.hlines(y, q[0.75], q[0.95], color="#1a202c", linewidth=1)
    for values, half in ((q[0.05], 0.12), (q[0.95], 0.12), (q[0.5], 0.25)):
        axes.vlines(values, [p - half for p in y], [p + half for p in y], color="#1a202c")
    axes.set_yticks(y, [name for name, _ in rows])
    axes.set_xlabel("seconds (box: p25–p75, line: median, whiskers: p5–p95)")
    return figure


def _finish_reasons(report: RunReport) -> Figure:
    summary = report.models.summary
    counts: list[dict[str, int]] = list(summary["finish_reasons"])
    reasons = sorted({r for c in counts for r in c}, key=_finish_order)
    figure, axes = _figure(len(counts))
    y = list(range(len(counts)))[::-1]
    left = [0.0] * len(counts)
    for reason in reasons:
        shares = [c.get(reason, 0) / max(1, sum(c.values())) for c in counts]
        colour = FINISH_COLOURS.get(reason, MUTED)
        axes.barh(y, shares, left=left, label=reason, color=colour, height=0.6)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    axes.set_yticks(y, list(summary["label"]))
    axes.set_xlim(0, 1)
    axes.xaxis.set_major_formatter("{x:.0%}")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=max(1, len(reasons)))
    return figure


def _finish_order(reason: str) -> tuple[int, str]:
    order = list(FINISH_COLOURS)
    return (order.index(reason) if reason in order else len(order) - 1, reason)


def check_rates(report: RunReport) -> pd.DataFrame:
    """Per-check pass rate (rows: checks, columns: labels) over the kept samples."""
    frame = report.frame
    columns = [c for c in frame.columns if c.startswith("check.") and not c.endswith(".score")]
    kept = frame[frame["selected"].fillna(True).astype(bool)]
    if not columns or kept.empty:
        import pandas as pd

        return pd.DataFrame()
    means = kept[["model", "variant", *columns]].copy()
    means[columns] = means[columns].astype("float64")
    table = means.groupby(["model", "variant"], sort=False, observed=True)[columns].mean()
    table.index = [report.key_labels[key] for key in table.index]
    table.columns = [c.removeprefix("check.") for c in table.columns]
    return table.T


def _checks(report: RunReport) -> Figure | None:
    table = check_rates(report)
    if table.empty:
        return None
    table = table.loc[table.min(axis=1).sort_values(kind="stable").index[:MAX_CHECKS]]
    labels = list(table.columns)
    width = 0.8 / max(1, len(labels))
    figure, axes = _figure(len(table) * max(1, len(labels)) // 2 + 2)
    y = list(range(len(table)))[::-1]
    for index, name in enumerate(labels):
        offsets = [p + 0.4 - width * (index + 0.5) for p in y]
        axes.barh(offsets, table[name].fillna(0), height=width, label=name)
    axes.set_yticks(y, list(table.index))
    axes.set_xlim(0, 1)
    axes.xaxis.set_major_formatter("{x:.0%}")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=min(3, len(labels)))
    return figure
