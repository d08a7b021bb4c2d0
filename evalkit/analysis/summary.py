"""One table per run: per model (and variant) quality, finish reasons, errors, cost, latency.

Pass rate and mean score are over the samples the suite's `select` policy kept; finish
reason and error rates are over every sample sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-model, per-variant summary of a run's DataFrame (see `load_run`)."""
    import pandas as pd

    rows = []
    for (model, variant), group in frame.groupby(["model", "variant"], sort=False, observed=True):
        kept = group[group["selected"].fillna(True).astype(bool)]
        answered = group[group["error_type"].isna()]
        finish = answered["finish_reason"]
        rows.append(
            {
                "model": model,
                "variant": variant,
                "cases": group["case_id"].nunique(),
                "samples": len(group),
                "pass_rate": _mean(kept["passed"].fillna(False).astype(float)),
                "mean_score": _mean(kept["score"]),
                "stop_rate": _mean((finish == "stop").astype(float)),
                "length_rate": _mean((finish == "length").astype(float)),
                "error_rate": _mean(group["error_type"].notna().astype(float)),
                "prompt_tokens": int(group["prompt_tokens"].sum()),
                "completion_tokens": int(group["completion_tokens"].sum()),
                "cached_tokens": int(group["cached_tokens"].sum()),
                "reasoning_tokens": int(group["reasoning_tokens"].sum()),
                "cost_usd": float(group["cost_usd"].fillna(0).sum())
                + float(group["judge_cost_usd"].fillna(0).sum()),
                "latency_p50_s": _quantile(answered["latency_s"], 0.5),
                "latency_p95_s": _quantile(answered["latency_s"], 0.95),
                "ttft_p50_s": _quantile(answered["ttft_s"], 0.5),
                "ttft_p95_s": _quantile(answered["ttft_s"], 0.95),
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _mean(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.mean()) if len(values) else float("nan")


def _quantile(values: pd.Series, q: float) -> float:
    values = values.dropna()
    return float(values.quantile(q)) if len(values) else float("nan")
