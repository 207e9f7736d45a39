"""The one-run privacy audit of Steinke, Nasr & Jagielski 2023 ("Privacy Auditing with One (1)
Training Run", NeurIPS 2023, arXiv 2305.08846): m canaries, each included in training
independently with probability 1/2; the auditor scores them, guesses "in" for the k+ highest and
"out" for the k- lowest, and counts its correct guesses v out of r = k+ + k-.

Under (ε, δ)-DP the number of correct guesses is stochastically dominated as in their
Corollary 5.4 (the statement Appendix D's `p_value_DP_audit` implements):

    P[V >= v] <= β + 2mδ·α,   β = P[Binomial(r, q) >= v],   q = e^ε / (1 + e^ε),
                              α = max_{1<=i<=v} P[v > Binomial(r, q) >= v - i] / i.

The empirical lower bound is the largest ε whose p-value is still below the significance level:
the model is then not (ε, δ)-DP with confidence 1 - significance. Trying several (k+, k-) and
keeping the best is a multiple test, so each choice is held to significance / choices
(Bonferroni), which keeps the reported bound valid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Fractions of m guessed "in" (top) and "out" (bottom); few, so Bonferroni costs little.
GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.2)


def p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P[>= v correct of r guesses] under (eps, delta)-DP with m canaries (Corollary 5.4)."""
    if not (0 <= v <= r <= m and eps >= 0 and 0 <= delta <= 1):
        raise ValueError(f"need 0 <= v <= r <= m, eps >= 0, delta in [0, 1]: {m, r, v, eps, delta}")
    q = 1.0 / (1.0 + math.exp(-eps))
    beta = float(stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(beta, 1.0)
    # P[v > B >= v - i] for i = 1..v is the cumulative mass of B = v-1, v-2, ..., v-i.
    below = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(beta + alpha * delta * 2 * m, 1.0)


def epsilon_lower_bound(
    m: int, r: int, v: int, delta: float, significance: float = 0.05, tol: float = 1e-6
) -> float:
    """The largest ε rejected at `significance` (0 when even ε = 0 is not rejected).

    The p-value increases with ε, so the boundary is found by bracketing and bisection."""
    if not 0 < significance < 1:
        raise ValueError("significance must be in (0, 1)")
    if p_value(m, r, v, 0.0, delta) >= significance:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) < significance:
        lo, hi = hi, 2 * hi
        if hi > 1e3:  # every guess right with huge m: no finite ε is consistent
            return math.inf
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if p_value(m, r, v, mid, delta) < significance:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class OneRunAudit:
    """The best guess (k+ "in", k- "out") and the ε lower bound it proves."""

    epsilon_lower_bound: float
    canaries: int
    guesses: int
    correct: int
    significance: float
    delta: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "canaries": self.canaries,
            "guesses": self.guesses,
            "correct": self.correct,
            "significance": self.significance,
            "delta": self.delta,
        }


def one_run_audit(
    scores: np.ndarray,
    included: np.ndarray,
    delta: float,
    significance: float = 0.05,
    fractions: Sequence[float] = GUESS_FRACTIONS,
) -> OneRunAudit:
    """Guess the top/bottom k of `scores` (higher = more likely a member) for each fraction of
    the m canaries; the best bound over the choices, each at significance / choices."""
    scores, included = np.asarray(scores, np.float64), np.asarray(included, bool)
    m = len(scores)
    order = np.argsort(-scores, kind="stable")
    level = significance / len(fractions)
    best = OneRunAudit(0.0, m, 0, 0, significance, delta)
    for fraction in fractions:
        k = max(1, int(round(fraction * m)))
        if 2 * k > m:
            continue
        correct = int(included[order[:k]].sum() + (~included[order[-k:]]).sum())
        eps = epsilon_lower_bound(m, 2 * k, correct, delta, level)
        if eps > best.epsilon_lower_bound:
            best = OneRunAudit(eps, m, 2 * k, correct, significance, delta)
    return best
