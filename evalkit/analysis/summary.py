"""One table per run: per model (and variant) quality, finish reasons, errors, cost, latency.

Pass rate and mean score are over the samples the suite's `select` policy kept; finish
reason and error rates are over every sample sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

SUMMARY_COLUMNS = [
    "model",
    "variant",
    "cases",
    "samples",
    "pass_rate",
    "mean_score",
    "stop_rate",
    "length_rate",
    "error_rate",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "latency_p50_s",
    "latency_p95_s",
    "ttft_p50_s",
    "ttft_p95_s",
]


_READS = (
    "model",
    "variant",
    "case_id",
    "selected",
    "passed",
    "score",
    "error_type",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "judge_cost_usd",
    "latency_s",
    "ttft_s",
)


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-model, per-variant summary of a run's DataFrame (see `load_run`)."""
    import pandas as pd

    series: dict[str, Any] = {name: frame[name] for name in _READS}
    columns = {name: s.to_numpy(dtype=object, na_value=None) for name, s in series.items()}
    return pd.DataFrame(summary_of(columns), columns=SUMMARY_COLUMNS)


def summarize_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The same summary, one dict per line, from a run's rows (`records.rows`): how a run
    ends without pandas."""
    return summary_of({name: [row.get(name) for row in rows] for name in _READS})


def summary_of(columns: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The summary from the columns it reads, None where a value is unknown; groups in the
    order they first appear."""
    positions: dict[tuple[Any, Any], list[int]] = {}
    for i, group in enumerate(zip(columns["model"], columns["variant"], strict=True)):
        positions.setdefault(group, []).append(i)
    out = []
    for (model, variant), at in positions.items():

        def values(name: str, at: list[int] = at) -> list[Any]:
            column = columns[name]
            return [column[i] for i in at]

        selected = columns["selected"]
        kept = [i for i in at if selected[i] is None or selected[i]]
        answered = [i for i in at if columns["error_type"][i] is None]
        finish = [f for f in values("finish_reason", answered) if f is not None]
        out.append(
            {
                "model": model,
                "variant": variant,
                "cases": len(set(values("case_id"))),
                "samples": len(at),
                "pass_rate": _mean([float(bool(p)) for p in values("passed", kept)]),
                "mean_score": _mean(values("score", kept)),
                "stop_rate": _mean([float(f == "stop") for f in finish]),
                "length_rate": _mean([float(f == "length") for f in finish]),
                "error_rate": _mean([float(e is not None) for e in values("error_type")]),
                "prompt_tokens": _total(values("prompt_tokens")),
                "completion_tokens": _total(values("completion_tokens")),
                "cached_tokens": _total(values("cached_tokens")),
                "reasoning_tokens": _total(values("reasoning_tokens")),
                "cost_usd": float(_total(values("cost_usd")) + _total(values("judge_cost_usd"))),
                "latency_p50_s": _quantile(values("latency_s", answered), 0.5),
                "latency_p95_s": _quantile(values("latency_s", answered), 0.95),
                "ttft_p50_s": _quantile(values("ttft_s", answered), 0.5),
                "ttft_p95_s": _quantile(values("ttft_s", answered), 0.95),
            }
        )
    return out


def _known(values: Sequence[Any]) -> list[Any]:
    return [v for v in values if v is not None and v == v]  # neither unknown nor NaN


def _mean(values: Sequence[Any]) -> float:
    known = _known(values)
    return math.fsum(known) / len(known) if known else float("nan")


def _total(values: Sequence[Any]) -> Any:
    return sum(_known(values))


def _quantile(values: Sequence[Any], q: float) -> float:
    """The q-quantile by linear interpolation between the closest ranks, as pandas's."""
    known = sorted(_known(values))
    if not known:
        return float("nan")
    position = (len(known) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(known) - 1)
    return float(known[low] + (known[high] - known[low]) * (position - low))
