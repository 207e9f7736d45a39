"""The binned metrics every arm is scored with: close to the exact ones, additive across banks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedfraud.metrics import (
    FRAUD_TYPOLOGIES,
    METRICS,
    NUM_BINS,
    ScoreCounts,
    binned_metrics,
    flat_metrics,
    nested_metrics,
    pooled_metrics,
    score_metrics,
    sum_counts,
)


def model_like_scores(rng: np.random.Generator, n: int = 40_000):
    """Fraud-model-like float32 probabilities: rare positives, overlapping logit normals."""
    y = rng.random(n) < rng.uniform(0.003, 0.03)
    sep, spread = rng.uniform(1.0, 12.0), rng.uniform(0.3, 4.0)
    logit = np.where(y, rng.normal(sep - 6, spread, n), rng.normal(-6, spread, n))
    return y.astype(np.int8), (1 / (1 + np.exp(-logit))).astype(np.float32)


@pytest.mark.parametrize("seed", range(12))
def test_binned_metrics_are_within_the_bin_tolerance_of_the_exact_ones(seed):
    y, s = model_like_scores(np.random.default_rng(seed))
    exact, binned = score_metrics(y, s), binned_metrics(y, s)
    assert abs(exact["pr_auc"] - binned["pr_auc"]) <= 0.002
    assert abs(exact["roc_auc"] - binned["roc_auc"]) <= 0.0005
    # recall@1%FPR can only move at a bin edge: within a few frauds of the exact value.
    assert abs(exact["recall_at_1pct_fpr"] - binned["recall_at_1pct_fpr"]) <= 0.02


def test_scores_on_distinct_bins_give_exactly_the_sklearn_metrics():
    rng = np.random.default_rng(3)
    # One score per bin centre: no two rows share a bin, so binning loses nothing.
    edges = np.linspace(-16, 16, NUM_BINS + 1)
    logits = rng.permutation((edges[:-1] + edges[1:]) / 2)[:3000]
    s = 1 / (1 + np.exp(-logits))
    y = (rng.random(3000) < 0.2 * s).astype(int)
    exact, binned = score_metrics(y, s), binned_metrics(y, s)
    for key in METRICS:
        assert binned[key] == pytest.approx(exact[key], abs=1e-12)


def test_counts_of_banks_add_up_to_the_counts_of_their_union():
    rng = np.random.default_rng(5)
    parts = [model_like_scores(rng, 5000) for _ in range(3)]
    names = np.array(FRAUD_TYPOLOGIES)
    typs = [names[rng.integers(0, len(names), len(y))] for y, _ in parts]
    total = sum_counts([ScoreCounts.of(y, s, t) for (y, s), t in zip(parts, typs, strict=True)])
    union = binned_metrics(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate(typs),
    )
    assert pooled_metrics(total) == union
    assert union["n_rows"] == 15_000 and union["n_frauds"] == sum(int(p[0].sum()) for p in parts)


def test_typology_recall_uses_the_recall_at_1pct_fpr_threshold():
    rng = np.random.default_rng(9)
    y, s = model_like_scores(rng, 20_000)
    typ = np.where(rng.random(y.size) < 0.5, "mule_ring", "card_testing")
    m = binned_metrics(y, s, typ)
    caught = sum(m["typology_recall"][t] * m["typology_frauds"][t] for t in m["typology_frauds"])
    assert caught == pytest.approx(m["recall_at_1pct_fpr"] * m["n_frauds"])
    assert sum(m["typology_frauds"].values()) == m["n_frauds"]


def test_from_vector_rounds_aggregation_noise_to_whole_rows():
    y, s = model_like_scores(np.random.default_rng(1), 5000)
    counts = ScoreCounts.of(y, s)
    noisy = counts.to_vector() + np.random.default_rng(2).normal(0, 1e-3, ScoreCounts.vector_size())
    assert pooled_metrics(ScoreCounts.from_vector(noisy)) == pooled_metrics(counts)


def test_single_class_rows_have_undefined_metrics_but_counted_rows():
    m = binned_metrics(np.zeros(50), np.full(50, 0.2))
    assert all(math.isnan(m[k]) for k in METRICS)
    assert m["n_rows"] == 50 and m["n_frauds"] == 0


def test_flat_metrics_round_trip():
    y, s = model_like_scores(np.random.default_rng(4), 5000)
    m = binned_metrics(y, s, np.full(y.size, "structuring"))
    assert nested_metrics(flat_metrics(m)) == m
