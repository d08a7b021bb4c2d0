"""Journal entries → rows, one plain dict per sample: what the DataFrame and `results.parquet`
are built from, with the columns they declare.

A journal entry is one request; a request with `n` choices becomes `n` rows whose tokens and
cost are split evenly, so sums over rows equal what was paid. The journal is read through
`records.fold`, which makes a token count or a cost that cannot be true (negative, not
finite, more than `catalog.USAGE_CEILING` tokens) unknown, whoever wrote it. Nothing here
imports pandas: the end of a run builds its table from these rows without it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evalkit.records.fold import fold_as
from evalkit.records.store import read_journal, read_manifest
from evalkit.scoring.checks import combine

_TEXT = json.JSONEncoder(ensure_ascii=False)  # json.dumps(v, ensure_ascii=False), built once

# name -> (pandas dtype, meaning); the order is the DataFrame's and the Parquet file's
COLUMNS: dict[str, tuple[str, str]] = {
    "run_id": ("string", "the run this row belongs to"),
    "suite": ("string", "suite name"),
    "case_id": ("string", "case id"),
    "variant": ("string", "prompt variant ('' when the suite has one prompt)"),
    "model": ("string", "model label as reports show it"),
    "model_id": ("string", "provider/model"),
    "endpoint": ("string", "chat or completions"),
    "sample": ("Int64", "sample index within the case (request sample × n + choice)"),
    "request_key": ("string", "stable hash of (URL, body, sample): the cache and journal key"),
    "vars": ("string", "the case's variables, JSON"),
    "prompt": ("string", "rendered prompt text, or the messages as JSON"),
    "suffix": ("string", "rendered suffix (insert mode)"),
    "output": ("string", "the model's text"),
    "finish_reason": ("string", "stop, length, content_filter, tool_calls, ..."),
    "prompt_tokens": ("Int64", "prompt tokens billed (split across n choices)"),
    "completion_tokens": ("Int64", "completion tokens billed (split across n choices)"),
    "total_tokens": ("Int64", "prompt + completion tokens"),
    "cached_tokens": ("Int64", "of prompt_tokens, from the prompt cache, at its price"),
    "reasoning_tokens": (
        "Int64",
        "of completion_tokens, hidden reasoning billed as output (split)",
    ),
    "cost_usd": ("float64", "dollars, from the catalogue's prices"),
    "latency_s": ("float64", "request latency, seconds (last attempt)"),
    "ttft_s": ("float64", "time to first token when streamed, seconds"),
    "attempts": ("Int64", "HTTP attempts made (1 = no retry)"),
    "cached": ("boolean", "answered from the cache, at no cost"),
    "batch_id": ("string", "the Batch API batch that answered (billed at its price), else empty"),
    "error_type": ("string", "short error word when the request failed"),
    "error": ("string", "error message when the request failed"),
    "seed": ("Int64", "seed sent, if any"),
    "system_fingerprint": ("string", "backend fingerprint the server reported"),
    "logprobs": ("string", "token logprobs as returned, JSON"),
    "tool_calls": ("string", "tool calls made, JSON [{id, name, arguments, parsed}]"),
    "started_at": ("datetime64[ns, UTC]", "when the request was first sent"),
    "max_tokens": ("Int64", "max_tokens sent"),
    "round": ("Int64", "resampling round: 0, then 1, 2... each after all samples hit length"),
    "params": ("string", "request parameters sent, JSON"),
    "selected": ("boolean", "the sample kept by the suite's select policy"),
    "must_pass": ("boolean", "the case is marked must_pass: any regression fails the gate"),
    "passed": ("boolean", "every required check passed (False for a failed request)"),
    "score": ("float64", "weighted mean of the check scores, 0..1"),
    "check_reasons": ("string", "why each failed check failed, JSON {name: reason}"),
    "judge_cost_usd": ("float64", "what the judge calls grading this sample cost"),
}
# plus, per check, `check.<name>` (boolean) and `check.<name>.score` (float64)


def column_dtypes(checks: Sequence[str]) -> dict[str, str]:
    """The declared columns and then the check columns, each with its pandas dtype."""
    dtypes = {name: dtype for name, (dtype, _) in COLUMNS.items()}
    for column in checks:
        dtypes[column] = "float64" if column.endswith(".score") else "boolean"
    return dtypes


def check_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The check columns among the rows' keys, sorted (the union is taken in C)."""
    return sorted(k for k in set().union(*rows) if k.startswith("check.")) if rows else []


def rows(entry: Mapping[str, Any], run_id: str, suite: str) -> list[dict[str, Any]]:
    """The DataFrame rows of one request entry, its counts and costs believable (see fold)."""
    n = max(1, int(entry.get("n") or 1))
    choices = entry.get("choices") or [{"index": i} for i in range(n)]
    count = len(choices)
    prompt = entry.get("prompt")
    base = {
        "run_id": run_id,
        "suite": suite,
        "case_id": entry.get("case_id"),
        "variant": entry.get("variant", ""),
        "model": entry.get("model"),
        "model_id": entry.get("model_id"),
        "endpoint": entry.get("endpoint"),
        "request_key": entry.get("key"),
        "vars": _json(entry.get("vars")),
        "prompt": prompt if isinstance(prompt, str) else _json(prompt),
        "suffix": entry.get("suffix"),
        "latency_s": entry.get("latency_s"),
        "ttft_s": entry.get("ttft_s"),
        "attempts": entry.get("attempts"),
        "cached": bool(entry.get("cached", False)),
        "batch_id": entry.get("batch_id"),
        "error_type": entry.get("error_type"),
        "error": entry.get("error"),
        "seed": entry.get("seed"),
        "system_fingerprint": entry.get("system_fingerprint"),
        "started_at": entry.get("started_at"),
        "max_tokens": entry.get("max_tokens"),
        "round": entry.get("round", 0),
        "must_pass": bool(entry.get("must_pass", False)),
        "params": _json(entry.get("params")),
    }
    prompt_tokens = _split(entry.get("prompt_tokens"), count)
    completion_tokens = _split(entry.get("completion_tokens"), count)
    cached_tokens = _split(entry.get("cached_tokens"), count)
    reasoning_tokens = _split(entry.get("reasoning_tokens"), count)
    cost = entry.get("cost_usd")
    out = []
    for position, choice in enumerate(choices):
        p, c = prompt_tokens[position], completion_tokens[position]
        row = {
            **base,
            "sample": int(entry.get("sample", 0)) * n + int(choice.get("index", position)),
            "output": choice.get("text"),
            "finish_reason": choice.get("finish_reason"),
            "prompt_tokens": p,
            "completion_tokens": c,
            "total_tokens": None if p is None and c is None else (p or 0) + (c or 0),
            "cached_tokens": cached_tokens[position],
            "reasoning_tokens": reasoning_tokens[position],
            "cost_usd": None if cost is None else cost / count,
            "logprobs": _json(choice.get("logprobs")),
            "tool_calls": _calls_json(choice.get("tool_calls")),
            "selected": True,
            "judge_cost_usd": 0.0,
            "_meta": entry.get("check_meta") or {},
            "_failed": entry.get("error_type") is not None,
        }
        for name, (passed, score, reason) in (choice.get("checks") or {}).items():
            _set_check(row, name, passed, score, reason)
        out.append(row)
    return out


def _set_check(
    row: dict[str, Any], name: str, passed: bool, score: float, reason: str | None
) -> None:
    row[f"check.{name}"] = passed
    row[f"check.{name}.score"] = score
    if not passed:
        row.setdefault("_reasons", {})[name] = reason


def _finish_row(row: dict[str, Any]) -> None:
    """`passed`, `score` and `check_reasons` from the row's check columns and their meta."""
    meta: dict[str, list[Any]] = row.pop("_meta")
    reasons = row.pop("_reasons", {})
    row["check_reasons"] = _json(reasons) if reasons else None
    if row.pop("_failed"):
        row["passed"], row["score"] = False, 0.0
        return
    results = {n: (row[f"check.{n}"], row[f"check.{n}.score"]) for n in meta if f"check.{n}" in row}
    row["passed"], row["score"] = combine(results, {n: (m[0], m[1]) for n, m in meta.items()})


def records(entries: Iterable[Mapping[str, Any]], run_id: str, suite: str) -> list[dict[str, Any]]:
    """DataFrame rows from journal entries, folded in order (see `records.fold`).

    A later entry for the same sample replaces an earlier one (a resumed run re-sent it or
    re-scored it); a `retire` entry drops what came before for the case × variant × model it
    names (the suite changed); selections and judge verdicts are applied last.
    """
    folded = fold_as(entries, lambda entry: rows(entry, run_id, suite))
    rows_by_slot: dict[tuple[Any, ...], dict[str, Any]] = {}
    for request_rows in folded.requests.values():
        for row in request_rows:
            rows_by_slot[(row["case_id"], row["variant"], row["model"], row["sample"])] = row
    for group, selection in folded.selections.items():
        chosen = set(selection.get("selected") or [])
        for number in selection.get("samples") or []:
            sampled = rows_by_slot.get((*group, number))
            if sampled is not None:
                sampled["selected"] = number in chosen
    for (case_id, variant, model, number, check), verdict in folded.verdicts.items():
        graded = rows_by_slot.get((case_id, variant, model, number))
        if graded is not None:
            _set_check(graded, check, verdict["passed"], verdict["score"], verdict["reason"])
            graded["judge_cost_usd"] += verdict.get("cost_usd") or 0.0
    out = list(rows_by_slot.values())
    for row in out:
        _finish_row(row)
    return out


def journal_rows(
    run_dir: Path, manifest: Mapping[str, Any] | None = None, warn: bool = True
) -> list[dict[str, Any]]:
    """The rows of a run directory's journal; `warn`: about lines that are not entries."""
    manifest = manifest or read_manifest(run_dir)
    run_id, suite = str(manifest.get("run_id", "")), str(manifest.get("suite", {}).get("name", ""))
    return records(read_journal(run_dir, warn), run_id, suite)


def _split(total: int | None, parts: int) -> list[int | None]:
    if total is None:
        return [None] * parts
    share, extra = divmod(total, parts)
    return [share + (1 if i < extra else 0) for i in range(parts)]


def _calls_json(calls: Any) -> str | None:
    """Tool calls with their arguments parsed (None when the arguments are not JSON)."""
    if not calls:
        return None
    out = []
    for call in calls:
        try:
            parsed = json.loads(call.get("arguments") or "")
        except ValueError:
            parsed = None
        out.append({**call, "parsed": parsed})
    return _json(out)


def _json(value: Any) -> str | None:
    return None if value is None else _TEXT.encode(value)
