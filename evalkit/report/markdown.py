"""The Markdown summary: short enough for `$GITHUB_STEP_SUMMARY` or a pull-request comment.

It says what a reviewer needs at a glance (the verdict, the table, the significant
differences, the worst regressions) and points to the HTML report for the rest. Model text
is untrusted: it is truncated, kept on one line and escaped so it cannot break the table,
inject markup or @mention anyone.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from evalkit.analysis.compare import detectable_text
from evalkit.console import fmt, sequential_text
from evalkit.report import label, records

if TYPE_CHECKING:
    from evalkit.analysis.compare import Flip
    from evalkit.report import RunReport

MAX_REGRESSIONS = 10
MAX_OUTPUT = 120  # characters of each output quoted
_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def render_markdown(report: RunReport) -> str:
    """The run (and its comparison with a baseline, if given) as GitHub-flavoured Markdown."""
    lines = [f"## evalkit: {cell(report.suite)}", ""]
    lines += [_header(report), ""]
    if report.status != "complete":
        reason = report.manifest.get("reason")
        lines += [f"> **Run {cell(report.status)}**" + (f": {cell(reason)}" if reason else ""), ""]
    if (report.manifest.get("sequential") or {}).get("verdict"):
        decision = sequential_text(report.manifest["sequential"])
        lines += [f"**Sequential decision:** {cell(decision, 600)}", ""]
    if report.gates is not None:
        lines += _gate(report)
    if report.comparison is not None:
        lines += _comparison(report)
    lines += _summary(report)
    lines += _pairs(report)
    if report.comparison is not None and report.comparison.regressions:
        lines += _regressions(report.comparison.regressions)
    lines += [_counts(report), ""]
    return "\n".join(lines)


def _header(report: RunReport) -> str:
    started = report.manifest.get("started_at") or "-"
    return f"Run `{_code(report.run_id)}` · {cell(started)} · status **{cell(report.status)}**"


def _comparison(report: RunReport) -> list[str]:
    c = report.comparison
    assert c is not None
    mark = "❌" if c.failed else "✅"
    lines = [f"### {mark} Verdict: {c.verdict}", ""]
    lines += [f"- {cell(reason)}" for reason in c.reasons]
    lines += [
        f"- pass rate {fmt(c.base_pass_rate, '{:.1%}')} → {fmt(c.new_pass_rate, '{:.1%}')} "
        f"(delta {fmt(c.delta, '{:+.1%}')}, 95% interval {fmt(c.delta_low, '{:+.1%}')} … "
        f"{fmt(c.delta_high, '{:+.1%}')}, McNemar p = {fmt(c.p_value, '{:.3g}')}) over "
        f"{c.cases} paired cases; {len(c.regressions)} regression(s), {len(c.fixes)} fix(es)",
        f"- {detectable_text(c.cases, c.min_detectable, c.alpha)}",
        f"- baseline `{_code(c.base_run)}`, policy `{_code(c.policy)}`",
        "",
    ]
    return lines


def _gate(report: RunReport) -> list[str]:
    """The gate's verdict, and each rule's outcome with what decided it."""
    gates = report.gates or []
    held = report.gate_held
    lines = [
        f"### {'✅' if held else '❌'} Gate: {'held' if held else 'failed'}",
        "",
        "| rule | judged | outcome | what decided it |",
        "| --- | --- | --- | --- |",
    ]
    for g in gates:
        outcome = "held" if g.held else "**failed**"
        lines.append(
            f"| `{_code(g.gate)}` | {cell(g.subject)} | {outcome} | {cell(g.reason, 600)} |"
        )
    return [*lines, ""]


def _summary(report: RunReport) -> list[str]:
    lines = [
        "### Summary",
        "",
        "| model [variant] | pass rate | cases passed (95% CI) | score | cost/case | cost "
        "| p50 latency | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    counts = report.case_counts.to_dict("index")
    frontier = set(report.models.frontier)
    for row in records(report.models.summary):
        name = str(row["label"])
        c = counts[name]
        interval = f"{fmt(c['low'], '{:.0%}')}–{fmt(c['high'], '{:.0%}')}"
        lines.append(
            f"| {cell(name)}{' ⭐' if name in frontier else ''} "
            f"| **{fmt(row['pass_rate'], '{:.1%}')}** "
            f"| {int(c['passed'])}/{int(c['cases'])} ({interval}) "
            f"| {fmt(row['mean_score'], '{:.2f}')} "
            f"| {fmt(row['cost_per_case_usd'], '${:.5f}')} "
            f"| {fmt(row['cost_usd'], '${:.4f}')} "
            f"| {fmt(row['latency_p50_s'], '{:.2f}s')} "
            f"| {fmt(row['error_rate'], '{:.1%}')} |"
        )
    lines += ["", "⭐ on the cost–quality frontier.", ""]
    return lines


def _pairs(report: RunReport) -> list[str]:
    pairs = report.models.pairs
    if pairs.empty:
        return []
    significant = pairs[pairs["significant"]]
    if significant.empty:
        smallest = pairs.sort_values("min_detectable").iloc[0]  # the pair that saw the most
        could = detectable_text(int(smallest["cases"]), float(smallest["min_detectable"]))
        return [
            f"No significant difference between any two of the {len(report.labels)} models "
            f"(exact McNemar, Holm-corrected, alpha 0.05); {could}.",
            "",
        ]
    lines = [
        "### Significant differences",
        "",
        "| A | B | delta (B − A) | 95% interval | Holm p | could detect |",
        "| --- | --- | ---: | --- | ---: | --- |",
    ]
    for p in records(significant):
        lines.append(
            f"| {cell(p['a'])} | {cell(p['b'])} | {fmt(p['delta'], '{:+.1%}')} "
            f"| {fmt(p['delta_low'], '{:+.1%}')} … {fmt(p['delta_high'], '{:+.1%}')} "
            f"| {fmt(p['p_holm'], '{:.3g}')} "
            f"| {detectable_text(int(p['cases']), float(p['min_detectable']))} |"
        )
    return [*lines, ""]


def _regressions(flips: list[Flip]) -> list[str]:
    lines = [
        f"### Regressions ({len(flips)})",
        "",
        "| case | model [variant] | why | baseline output | new output |",
        "| --- | --- | --- | --- | --- |",
    ]
    for flip in flips[:MAX_REGRESSIONS]:
        name = label(flip.model, flip.variant)
        must = " (must pass)" if flip.must_pass else ""
        lines.append(
            f"| {cell(flip.case_id)}{must} | {cell(name)} | {cell(_why(flip.reasons))} "
            f"| {cell(flip.base_output, MAX_OUTPUT)} | {cell(flip.new_output, MAX_OUTPUT)} |"
        )
    if len(flips) > MAX_REGRESSIONS:
        lines.append(f"\n…and {len(flips) - MAX_REGRESSIONS} more: see report.html.")
    return [*lines, ""]


def _counts(report: RunReport) -> str:
    counts = report.manifest.get("counts") or {}
    parts = [f"{len(report.frame):,} samples", f"{report.frame['case_id'].nunique():,} cases"]
    parts += [f"{counts[k]:,} {k.replace('_', ' ')}" for k in ("requests", "errors") if k in counts]
    parts.append(f"total cost ${report.total_cost:.4f}")
    return " · ".join(parts) + ". Details: report.html, junit.xml, results.parquet."


def _why(reasons: str | None) -> str:
    if not reasons:
        return ""
    try:
        parsed = json.loads(reasons)
    except ValueError:
        return reasons
    if isinstance(parsed, dict):
        return "; ".join(f"{k}: {v}" for k, v in parsed.items())
    return reasons


def cell(value: object, limit: int = 300) -> str:
    """Untrusted text as one escaped Markdown table cell, at most `limit` characters."""
    if value is None:
        return "-"
    text = " ".join(str(value).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace("@", "@\u200b")  # no @mention pings from a PR comment
    return _SPECIAL.sub(r"\\\1", text)


def _code(value: str) -> str:
    """Text for a code span: backticks cannot close it early."""
    return value.replace("`", "'")
