"""What the `evalkit` command prints: plain text for the terminal and CI logs (no colour
needed to read it). Each function returns the text; the CLI decides where it goes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from evalkit.analysis.compare import RunComparison
    from evalkit.analysis.gates import GateOutcome
    from evalkit.batch.status import BatchState
    from evalkit.execution.settings import RunResult
    from evalkit.planning.estimate import DryRun
    from evalkit.planning.shard import Shard, ShardSize
    from evalkit.records.merge import Merged
    from evalkit.suite.spec import Suite


def validated(path: Path, suite: Suite, models: int) -> str:
    """`evalkit validate`'s line for a suite without problems, with what it would send."""
    from evalkit.planning.plan import count_requests

    variants = len(suite.variant_prompts())
    return (
        f"{path}: ok ({len(suite.cases)} cases, {variants} variant(s), "
        f"{models} model(s), {suite.samples} sample(s): {count_requests(suite) * models} requests)"
    )


def shard_sizes_text(sizes: Sequence[ShardSize], chosen: Shard) -> str:
    """`validate --shard I/N`: what each of the N shards gets, the chosen one marked."""
    return "\n".join(
        f"  shard {size.shard}: {size.cases} case(s), {size.requests} requests"
        + ("  <- --shard" if size.shard == chosen else "")
        for size in sizes
    )


def merged_text(merged: Merged) -> str:
    """`evalkit merge`: what was merged, the shards that had not completed, the summary."""
    from evalkit.analysis.summary import summarize
    from evalkit.records.frame import load_run

    lines = [
        f"merged {merged.shards} shard(s): {merged.cases} cases, {merged.rows} rows, "
        f"status {merged.status}"
    ]
    if merged.incomplete:
        shards = ", ".join(merged.incomplete)
        lines.append(f"not complete, merged with --allow-incomplete: shard(s) {shards}")
    frame = load_run(merged.run_dir)
    if not frame.empty:
        lines.append(summary_table(summarize(frame).to_dict("records")))
    return "\n".join(lines)


def run_directory(path: Path) -> str:
    """The first line of `evalkit run`, before anything is sent (tools read it)."""
    return f"run directory: {path}"


def resume_question(path: Path) -> str:
    return f"{path} did not finish. Resume it?"


def resume_note(path: Path) -> str:
    return f"note: {path} did not finish; `evalkit run --resume {path}` continues it"


def run_summary(result: RunResult) -> str:
    """A finished run: each model's requests and cost, the summary table, the paired
    differences between models (and variants), failed samples."""
    lines = [
        f"{label}: {stats['requests']} requests, {stats['errors']} errors, "
        f"{stats['cached']} cached, ${stats['cost_usd']:.4f}"
        for label, stats in result.per_model.items()
    ]
    lines.append(summary_table(result.summary))
    if len(result.summary) > 1:  # pairs to compare: the paired tests need the DataFrame
        from evalkit.analysis.compare import compare_models

        lines += pair_lines(compare_models(result.frame).pairs)
    if result.failed_samples:
        decides = "; the gate decides the exit code" if result.gates is not None else ""
        lines.append(f"{result.failed_samples} sample(s) failed their checks{decides}")
    return "\n".join(lines)


def pair_lines(pairs: pd.DataFrame, limit: int = 10) -> list[str]:
    """The paired differences between a run's models (and variants), each with the smallest
    difference its cases could detect: one sentence for one pair, else a table of the pairs
    that differ in the model or in the variant only (up to `limit`)."""
    from evalkit.analysis.compare import detectable_text

    if pairs.empty:
        return []
    rows = pairs.to_dict("records")
    if len(rows) == 1:
        p = rows[0]
        return [
            f"{p['b']} vs {p['a']}: {_points(p['delta'])} points (95% interval "
            f"{_points(p['delta_low'])} to {_points(p['delta_high'])}), McNemar p = "
            f"{fmt(p['p_value'], '{:.3g}')}; "
            f"{detectable_text(int(p['cases']), float(p['min_detectable']))}"
        ]
    rows = [p for p in rows if _one_apart(str(p["a"]), str(p["b"]))] or rows
    table_rows = [("B vs A", "cases", "B - A", "95% interval", "McNemar p", "can detect")]
    for p in rows[:limit]:
        mdd = float(p["min_detectable"])
        table_rows.append(
            (
                f"{p['b']} vs {p['a']}",
                str(int(p["cases"])),
                f"{_points(p['delta'])} pts",
                f"{_points(p['delta_low'])} to {_points(p['delta_high'])}",
                fmt(p["p_value"], "{:.3g}"),
                f">= {mdd * 100:.0f} pts" if mdd < 1 else "nothing",
            )
        )
    lines = ["paired differences (can detect: at alpha 0.05 with 80% power, for those cases)"]
    lines.append(table(table_rows))
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more pairs (see report.html)")
    return lines


def _points(value: object) -> str:
    return fmt(float(value) * 100 if isinstance(value, int | float) else value, "{:+.1f}")


def _one_apart(a: str, b: str) -> bool:
    """Two labels, `model [variant]`, that share their model or their variant."""
    model_a, _, variant_a = a.partition(" [")
    model_b, _, variant_b = b.partition(" [")
    return model_a == model_b or variant_a == variant_b


def gate_text(outcomes: Sequence[GateOutcome]) -> str:
    """The gate's verdict, then each rule's outcome with what decided it."""
    failed = [o for o in outcomes if not o.held]
    verdict = f"FAILED ({len(failed)} of {len(outcomes)})" if failed else "held"
    lines = [f"gate {verdict}: the exit code is the gate's"]
    for o in outcomes:
        lines.append(f"  {'held  ' if o.held else 'FAILED'}  {o.gate}  {o.subject}: {o.reason}")
    return "\n".join(lines)


def run_reason(result: RunResult) -> str:
    """Why a run did not complete (for stderr)."""
    return f"run {result.status}: {result.reason}"


def dry_run_text(dry: DryRun, as_json: bool = False) -> str:
    """`evalkit run --dry-run`: a table per suite, or JSON with `--json`."""
    from evalkit.planning.estimate import table as estimates_table

    if as_json:
        return json.dumps(dry.as_dict(), indent=2)
    return f"{dry.suite}: nothing sent (dry run)\n{estimates_table(dry.estimates, dry.batch)}"


def cache_stats_text(info: dict[str, Any]) -> str:
    """`evalkit cache stats`: the cache's file and size, then its answers per model."""
    lines = [f"{info['path']}: {info['entries']} answers, {info['bytes'] / 1e6:.1f} MB"]
    lines += [f"  {name}: {count}" for name, count in sorted(info["models"].items())]
    return "\n".join(lines)


def cache_explain_text(items: list[dict[str, Any]]) -> str:
    """`evalkit cache explain`: each request's key and the parts it hashes."""
    lines = []
    for item in items:
        lines.append(
            f"key {item['key']} (sample {item['sample']}, variant {item['variant'] or '-'})"
        )
        lines.append(f"  in cache: {'yes' if item['in_cache'] else 'no'}")
        lines.append(f"  endpoint URL: {item['url']}")
        lines.append(f"  model: {item['model']}")
        lines.append(f"  sample index: {item['sample']}")
        body = json.dumps(item["body"], indent=2, sort_keys=True)
        lines.append("  body: " + body.replace("\n", "\n  "))
    return "\n".join(lines)


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first is the header) as left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def summary_table(summary: Sequence[Mapping[Any, Any]]) -> str:
    """`evalkit.summarize`'s lines as text: one line per model and variant."""
    rows = [("model", "variant", "pass", "score", "stop", "length", "errors", "cost $", "p50 s")]
    for r in summary:
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


def models_table(match: str | None = None) -> str:
    """The catalogue: endpoint, context window, prices (USD per 1M tokens), where the prices
    come from and since when, notes; `match`: only the ids that contain it."""
    from evalkit.models.catalog import known

    rows = [("model", "endpoint", "context", "$/1M in", "$/1M out", "prices", "as of", "notes")]
    for info in known():
        if match and match.lower() not in info.id.lower():
            continue
        notes = [info.note] if info.note else []
        if info.supports_suffix:
            notes.append("insert (suffix)")
        if info.deprecated:
            notes.append(f"shut down {info.deprecated}")
        if info.reasoning:
            notes.append("reasoning: max_completion_tokens, temperature 1")
        if info.cached_input_per_mtok is not None:
            notes.append(f"cached input ${info.cached_input_per_mtok:g}/1M")
        rows.append(
            (
                info.id,
                info.kind,
                f"{info.context_window:,}",
                f"{info.input_per_mtok:.2f}",
                f"{info.output_per_mtok:.2f}",
                info.price_source,
                info.prices_as_of,
                "; ".join(notes),
            )
        )
    return table(rows)


def batches_table(states: Sequence[BatchState]) -> str:
    """`evalkit batches`: one line per batch."""
    rows = [["model", "batch", "status", "completed", "failed", "requests"]]
    for s in states:
        status = f"{s.status} (cancel asked)" if s.cancelled else s.status
        rows.append(
            [
                s.model,
                s.batch_id or f"(file {s.file_id})",
                status,
                str(s.completed),
                str(s.failed),
                str(s.requests),
            ]
        )
    return table(rows)


def fmt(value: object, pattern: str) -> str:
    """`pattern` applied to a number; '-' for a missing one (None or NaN)."""
    number = float(value) if isinstance(value, int | float) else float("nan")
    return pattern.format(number) if number == number else "-"


def comparison_text(comparison: RunComparison, limit: int = 20) -> str:
    """`evalkit compare` as text: verdict, the change with its interval, flipped cases."""
    from evalkit.analysis.compare import detectable_text

    c = comparison
    lines = [
        f"{c.verdict.upper()}: {'; '.join(c.reasons) or 'no regression by the policy'} "
        f"(--fail-on {c.policy}, alpha {c.alpha:g})",
        f"suite {c.suite}: {c.cases} paired cases; pass rate {fmt(c.base_pass_rate, '{:.1%}')} -> "
        f"{fmt(c.new_pass_rate, '{:.1%}')} ({fmt(c.delta, '{:+.1%}')}, 95% CI "
        f"{fmt(c.delta_low, '{:+.1%}')} to {fmt(c.delta_high, '{:+.1%}')}), "
        f"McNemar p = {c.p_value:.3g}",
        detectable_text(c.cases, c.min_detectable, c.alpha),
    ]
    for whose, gates in (("the baseline's", c.base_gates), ("this run's", c.new_gates)):
        if gates is not None:
            held = sum(g.held for g in gates)
            lines.append(f"{whose} gate: {held} of {len(gates)} held")
    for title, flips in (
        ("regressions (pass -> fail)", c.regressions),
        ("fixes (fail -> pass)", c.fixes),
    ):
        lines.append(f"{len(flips)} {title}")
        for flip in flips[:limit]:
            where = f"{flip.case_id}" + (f" [{flip.variant}]" if flip.variant else "")
            must = " (must_pass)" if flip.must_pass else ""
            before, after = _clip(flip.base_output), _clip(flip.new_output)
            lines.append(f"  {where} {flip.model}{must}: {before!r} -> {after!r}")
            if flip.reasons:
                lines.append(f"    {_clip(flip.reasons, 160)}")
        if len(flips) > limit:
            lines.append(f"  ... and {len(flips) - limit} more")
    if c.only_in_base or c.only_in_new:
        lines.append(
            f"not compared: {len(c.only_in_base)} case(s) only in the baseline, "
            f"{len(c.only_in_new)} only in the new run (suite changed)"
        )
        for case_id, variant, model in [*c.only_in_base, *c.only_in_new][:limit]:
            lines.append(f"  {case_id}{f' [{variant}]' if variant else ''} {model}")
    if c.sequential and c.sequential.get("verdict"):  # the new run stopped when decided
        lines.append(sequential_text(c.sequential))
    return "\n".join(lines)


def _clip(text: str | None, width: int = 60) -> str:
    text = (text or "").replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def sequential_text(record: dict[str, Any]) -> str:
    """A `--sequential` run's decision line (the manifest's `sequential` record): the verdict,
    after how many cases of how many, the interval so far and the cost saved (an estimate)."""
    a, b, verdict = record.get("a"), record.get("b"), str(record.get("verdict"))
    margin = record.get("margin")
    if verdict == "not better by margin":
        dearer, cheaper = (a, b) if record.get("dearer") == "A" else (b, a)
        said = f"{dearer} is not better by {fmt(margin, '{:.0%}')}: choose {cheaper}"
    elif verdict in ("A better", "B better"):
        said = f"{a if verdict == 'A better' else b} better"
    elif verdict == "inconclusive":
        said = f"INCONCLUSIVE (undecided at {record.get('stopped')})"
    else:
        said = verdict.upper() if record.get("mode") == "gate" else verdict
    cost = record.get("cost") or {}
    unsent = len((record.get("not_sent") or {}).get("cases") or [])
    return (
        f"sequential {record.get('mode')}: {said} after {record.get('cases_sent')} of "
        f"{record.get('suite_cases')} cases (interval for {b} - {a}: "
        f"{fmt(record.get('low'), '{:+.1%}')} to {fmt(record.get('high'), '{:+.1%}')}, "
        f"alpha {record.get('alpha')}); cost saved ~${fmt(cost.get('saved_usd'), '{:.4g}')}, "
        f"an estimate: {unsent} case(s) not sent at ${fmt(cost.get('per_case_usd'), '{:.4g}')} "
        "per case sent"
    )
