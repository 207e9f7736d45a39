"""Research yardsticks for a federated run: each bank alone, and all data pooled.

Two pooled yardsticks, both for researchers only (pooling is what federation avoids):
* `centralized` pools the banks' raw rows into one table, so account features and the graph
  see across banks (a mule's fan-in from every bank) - the upper bound of pooling everything;
* `centralized_same_features` trains one model on the union of the banks' own feature rows
  (and the disjoint union of their graphs): the same information the federation has, so the
  gap to it is the cost of federated optimisation alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from fedfraud.config import RunConfig
from fedfraud.data.features import TEST, TRAIN, BankTable, build_bank_table, temporal_split
from fedfraud.data.scaling import Scaler, stats_update
from fedfraud.metrics import score_metrics, typology_recall, weighted_mean
from fedfraud.train import build_model, make_inputs, predict, train_local


def train_and_score(config: RunConfig, table: BankTable) -> dict:
    """Train from the shared initial model for the run's total epochs; score the test split."""
    scaler = Scaler.from_moments(stats_update(table))
    inputs = make_inputs(config.model, table, scaler)
    model = build_model(config, table, scaler.fraud_rate)
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


def centralized_same_features(config: RunConfig, tables: Mapping[str, BankTable]) -> dict:
    """One model on the union of the banks' bank-local feature rows and graphs."""
    result = train_and_score(config, union_of_tables(list(tables.values())))
    return {"label": "research yardstick: union of bank-local features, not private", **result}


def union_of_tables(tables: list[BankTable]) -> BankTable:
    """Stack bank tables; account graphs stay disjoint (node ids are offset per bank)."""
    has_graph = all(t.node_x is not None and t.src is not None for t in tables)
    offsets = np.cumsum([0] + [t.node_x.shape[0] for t in tables[:-1]]) if has_graph else None
    typologies = [t.typology for t in tables]
    return BankTable(
        name="union",
        x=np.concatenate([t.x for t in tables]),
        y=np.concatenate([t.y for t in tables]),
        split=np.concatenate([t.split for t in tables]),
        feature_names=tables[0].feature_names,
        typology=None if any(t is None for t in typologies) else np.concatenate(typologies),
        src=np.concatenate([t.src + o for t, o in zip(tables, offsets, strict=True)])
        if has_graph
        else None,
        dst=np.concatenate([t.dst + o for t, o in zip(tables, offsets, strict=True)])
        if has_graph
        else None,
        node_x=np.concatenate([t.node_x for t in tables]) if has_graph else None,
        node_feature_names=tables[0].node_feature_names,
    )
