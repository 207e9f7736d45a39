"""Fraud metrics, one protocol for every arm: per-score-bin counts, summed over banks, scored.

Each bank turns its scores into counts of legit and fraud rows (and fraud rows per typology) per
score bin; counts add up across banks (through secure aggregation for the federated model) and
the pooled PR-AUC, ROC-AUC, recall@1%FPR and recall per typology come from the summed counts.
Local-only and centralized yardsticks are scored from counts too, so every arm is computed the
same way on the same rows.

Bins: NUM_BINS uniform bins in logit space over [-LOGIT_RANGE, LOGIT_RANGE] (wider scores fall
in the end bins; float32 probabilities saturate at a logit of ~16.6 anyway). Fraud scores crowd
near 1, where uniform probability bins would lump them; logit bins keep 1024 bins per unit of
log-odds everywhere. Rows in one bin count as tied, which
is how scikit-learn treats equal scores, so binned metrics equal the exact ones on scores rounded
to the bin; tests/test_metrics.py measures the difference on model scores (PR-AUC within 0.002).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedfraud.data.schema import TYPOLOGIES

METRICS = ("pr_auc", "roc_auc", "recall_at_1pct_fpr")
NUM_BINS = 32768
LOGIT_RANGE = 16.0
MAX_FPR = 0.01
# Fraud typologies a bank can count (the generator's; real data without them counts none).
FRAUD_TYPOLOGIES: tuple[str, ...] = tuple(t for t in TYPOLOGIES if t != "legit")


def score_bins(scores: np.ndarray) -> np.ndarray:
    """Bin index of each fraud probability (uniform bins in logit space)."""
    p = np.asarray(scores, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logit = np.log(p) - np.log1p(-p)
    logit = np.clip(np.nan_to_num(logit, nan=0.0), -LOGIT_RANGE, LOGIT_RANGE)
    index = np.floor((logit + LOGIT_RANGE) / (2 * LOGIT_RANGE) * NUM_BINS).astype(np.int64)
    return np.clip(index, 0, NUM_BINS - 1)


@dataclass(frozen=True)
class ScoreCounts:
    """Rows per score bin: legit, fraud, and fraud per typology (FRAUD_TYPOLOGIES order)."""

    legit: np.ndarray  # (NUM_BINS,)
    fraud: np.ndarray  # (NUM_BINS,)
    typology: np.ndarray  # (len(FRAUD_TYPOLOGIES), NUM_BINS)

    @classmethod
    def of(
        cls, y: np.ndarray, scores: np.ndarray, typology: np.ndarray | None = None
    ) -> ScoreCounts:
        """Counts of one set of rows (labels 0/1, fraud probabilities, optional typologies)."""
        y = np.asarray(y).astype(bool)
        bins = score_bins(scores)
        legit = np.bincount(bins[~y], minlength=NUM_BINS).astype(np.float64)
        fraud = np.bincount(bins[y], minlength=NUM_BINS).astype(np.float64)
        typ = np.zeros((len(FRAUD_TYPOLOGIES), NUM_BINS))
        if typology is not None:
            names = np.asarray(typology).astype(str)
            for i, name in enumerate(FRAUD_TYPOLOGIES):
                typ[i] = np.bincount(bins[y & (names == name)], minlength=NUM_BINS)
        return cls(legit, fraud, typ)

    @staticmethod
    def vector_size() -> int:
        return NUM_BINS * (2 + len(FRAUD_TYPOLOGIES))

    def to_vector(self) -> np.ndarray:
        """Flat [legit, fraud, typology...] for secure aggregation."""
        return np.concatenate([self.legit, self.fraud, self.typology.ravel()])

    @classmethod
    def from_vector(cls, vector: np.ndarray) -> ScoreCounts:
        """Inverse of `to_vector`; aggregated counts are rounded to whole rows (the secure
        backends' error is far below one row, see tests/fl/test_secure_evaluation.py)."""
        v = np.asarray(vector, dtype=np.float64).ravel()
        if v.size != cls.vector_size():
            raise ValueError(f"score counts hold {v.size} values, expected {cls.vector_size()}")
        v = np.clip(np.rint(v), 0, None)
        return cls(
            v[:NUM_BINS], v[NUM_BINS : 2 * NUM_BINS], v[2 * NUM_BINS :].reshape(-1, NUM_BINS)
        )

    def __add__(self, other: ScoreCounts) -> ScoreCounts:
        return ScoreCounts(
            self.legit + other.legit, self.fraud + other.fraud, self.typology + other.typology
        )


def sum_counts(counts: list[ScoreCounts]) -> ScoreCounts:
    total = counts[0]
    for c in counts[1:]:
        total = total + c
    return total


def pooled_metrics(counts: ScoreCounts, max_fpr: float = MAX_FPR) -> dict[str, Any]:
    """PR-AUC, ROC-AUC, recall@`max_fpr` FPR and recall per typology (at that same threshold)
    from score counts, with the rows and frauds behind them. Metrics are NaN when the rows hold
    a single class (undefined)."""
    pos, neg = counts.fraud[::-1], counts.legit[::-1]  # highest score first
    n_pos, n_neg = float(pos.sum()), float(neg.sum())
    out: dict[str, Any] = {
        "n_rows": int(n_pos + n_neg),
        "n_frauds": int(n_pos),
        "typology_frauds": {},
        "typology_recall": {},
    }
    if n_pos == 0 or n_neg == 0:
        return {**dict.fromkeys(METRICS, math.nan), **out}
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    # Average precision as scikit-learn computes it: sum over thresholds of recall gain x
    # precision; a bin is one threshold (tied scores).
    flagged = tp + fp
    precision = np.divide(tp, flagged, out=np.zeros_like(tp), where=flagged > 0)
    pr_auc = float(np.sum(pos / n_pos * precision))
    # ROC-AUC: P(fraud scores above legit), ties count half.
    roc_auc = float(np.sum(neg * (tp - pos / 2)) / (n_pos * n_neg))
    # Deepest threshold whose FPR stays within max_fpr (flag nothing if even the top bin fails).
    within = np.nonzero(fp / n_neg <= max_fpr)[0]
    k = int(within[-1]) if within.size else -1
    out.update(
        pr_auc=pr_auc,
        roc_auc=roc_auc,
        recall_at_1pct_fpr=float(tp[k] / n_pos) if k >= 0 else 0.0,
    )
    for name, typ in zip(FRAUD_TYPOLOGIES, counts.typology, strict=True):
        total = float(typ.sum())
        if total > 0:
            caught = float(typ[::-1][: k + 1].sum())
            out["typology_frauds"][name] = int(total)
            out["typology_recall"][name] = caught / total
    return out


def binned_metrics(
    y: np.ndarray, scores: np.ndarray, typology: np.ndarray | None = None
) -> dict[str, Any]:
    """`pooled_metrics` of one set of rows."""
    return pooled_metrics(ScoreCounts.of(y, scores, typology))


def score_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Exact PR-AUC, ROC-AUC and recall@1%FPR (scikit-learn, no bins): the reference the
    binned metrics are checked against. NaN when a split has a single class."""
    y = np.asarray(y)
    if y.size == 0 or y.min() == y.max():
        return dict.fromkeys(METRICS, math.nan)
    # Imported on use: sklearn costs ~1.5 s per fresh bank process (one per Flower message).
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, scores)
    return {
        "pr_auc": float(average_precision_score(y, scores)),
        "roc_auc": float(roc_auc_score(y, scores)),
        "recall_at_1pct_fpr": float(tpr[fpr <= MAX_FPR].max()),
    }


def flat_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """One level of `name.key` floats (Flower's MetricRecord is flat); NaN stays NaN."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            out.update({f"{key}.{k}": float(v) for k, v in value.items()})
        else:
            out[key] = float(value)
    return out


def nested_metrics(flat: Mapping[str, float]) -> dict[str, Any]:
    """Inverse of `flat_metrics` (counts back to int)."""
    out: dict[str, Any] = {"typology_frauds": {}, "typology_recall": {}}
    for key, value in flat.items():
        group, _, name = key.partition(".")
        v = int(value) if group in ("n_rows", "n_frauds", "typology_frauds") else float(value)
        if name:
            out.setdefault(group, {})[name] = v
        else:
            out[group] = v
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
