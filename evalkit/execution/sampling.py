"""Resampling policies (which sample to keep) and reducers over samples (pass@k, majority...).

Insert-mode completions are sampled several times; the OpenAI guide's advice is to keep the
samples that ended with `finish_reason == "stop"`, and to raise `max_tokens` when every
sample ended in `length`. "First" always means the lowest sample index, never arrival order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

Sample = tuple[int, dict[str, Any]]  # (sample number, choice as journaled)


def samples_of(entries: Iterable[dict[str, Any]]) -> list[Sample]:
    """Every choice of the group's request entries, numbered like DataFrame rows."""
    out = []
    for entry in entries:
        n = max(1, int(entry.get("n") or 1))
        for position, choice in enumerate(entry.get("choices") or []):
            out.append((int(entry["sample"]) * n + int(choice.get("index", position)), choice))
    return sorted(out, key=lambda item: item[0])


def every_sample_hit_length(entries: list[dict[str, Any]]) -> bool:
    """True when the round produced samples and each one ended in `length`."""
    found = samples_of(entries)
    if not found or any(e.get("error_type") for e in entries):
        return False
    return all(choice.get("finish_reason") == "length" for _, choice in found)


def mean_logprob(logprobs: Any) -> float | None:
    """Mean token logprob from a chat, completions or streamed logprobs payload."""
    values: list[float] = []

    def collect(payload: Any) -> None:
        if isinstance(payload, list):
            for item in payload:
                collect(item)
        elif isinstance(payload, dict):
            if isinstance(payload.get("content"), list):  # chat
                values.extend(
                    float(t["logprob"])
                    for t in payload["content"]
                    if isinstance(t, dict) and isinstance(t.get("logprob"), int | float)
                )
            elif isinstance(payload.get("token_logprobs"), list):  # completions
                values.extend(float(v) for v in payload["token_logprobs"] if v is not None)

    collect(logprobs)
    return sum(values) / len(values) if values else None


def select(policy: str, samples: list[Sample]) -> list[int]:
    """The sample numbers the policy keeps.

    all: every sample. first_stop / until_stop: the lowest-numbered sample that stopped.
    best_logprob: the stopped sample with the highest mean token logprob. When no sample
    stopped, the lowest-numbered sample is kept so the case still shows (and fails its
    finish_reason check) rather than silently dropping out of the pass rate.
    """
    if not samples:
        return []
    samples = sorted(samples, key=lambda item: item[0])
    if policy == "all":
        return [number for number, _ in samples]
    stopped = [(n, c) for n, c in samples if c.get("finish_reason") == "stop"]
    if not stopped:
        return [samples[0][0]]
    if policy == "best_logprob":
        scored = [(mean_logprob(c.get("logprobs")), n) for n, c in stopped]
        best = max(
            scored, key=lambda item: (item[0] if item[0] is not None else -math.inf, -item[1])
        )
        return [best[1]]
    return [stopped[0][0]]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): P(at least one of k samples drawn from n passes)."""
    if k > n or n <= 0:
        return float("nan")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k: P(all k samples drawn from n pass), the reliability view of pass@k."""
    if k > n or n <= 0:
        return float("nan")
    return math.comb(c, k) / math.comb(n, k)


def reduce_samples(frame: pd.DataFrame, k: int | None = None) -> pd.DataFrame:
    """Per model, variant and case: samples, passes, pass@k, pass^k, majority vote, mean score.

    `k` defaults to the number of samples of each case.
    """
    import pandas as pd

    rows = []
    keys = ["model", "variant", "case_id"]
    for (model, variant, case_id), group in frame.groupby(keys, sort=False, observed=True):
        passed = group["passed"].fillna(False).astype(bool)
        n, c = len(group), int(passed.sum())
        kk = k or n
        outputs = group["output"].fillna("")
        majority = outputs.value_counts().idxmax() if n else ""
        rows.append(
            {
                "model": model,
                "variant": variant,
                "case_id": case_id,
                "samples": n,
                "passes": c,
                "k": kk,
                "pass_at_k": pass_at_k(n, c, kk),
                "pass_hat_k": pass_hat_k(n, c, kk),
                "majority_output": majority,
                "majority_passed": bool(passed[outputs == majority].any()),
                "mean_score": float(group["score"].mean()) if n else float("nan"),
            }
        )
    return pd.DataFrame(rows)
