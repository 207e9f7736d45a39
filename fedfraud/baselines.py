"""Research yardsticks for a federated run: each bank alone, and all data pooled.

Two pooled yardsticks, both for researchers only (pooling is what federation avoids):
* `centralized` pools the banks' raw rows into one table, so account features and the graph
  see across banks (a mule's fan-in from every bank) - the upper bound of pooling everything;
* `centralized_same_features` trains one model on the union of the banks' own feature rows
  (and the disjoint union of their graphs): the same information the federation has, so the
  gap to it is the cost of federated optimisation alone.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from fedfraud.config import RunConfig
from fedfraud.crossbank.features import cross_bank_scaler, with_features
from fedfraud.data.features import TEST, TRAIN, VAL, BankTable, build_bank_table, temporal_split
from fedfraud.data.scaling import Scaler, stats_update
from fedfraud.metrics import ScoreCounts, pooled_metrics, sum_counts
from fedfraud.train import build_model, make_inputs, predict, train_local


def selected_test_scores(
    config: RunConfig, table: BankTable
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Train from the shared initial model as the federation does (local-epochs per "round",
    up to num-rounds, early stopping on validation PR-AUC with the run's patience) and score
    the test rows with the selected round's model: (labels, scores, typologies, round)."""
    scaler = cross_bank_scaler(Scaler.from_moments(stats_update(table)), table)
    inputs = make_inputs(config.model, table, scaler)
    model = build_model(config, table, scaler.fraud_rate)
    best, best_round, best_state = -np.inf, 0, copy.deepcopy(model.state_dict())
    for rnd in range(1, config.num_rounds + 1):
        train_local(model, inputs, config, seed=config.seed * 1000 + rnd)
        y, scores = predict(model, inputs, VAL)
        value = pooled_metrics(ScoreCounts.of(y, scores))["pr_auc"]
        if np.isfinite(value) and value > best:
            best, best_round, best_state = value, rnd, copy.deepcopy(model.state_dict())
        elif config.patience and rnd - best_round >= config.patience:
            break
    if best_round == 0:  # validation never defined (no fraud there): keep the last epoch
        best_round, best_state = rnd, model.state_dict()
    model.load_state_dict(best_state)
    y, scores = predict(model, inputs, TEST)
    typology = table.typology[table.mask(TEST)] if table.typology is not None else None
    return y, scores, typology, best_round


def selected_test_counts(config: RunConfig, table: BankTable) -> tuple[ScoreCounts, int]:
    """`selected_test_scores` as per-bin counts (the protocol every arm is scored with)."""
    y, scores, typology, selected = selected_test_scores(config, table)
    return ScoreCounts.of(y, scores, typology), selected


def train_and_score(config: RunConfig, table: BankTable) -> dict[str, Any]:
    """One model's pooled test metrics (see `selected_test_counts`)."""
    counts, selected = selected_test_counts(config, table)
    return {"pooled": pooled_metrics(counts), "selected_round": selected}


def local_only(config: RunConfig, tables: Mapping[str, BankTable]) -> dict[str, Any]:
    """Each bank trains alone and scores its own test rows; `pooled` = metrics over the union
    of those rows (the federated model's protocol), `per_bank` = each bank's own."""
    counts, per_bank = {}, {}
    for name, t in tables.items():
        if t.y[t.mask(TRAIN)].sum() == 0:
            continue  # cannot train alone (the simulation refuses such banks up front)
        counts[name], selected = selected_test_counts(config, t)
        per_bank[name] = {**pooled_metrics(counts[name]), "selected_round": selected}
    return {
        "label": "each bank alone on its own rows",
        "pooled": pooled_metrics(sum_counts(list(counts.values()))),
        "per_bank": per_bank,
    }


def centralized(
    config: RunConfig,
    frames: Mapping[str, pd.DataFrame],
    cross: Mapping[str, np.ndarray] | None = None,
) -> dict:
    """One model on the pooled rows, keeping each row's bank-local train/val/test split so the
    test rows are exactly the union of the banks' test rows. `cross`: each bank's cross-bank
    columns (its table's row order), kept with their rows."""
    parts = []
    for frame in frames.values():
        frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
        parts.append(frame.assign(_split=temporal_split(frame["timestamp"].to_numpy())))
    pooled = pd.concat(parts, ignore_index=True)
    table = build_bank_table(pooled, "pooled", split_column="_split")
    if cross:  # build_bank_table's stable time sort of the concatenated rows
        order = np.argsort(pooled["timestamp"].to_numpy(), kind="stable")
        table = with_features(table, np.concatenate([cross[n] for n in frames])[order])
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
        node_x_eval=np.concatenate([t.node_x_eval for t in tables]) if has_graph else None,
    )
