"""Fraud metrics (scikit-learn) and sample-weighted combination across banks."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

METRICS = ("pr_auc", "roc_auc", "recall_at_1pct_fpr")


def recall_at_fpr(y: np.ndarray, scores: np.ndarray, max_fpr: float = 0.01) -> float:
    """Highest recall reachable while flagging at most `max_fpr` of legitimate transactions."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, scores)
    return float(tpr[fpr <= max_fpr].max())


def score_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """PR-AUC, ROC-AUC and recall@1%FPR; NaN when a split has a single class (undefined)."""
    y = np.asarray(y)
    if y.min() == y.max():
        return dict.fromkeys(METRICS, math.nan)
    # Imported on use: sklearn costs ~1.5 s per fresh bank process (one per Flower message).
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {
        "pr_auc": float(average_precision_score(y, scores)),
        "roc_auc": float(roc_auc_score(y, scores)),
        "recall_at_1pct_fpr": recall_at_fpr(y, scores),
    }


def weighted_mean(
    per_bank: Mapping[str, Mapping[str, float]], weights: Mapping[str, float]
) -> dict[str, float]:
    """Sample-weighted mean of each metric over banks where it is defined."""
    out: dict[str, float] = {}
    for metric in METRICS:
        pairs = [
            (per_bank[b][metric], weights[b])
            for b in per_bank
            if metric in per_bank[b] and not math.isnan(per_bank[b][metric])
        ]
        total = sum(w for _, w in pairs)
        out[metric] = sum(v * w for v, w in pairs) / total if total > 0 else math.nan
    return out


def typology_recall(
    y: np.ndarray, scores: np.ndarray, typology: np.ndarray, max_fpr: float = 0.01
) -> dict[str, float]:
    """Recall per fraud typology at the threshold that keeps FPR on legit rows <= `max_fpr`."""
    legit = scores[y == 0]
    if legit.size == 0:
        return {}
    threshold = float(np.quantile(legit, 1 - max_fpr))
    out = {}
    for name in sorted(set(typology[y == 1])):
        sel = (typology == name) & (y == 1)
        out[str(name)] = float((scores[sel] > threshold).mean())
    return out


def json_safe(value: object) -> object:
    """Replace NaN/inf floats by None (JSON has no NaN) recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
