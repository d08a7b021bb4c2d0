"""The anytime-valid test for pass/fail outcomes: an e-process on the discordant pairs.

Only the cases where the two sides disagree say which is better (as in McNemar's test). Of
n such pairs, n10 pass on side A only and n01 on side B only; θ = P(A passes | discordant).
Against the null "A is no better" (θ ≤ ½), the mixture of likelihood ratios over a uniform
prior on θ ∈ [½, 1] (a Bayes factor with a truncated uniform prior, Robbins' method of
mixtures):

    E = ∫_{½}^{1} 2 · (2θ)^n10 · (2(1 − θ))^n01 dθ
      = 2^(n+1) · B(n10 + 1, n01 + 1) · (1 − I_½(n10 + 1, n01 + 1))

Each factor 2(θ' x + (1 − θ')(1 − x)) with θ' ≥ ½ has mean at most 1 whenever the true θ is
at most ½, so E is a nonnegative supermartingale under every θ of the null, and by Ville's
inequality P(E ever reaches 1/α) ≤ α: the test may be looked at after every round and stop
at any time (Ramdas, Grünwald, Vovk & Shafer, "Game-theoretic statistics and safe
anytime-valid inference", Statistical Science 2023). Like `stats.mcnemar_exact`, it treats
the cases as random draws (the question is "is A better", not "was A better on this suite").
"""

from __future__ import annotations

import math

import numpy as np


def log_discordant_e_value(n10: int, n01: int) -> float:
    """log E, the evidence that side A (n10 wins) beats side B (n01 wins); exact at any n.

    For whole numbers the incomplete beta is a binomial tail, 1 − I_½(n10+1, n01+1) =
    P(Binomial(n+1, ½) ≤ n10), and 2^(n+1) B(n10+1, n01+1) = 2^(n+1) / ((n+1) C(n, n10)), so
    E = Σ_{k ≤ n10} C(n+1, k) / ((n+1) C(n, n10)); the sum runs over the shorter tail, in
    log space, so thousands of pairs neither overflow nor lose precision.
    """
    if n10 < 0 or n01 < 0:
        raise ValueError("discordant counts must not be negative")
    n = n10 + n01
    m = n + 1
    log_norm = math.log(m) + _log_choose(n, n10)  # log((n+1) C(n, n10))
    if n10 <= n01:  # the tail itself is the short side
        return _log_binomial_sum(m, n10) - log_norm
    # Σ_{k ≤ n10} = 2^m − Σ_{k ≤ n01}, the short tail, which is at most half of 2^m
    short = _log_binomial_sum(m, n01) - m * math.log(2.0)
    return m * math.log(2.0) + math.log1p(-math.exp(short)) - log_norm


def discordant_e_value(n10: int, n01: int) -> float:
    """E itself (inf when it overflows a float): evidence for A over B."""
    log_e = log_discordant_e_value(n10, n01)
    return math.exp(log_e) if log_e < 700 else math.inf


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _log_binomial_sum(m: int, top: int) -> float:
    """log Σ_{k=0}^{top} C(m, k), the terms built by their ratios (as `mcnemar_exact` does)."""
    k = np.arange(top, dtype=float)
    terms = np.concatenate(([0.0], np.cumsum(np.log((m - k) / (k + 1)))))  # log C(m, 0..top)
    peak = float(terms.max())
    return peak + math.log(float(np.exp(terms - peak).sum()))
