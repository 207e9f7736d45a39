"""Membership-inference metrics of an attack that scores candidate rows (higher = "member"):
TPR at a low FPR, the attack advantage max(TPR - FPR), and the advantage a score with no
membership signal reaches on the same numbers of members and non-members (its noise floor)."""

from __future__ import annotations

import numpy as np

LOW_FPR = 1e-3


def tpr_at_fpr(scores: np.ndarray, members: np.ndarray, max_fpr: float = LOW_FPR) -> float:
    """Fraction of members scored above a threshold that flags at most `max_fpr` of the
    non-members. With fewer than 1 / max_fpr non-members that threshold is above every
    non-member (FPR = 0), the conservative reading."""
    scores, members = np.asarray(scores, np.float64), np.asarray(members, bool)
    out = np.sort(scores[~members])[::-1]
    allowed = int(np.floor(max_fpr * len(out)))  # non-members that may sit above the threshold
    threshold = out[allowed] if allowed < len(out) else -np.inf
    return float((scores[members] > threshold).mean())


def advantage(scores: np.ndarray, members: np.ndarray) -> float:
    """max over thresholds of TPR - FPR (the membership advantage of Yeom et al. 2018)."""
    scores, members = np.asarray(scores, np.float64), np.asarray(members, bool)
    order = np.argsort(-scores, kind="stable")
    hits = members[order]
    tpr = np.cumsum(hits) / max(int(hits.sum()), 1)
    fpr = np.cumsum(~hits) / max(int((~hits).sum()), 1)
    return float(max(0.0, np.max(tpr - fpr)))


def null_advantage(
    members: np.ndarray, quantile: float = 0.95, trials: int = 500, seed: int = 0
) -> float:
    """The `quantile` of the advantage of random scores on these members: an attack below it
    has shown no membership signal (a finite sample makes max(TPR - FPR) > 0 by chance)."""
    rng = np.random.default_rng(seed)
    members = np.asarray(members, bool)
    draws = [advantage(rng.random(len(members)), members) for _ in range(trials)]
    return float(np.quantile(draws, quantile))
