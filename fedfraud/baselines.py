"""Research yardsticks for a federated run: each bank alone, and all data pooled.

`centralized` pools every bank's raw rows into one table. It is a yardstick for researchers
only: doing it for real is exactly what federation avoids.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from fedfraud.config import RunConfig
from fedfraud.data.features import TEST, TRAIN, BankTable, build_bank_table, temporal_split
from fedfraud.data.scaling import Scaler, local_moments
from fedfraud.metrics import score_metrics, typology_recall, weighted_mean
from fedfraud.train import build_model, make_inputs, predict, train_local


def train_and_score(config: RunConfig, table: BankTable) -> dict:
    """Train from the shared initial model for the run's total epochs; score the test split."""
    scaler = Scaler.from_moments(local_moments(table))
    inputs = make_inputs(config.model, table, scaler)
    model = build_model(config, table)
    train_local(
        model, inputs, config, epochs=config.num_rounds * config.local_epochs, seed=config.seed
    )
    y, scores = predict(model, inputs, TEST)
    result = {**score_metrics(y, scores), "n_test": int(len(y))}
    if table.typology is not None:
        result["typology_recall"] = typology_recall(y, scores, table.typology[table.mask(TEST)])
    return result


def local_only(config: RunConfig, tables: Mapping[str, BankTable]) -> dict:
    """Each bank trains alone on its own data."""
    per_bank = {
        name: train_and_score(config, t)
        for name, t in tables.items()
        if t.y[t.mask(TRAIN)].sum() > 0
    }
    weights = {b: float(r["n_test"]) for b, r in per_bank.items()}
    mean = weighted_mean(per_bank, weights)
    return {
        "mean_pr_auc": mean["pr_auc"],
        "mean": mean,
        "per_bank": per_bank,
    }


def centralized(config: RunConfig, frames: Mapping[str, pd.DataFrame]) -> dict:
    """One model on the pooled rows, keeping each row's bank-local train/val/test split so the
    test rows are exactly the union of the banks' test rows."""
    parts = []
    for frame in frames.values():
        frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
        parts.append(frame.assign(_split=temporal_split(frame["timestamp"].to_numpy())))
    pooled = pd.concat(parts, ignore_index=True)
    table = build_bank_table(pooled, "pooled", split_column="_split")
    result = train_and_score(config, table)
    return {"label": "research yardstick: pooled raw data, not private", **result}
