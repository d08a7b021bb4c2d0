"""Simulation benchmark of the sequential decisions (issue 16): counts, not seconds.

    nice python benchmarks/sequential_sim.py [--sims 2000] [--suite 1000] [--seed 0]
                                             [--first 20] [--growth 1.5]

Each simulated comparison draws a suite of `--suite` paired outcomes, sends them in a seeded
random order in rounds of 20, then ×1.5 (`round_sizes`; `--first`, `--growth`), and feeds
every round to a `SequentialComparison` until it decides. How the outcomes are related:

* correlated: the candidate breaks Δ of the cases the baseline passes, and 5% of cases flip
  each way by noise (P(baseline only) = 0.05 + Δ, P(candidate only) = 0.05); baseline 80%.
* independent: baseline passes with 80%, the candidate with 80% − Δ, independently per case
  (two unrelated models: a third of the cases disagree, so the signal is much noisier).
* scores: each case has a difficulty p ~ Beta(4, 1) (mean 0.8); its score on a side is the
  share of 5 samples that pass, at p for the baseline and p − Δ for the candidate.

Printed as Markdown: for each setting, how often each verdict came (the false-alarm rate at
Δ = 0 with its 95% Wilson interval; the power otherwise) and the mean share of the suite
sent. Targets (issue 16), at α = 0.05 on 1,000 cases: false alarms ≤ α; under 25% of the
suite at a 30-point regression, under 50% at 10 points; power ≥ 0.9 at 10 points.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np

from evalkit.analysis.sequential import (
    Mode,
    SequentialComparison,
    SequentialDecision,
    round_sizes,
)
from evalkit.analysis.stats import wilson

BASE = 0.8  # the baseline's pass rate
NOISE = 0.05  # correlated: the share of cases that flip each way with no true difference
SAMPLES = 5  # scores: samples averaged within a case


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cell_probabilities(kind: str, delta: float) -> tuple[float, float, float]:
    """P(both pass), P(baseline only), P(candidate only); the rest is P(both fail)."""
    if kind == "correlated":
        a_only, b_only = NOISE + delta, NOISE
        return BASE - a_only, a_only, b_only
    candidate = BASE - delta
    return BASE * candidate, BASE * (1 - candidate), (1 - BASE) * candidate


def draw_suite(rng: np.random.Generator, kind: str, delta: float, n: int) -> np.ndarray:
    """(n, 2) outcomes (baseline, candidate), in the random order they are sent."""
    if kind == "scores":
        p = rng.beta(4, 1, size=n)
        sides = np.stack([p, np.clip(p - delta, 0, 1)], axis=1)
        return rng.binomial(SAMPLES, sides) / SAMPLES
    both, a_only, b_only = cell_probabilities(kind, delta)
    cells = np.array([[1, 1], [1, 0], [0, 1], [0, 0]])
    probabilities = [both, a_only, b_only, 1 - both - a_only - b_only]
    return cells[rng.choice(4, size=n, p=probabilities)]


def simulate(
    kind: str,
    delta: float,
    mode: Mode,
    margin: float | None,
    sims: int,
    sizes: list[int],
    seed: int,
) -> list[SequentialDecision]:
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    decisions = []
    for _ in range(sims):
        suite = draw_suite(rng, kind, delta, n)
        comparison = SequentialComparison(
            n,
            mode=mode,
            outcome="score" if kind == "scores" else "pass_fail",
            margin=margin,
            dearer="B" if margin and mode == "choice" else None,
        )
        start = 0
        for size in sizes:
            chunk = suite[start : start + size]
            start += size
            decision = comparison.update(chunk[:, 0].tolist(), chunk[:, 1].tolist())
            if decision.decided:
                break
        decisions.append(comparison.decision)
    return decisions


def row(label: str, decisions: list[SequentialDecision], alarm: set[str]) -> str:
    sims = len(decisions)
    hits = sum(d.verdict in alarm for d in decisions)
    low, high = wilson(hits, sims)
    fractions = np.array([d.fraction for d in decisions])
    verdicts: dict[str, int] = {}
    for d in decisions:
        verdicts[d.verdict] = verdicts.get(d.verdict, 0) + 1
    spread = ", ".join(f"{v}: {c}" for v, c in sorted(verdicts.items()))
    return (
        f"| {label} | {hits / sims:.3f} [{low:.3f}, {high:.3f}] | {fractions.mean():.1%} "
        f"| {np.median(fractions):.1%} | {spread} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=2000)
    parser.add_argument("--suite", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first", type=int, default=20, help="the first round's cases")
    parser.add_argument("--growth", type=float, default=1.5, help="each round's size × this")
    args = parser.parse_args()
    sizes = round_sizes(args.suite, args.first, args.growth)
    print(f"{args.sims} comparisons per setting, {args.suite} cases, alpha 0.05, seed {args.seed}")
    print(f"rounds {sizes}; {cpu_model()}, Python {platform.python_version()}")
    print()
    print("| setting | rate of the verdict [95% Wilson] | mean sent | median sent | verdicts |")
    print("|---|---:|---:|---:|---|")
    settings: list[tuple[str, str, float, Mode, float | None, set[str]]] = []
    for kind in ("correlated", "independent"):
        for points in (0, 2, 5, 10, 20, 30):
            label = f"gate, {kind}, Δ = {points} points: regression"
            settings.append((label, kind, points / 100, "gate", None, {"regression"}))
        label = f"choice, {kind}, Δ = 0: either side called better"
        settings.append((label, kind, 0.0, "choice", None, {"A better", "B better"}))
        label = f"gate + margin 5 points, {kind}, Δ = 0: no regression"
        settings.append((label, kind, 0.0, "gate", 0.05, {"no regression"}))
    for points in (0, 10):
        label = f"gate, scores, Δ = {points} points: regression"
        settings.append((label, "scores", points / 100, "gate", None, {"regression"}))
    for index, (label, kind, delta, mode, margin, alarm) in enumerate(settings):
        decisions = simulate(kind, delta, mode, margin, args.sims, sizes, args.seed + index)
        print(row(label, decisions, alarm), flush=True)


if __name__ == "__main__":
    main()
