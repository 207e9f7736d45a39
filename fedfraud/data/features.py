"""Bank-local feature engineering: every value comes from the bank's own table, no labels used,
and every feature of a transaction only from the bank's transactions up to it (point in time,
see `fedfraud.data.history` for the order and the same-timestamp rule).

Features are raw (unscaled) here. Scaling uses consortium-wide moments that the banks compute
through secure aggregation (see `fedfraud.data.scaling`), so no bank's raw data is pooled.

The GNN's account graph is a snapshot per split (inductive in time): training and validation
rows are scored on the graph of the training rows, test rows on the graph of the training and
validation rows; no split's graph holds an edge of a later split (`graph_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedfraud.data.history import (
    NODE_FEATURES,
    account_codes,
    account_features,
    node_features,
)
from fedfraud.data.schema import (
    CHANNELS,
    LABEL,
    MCC_BUCKETS,
    TX_ID,
    TYPOLOGY,
    extra_feature_columns,
    has_accounts,
)

STRUCTURING_THRESHOLD = 10_000.0
SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST = 0, 1, 2


@dataclass(frozen=True)
class BankTable:
    """One bank's transactions as model-ready arrays (features unscaled, rows time-sorted)."""

    name: str
    x: np.ndarray  # (n, d) float32 transaction features
    y: np.ndarray  # (n,) float32 labels
    split: np.ndarray  # (n,) int8: TRAIN / VAL / TEST
    feature_names: tuple[str, ...]
    typology: np.ndarray | None  # ground truth for analysis only
    src: np.ndarray | None  # (n,) int64 local sender node index (when accounts are known)
    dst: np.ndarray | None  # (n,) int64 local receiver node index
    node_x: np.ndarray | None  # (num_nodes, k) float32 account features over the TRAIN rows
    node_feature_names: tuple[str, ...] = ()
    # (num_nodes, k) account features over the TRAIN and VAL rows: the graph TEST rows see.
    node_x_eval: np.ndarray | None = None
    tx_id: np.ndarray | None = None  # (n,) the bank's transaction ids, row-aligned (not a feature)

    def mask(self, split: int) -> np.ndarray:
        """Boolean mask of the rows in `split`."""
        return self.split == split


def graph_rows(split: np.ndarray, scored: int) -> np.ndarray:
    """Rows whose edges make the graph that rows of split `scored` are scored with: the training
    period's graph for TRAIN and VAL rows, the graph up to the end of VAL for TEST rows."""
    return split == TRAIN if scored in (TRAIN, VAL) else split <= VAL


def temporal_split(
    timestamp: np.ndarray, val_frac: float = 0.1, test_frac: float = 0.2
) -> np.ndarray:
    """Train on the past, test on the future: the last `test_frac` of rows by time are test."""
    n = len(timestamp)
    order = np.argsort(timestamp, kind="stable")
    split = np.full(n, TRAIN, dtype=np.int8)
    n_test = int(round(n * test_frac))
    n_val = int(round(n * val_frac))
    split[order[n - n_test :]] = TEST
    split[order[n - n_test - n_val : n - n_test]] = VAL
    return split


def transaction_features(
    amount: np.ndarray,
    hours: np.ndarray,
    channel: np.ndarray,
    mcc: np.ndarray,
    device_new: np.ndarray,
    geo_km: np.ndarray,
    extras: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Features of each transaction by itself (no history); the live scorer calls this on
    one-row arrays, so batch and live values are computed by the same numpy code."""
    cols: dict[str, np.ndarray] = {}
    cols["log_amount"] = np.log1p(amount)
    cols["round_amount"] = (np.mod(amount, 100.0) == 0).astype(np.float64)
    cols["near_threshold"] = (
        (amount >= 0.9 * STRUCTURING_THRESHOLD) & (amount < STRUCTURING_THRESHOLD)
    ).astype(np.float64)
    cols["tiny_amount"] = (amount < 5.0).astype(np.float64)
    hod = np.mod(hours, 24.0) / 24.0 * 2 * np.pi
    cols["hour_sin"], cols["hour_cos"] = np.sin(hod), np.cos(hod)
    for i, ch in enumerate(CHANNELS):
        cols[f"channel_{ch}"] = (channel == i).astype(np.float64)
    for i, m in enumerate(MCC_BUCKETS):
        cols[f"mcc_{m}"] = (mcc == i).astype(np.float64)
    cols["device_new"] = device_new.astype(np.float64)
    cols["log_geo_km"] = np.log1p(geo_km)
    for c, v in extras.items():
        # Signed log keeps heavy-tailed columns (balances, raw amounts) in a range where the
        # consortium's secure moment aggregation cannot overflow; it is monotonic.
        cols[c] = np.sign(v) * np.log1p(np.abs(v))
    return cols


def build_bank_table(
    df: pd.DataFrame, name: str, with_graph: bool = True, split_column: str | None = None
) -> BankTable:
    """Turn a validated canonical table into features, labels, splits and (optionally) a graph.

    The split is temporal unless `split_column` names a column holding TRAIN/VAL/TEST codes."""
    df = df.sort_values("timestamp", kind="stable").reset_index(drop=True)
    amount = df["amount"].to_numpy(np.float64)
    hours = df["timestamp"].to_numpy(np.float64)
    cols = transaction_features(
        amount,
        hours,
        df["channel"].to_numpy(np.int64),
        df["mcc"].to_numpy(np.int64),
        df["device_new"].to_numpy(np.float64),
        df["geo_km"].to_numpy(np.float64),
        {c: df[c].to_numpy(np.float64) for c in extra_feature_columns(df.columns)},
    )
    split = df[split_column].to_numpy(np.int8) if split_column else temporal_split(hours)

    src = dst = node_x = node_x_eval = None
    node_names: tuple[str, ...] = ()
    if has_accounts(df):
        sender, receiver, num_nodes = account_codes(df["sender"], df["receiver"])
        cols.update(account_features(sender, receiver, amount, hours))
        if with_graph:
            # Accounts are nodes, transactions directed edges sender -> receiver.
            src, dst, node_names = sender, receiver, NODE_FEATURES
            node_x = node_features(src, dst, amount, num_nodes, graph_rows(split, TRAIN))
            node_x_eval = node_features(src, dst, amount, num_nodes, graph_rows(split, TEST))

    feature_names = tuple(cols)
    x = np.column_stack([cols[k] for k in feature_names]).astype(np.float32)
    typology = df[TYPOLOGY].to_numpy(str) if TYPOLOGY in df.columns else None
    return BankTable(
        name=name,
        x=x,
        y=df[LABEL].to_numpy(np.float32),
        split=split,
        feature_names=feature_names,
        typology=typology,
        src=src,
        dst=dst,
        node_x=node_x,
        node_feature_names=node_names,
        node_x_eval=node_x_eval,
        tx_id=df[TX_ID].to_numpy() if TX_ID in df.columns else None,
    )
