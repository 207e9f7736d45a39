"""Bank-local feature engineering: every value comes from the bank's own table, no labels used.

Features are raw (unscaled) here. Scaling uses consortium-wide moments that the banks compute
through secure aggregation (see `fedfraud.data.scaling`), so no bank's raw data is pooled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

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
    """One bank's transactions as model-ready arrays (features unscaled)."""

    name: str
    x: np.ndarray  # (n, d) float32 transaction features
    y: np.ndarray  # (n,) float32 labels
    split: np.ndarray  # (n,) int8: TRAIN / VAL / TEST
    feature_names: tuple[str, ...]
    typology: np.ndarray | None  # ground truth for analysis only
    src: np.ndarray | None  # (n,) int64 local sender node index (when accounts are known)
    dst: np.ndarray | None  # (n,) int64 local receiver node index
    node_x: np.ndarray | None  # (num_nodes, k) float32 account features
    node_feature_names: tuple[str, ...] = ()
    tx_id: np.ndarray | None = None  # (n,) the bank's transaction ids, row-aligned (not a feature)

    def mask(self, split: int) -> np.ndarray:
        """Boolean mask of the rows in `split`."""
        return self.split == split


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


def build_bank_table(
    df: pd.DataFrame, name: str, with_graph: bool = True, split_column: str | None = None
) -> BankTable:
    """Turn a validated canonical table into features, labels, splits and (optionally) a graph.

    The split is temporal unless `split_column` names a column holding TRAIN/VAL/TEST codes."""
    df = df.sort_values("timestamp", kind="stable").reset_index(drop=True)
    cols: dict[str, np.ndarray] = {}
    amount = df["amount"].to_numpy(np.float64)
    hours = df["timestamp"].to_numpy(np.float64)
    cols["log_amount"] = np.log1p(amount)
    cols["round_amount"] = (np.mod(amount, 100.0) == 0).astype(np.float64)
    cols["near_threshold"] = (
        (amount >= 0.9 * STRUCTURING_THRESHOLD) & (amount < STRUCTURING_THRESHOLD)
    ).astype(np.float64)
    cols["tiny_amount"] = (amount < 5.0).astype(np.float64)
    hod = np.mod(hours, 24.0) / 24.0 * 2 * np.pi
    cols["hour_sin"], cols["hour_cos"] = np.sin(hod), np.cos(hod)
    channel = df["channel"].to_numpy(np.int64)
    for i, ch in enumerate(CHANNELS):
        cols[f"channel_{ch}"] = (channel == i).astype(np.float64)
    mcc = df["mcc"].to_numpy(np.int64)
    for i, m in enumerate(MCC_BUCKETS):
        cols[f"mcc_{m}"] = (mcc == i).astype(np.float64)
    cols["device_new"] = df["device_new"].to_numpy(np.float64)
    cols["log_geo_km"] = np.log1p(df["geo_km"].to_numpy(np.float64))
    for c in extra_feature_columns(df.columns):
        # Signed log keeps heavy-tailed columns (balances, raw amounts) in a range where the
        # consortium's secure moment aggregation cannot overflow; it is monotonic.
        v = df[c].to_numpy(np.float64)
        cols[c] = np.sign(v) * np.log1p(np.abs(v))

    src = dst = node_x = None
    node_names: tuple[str, ...] = ()
    if has_accounts(df):
        cols.update(_account_features(df, amount, hours))
        if with_graph:
            src, dst, node_x, node_names = _account_graph(df, amount)

    feature_names = tuple(cols)
    x = np.column_stack([cols[k] for k in feature_names]).astype(np.float32)
    typology = df[TYPOLOGY].to_numpy(str) if TYPOLOGY in df.columns else None
    return BankTable(
        name=name,
        x=x,
        y=df[LABEL].to_numpy(np.float32),
        split=(df[split_column].to_numpy(np.int8) if split_column else temporal_split(hours)),
        feature_names=feature_names,
        typology=typology,
        src=src,
        dst=dst,
        node_x=node_x,
        node_feature_names=node_names,
        tx_id=df[TX_ID].to_numpy() if TX_ID in df.columns else None,
    )


def _account_features(
    df: pd.DataFrame, amount: np.ndarray, hours: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-transaction views of the sender's and receiver's behaviour inside this bank."""
    out: dict[str, np.ndarray] = {}
    sender = pd.factorize(df["sender"])[0]
    receiver = pd.factorize(df["receiver"])[0]
    s_count = np.bincount(sender)
    r_count = np.bincount(receiver)
    out["log_sender_tx"] = np.log1p(s_count[sender])
    out["log_receiver_tx"] = np.log1p(r_count[receiver])
    pairs = pd.DataFrame({"s": sender, "r": receiver})
    fan_in = pairs.drop_duplicates().groupby("r").size()
    fan_out = pairs.drop_duplicates().groupby("s").size()
    out["log_receiver_fan_in"] = np.log1p(fan_in.reindex(receiver).to_numpy(np.float64))
    out["log_sender_fan_out"] = np.log1p(fan_out.reindex(sender).to_numpy(np.float64))
    # Receivers that never send in this bank are external or merchant accounts.
    senders_set = pd.Index(df["sender"].unique())
    out["receiver_sends_here"] = df["receiver"].isin(senders_set).to_numpy(np.float64)
    # Sender's amount relative to their own median (account takeover, structuring).
    s_median = pd.Series(amount).groupby(sender).transform("median").to_numpy()
    out["log_amount_vs_sender_median"] = np.log1p(amount) - np.log1p(s_median)
    # Velocity: time since the sender's previous and until their next transaction (rows are
    # time-sorted, so a stable groupby diff is the per-account gap).
    t = pd.Series(hours)
    gap_prev = t.groupby(sender).diff().fillna(24 * 30).to_numpy()
    gap_next = (-t.groupby(sender).diff(-1)).fillna(24 * 30).to_numpy()
    out["log_gap_prev_h"] = np.log1p(np.clip(gap_prev, 0, None))
    out["log_gap_next_h"] = np.log1p(np.clip(gap_next, 0, None))
    r_gap_prev = t.groupby(receiver).diff().fillna(24 * 30).to_numpy()
    out["log_receiver_gap_prev_h"] = np.log1p(np.clip(r_gap_prev, 0, None))
    # Transactions by the same sender within the same hour bucket / day bucket.
    hour_bucket = np.floor(hours).astype(np.int64)
    day_bucket = np.floor(hours / 24).astype(np.int64)
    out["log_sender_tx_same_hour"] = np.log1p(
        pd.Series(sender).groupby([sender, hour_bucket]).transform("size").to_numpy()
    )
    out["log_sender_tx_same_day"] = np.log1p(
        pd.Series(sender).groupby([sender, day_bucket]).transform("size").to_numpy()
    )
    out["log_receiver_tx_same_day"] = np.log1p(
        pd.Series(receiver).groupby([receiver, day_bucket]).transform("size").to_numpy()
    )
    return out


def _account_graph(
    df: pd.DataFrame, amount: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Accounts are nodes, transactions are directed edges sender -> receiver."""
    codes, _ = pd.factorize(pd.concat([df["sender"], df["receiver"]], ignore_index=True))
    n = len(df)
    src, dst = codes[:n].astype(np.int64), codes[n:].astype(np.int64)
    num_nodes = int(codes.max()) + 1
    out_deg = np.bincount(src, minlength=num_nodes)
    in_deg = np.bincount(dst, minlength=num_nodes)
    out_amt = np.bincount(src, weights=amount, minlength=num_nodes)
    in_amt = np.bincount(dst, weights=amount, minlength=num_nodes)
    uniq = pd.DataFrame({"s": src, "d": dst}).drop_duplicates()
    uniq_in = np.bincount(uniq["d"].to_numpy(), minlength=num_nodes)
    uniq_out = np.bincount(uniq["s"].to_numpy(), minlength=num_nodes)
    features = {
        "log_out_degree": np.log1p(out_deg),
        "log_in_degree": np.log1p(in_deg),
        "log_out_amount": np.log1p(out_amt),
        "log_in_amount": np.log1p(in_amt),
        "log_distinct_in": np.log1p(uniq_in),
        "log_distinct_out": np.log1p(uniq_out),
        "is_customer": (out_deg > 0).astype(np.float64),
        "in_out_amount_ratio": np.log1p(in_amt) - np.log1p(out_amt),
    }
    names = tuple(features)
    node_x = np.column_stack([features[k] for k in names]).astype(np.float32)
    return src, dst, node_x, names
