"""Point-in-time account features: a row's values come only from the bank's rows up to it.

Order and same-timestamp rule: rows are in the bank's time order (timestamp; equal timestamps
keep their file order, `build_bank_table` sorts stably). The history of row i is rows 0..i of
that order: the transaction itself and every earlier one, *including earlier rows with the same
timestamp*; no later row ever contributes. `fedfraud.online.AccountHistory` replays transactions
in that order and gives bit-identical values (tests/data/test_point_in_time.py).

Everything is vectorized (groupby cumcount/diff, searchsorted over per-account sorted keys); the
one sequential sum (expanding mean of log amounts) runs one numpy step per *rank* within an
account, not per row, so that its float64 additions happen in the same order as the live state's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NO_GAP_H = 24.0 * 30  # gap (hours) of an account's first transaction: "no previous one"
WINDOWS_H = {"1h": 1.0, "24h": 24.0}  # sliding windows (t - w, t] for velocity counts

ACCOUNT_FEATURES: tuple[str, ...] = (
    "log_sender_tx",
    "log_receiver_tx",
    "log_receiver_fan_in",
    "log_sender_fan_out",
    "receiver_sends_here",
    "log_amount_vs_sender_mean",
    "log_gap_prev_h",
    "log_receiver_gap_prev_h",
    "log_sender_tx_1h",
    "log_sender_tx_24h",
    "log_receiver_tx_24h",
)
NODE_FEATURES: tuple[str, ...] = (
    "log_out_degree",
    "log_in_degree",
    "log_out_amount",
    "log_in_amount",
    "log_distinct_in",
    "log_distinct_out",
    "is_customer",
    "in_out_amount_ratio",
)


def account_codes(sender: pd.Series, receiver: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """Sender and receiver as indices into one account vocabulary (an account can be both)."""
    codes, uniques = pd.factorize(pd.concat([sender, receiver], ignore_index=True))
    n = len(sender)
    return codes[:n].astype(np.int64), codes[n:].astype(np.int64), len(uniques)


def account_features(
    sender: np.ndarray, receiver: np.ndarray, amount: np.ndarray, hours: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-transaction views of the sender's and receiver's past in this bank (rows time-sorted;
    `sender`/`receiver` are codes from `account_codes`)."""
    n = len(sender)
    row = np.arange(n)
    s_rank = _rank(sender)
    r_rank = _rank(receiver)
    new_pair = ~pd.DataFrame({"s": sender, "r": receiver}).duplicated().to_numpy()
    fan_out = pd.Series(new_pair.astype(np.int64)).groupby(sender).cumsum().to_numpy()
    fan_in = pd.Series(new_pair.astype(np.int64)).groupby(receiver).cumsum().to_numpy()
    # The receiver sends here if it has sent at or before this row (a self-transfer counts).
    first_send = np.full(int(max(sender.max(), receiver.max())) + 1, n, dtype=np.int64)
    senders, first = np.unique(sender, return_index=True)
    first_send[senders] = first
    log_amount = np.log1p(amount)
    prior = _exclusive_group_sum(sender, s_rank, log_amount)
    vs_mean = np.where(s_rank > 0, log_amount - prior / np.maximum(s_rank, 1), 0.0)
    t = pd.Series(hours)
    gap = t.groupby(sender).diff().fillna(NO_GAP_H).to_numpy()
    r_gap = t.groupby(receiver).diff().fillna(NO_GAP_H).to_numpy()
    return {
        "log_sender_tx": np.log1p((s_rank + 1).astype(np.float64)),
        "log_receiver_tx": np.log1p((r_rank + 1).astype(np.float64)),
        "log_receiver_fan_in": np.log1p(fan_in.astype(np.float64)),
        "log_sender_fan_out": np.log1p(fan_out.astype(np.float64)),
        "receiver_sends_here": (first_send[receiver] <= row).astype(np.float64),
        "log_amount_vs_sender_mean": vs_mean,
        "log_gap_prev_h": np.log1p(gap),
        "log_receiver_gap_prev_h": np.log1p(r_gap),
        "log_sender_tx_1h": np.log1p(window_count(sender, hours, WINDOWS_H["1h"])),
        "log_sender_tx_24h": np.log1p(window_count(sender, hours, WINDOWS_H["24h"])),
        "log_receiver_tx_24h": np.log1p(window_count(receiver, hours, WINDOWS_H["24h"])),
    }


def window_count(codes: np.ndarray, hours: np.ndarray, width: float) -> np.ndarray:
    """For each row i: rows j <= i of the same account with hours[j] > hours[i] - width.

    Times become exact ranks, so (account, rank) is an exact int64 key, sorted within each
    account because rows are time-sorted; one searchsorted finds each window's first row."""
    n = len(codes)
    order = np.lexsort((np.arange(n), codes))  # by account, then row (= time) order
    times = np.unique(hours)
    rank = np.searchsorted(times, hours)
    below = np.searchsorted(times, hours - width, side="right")  # ranks <= hours - width
    m = np.int64(len(times) + 1)
    key = codes[order] * m + rank[order]
    first = np.searchsorted(key, codes[order] * m + below[order], side="left")
    out = np.empty(n, dtype=np.float64)
    out[order] = np.arange(n) - first + 1
    return out


def _rank(codes: np.ndarray) -> np.ndarray:
    """0 for an account's first row, 1 for its second, ... (rows in time order)."""
    return pd.Series(codes).groupby(codes).cumcount().to_numpy(np.int64)


def _exclusive_group_sum(codes: np.ndarray, rank: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sum of `values` over each account's earlier rows, added in time order.

    pandas' groupby cumsum uses compensated summation, which the live state cannot mirror
    cheaply; one vectorized step per rank adds the k-th value of every account at once, in the
    same order (and so with the same float64 result) as a running sum."""
    out = np.empty(len(codes), dtype=np.float64)
    acc = np.zeros(int(codes.max()) + 1, dtype=np.float64)
    order = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[order], np.arange(int(rank.max()) + 2))
    for k in range(len(bounds) - 1):
        rows = order[bounds[k] : bounds[k + 1]]
        out[rows] = acc[codes[rows]]
        acc[codes[rows]] += values[rows]
    return out


def node_features(
    src: np.ndarray, dst: np.ndarray, amount: np.ndarray, num_nodes: int, rows: np.ndarray
) -> np.ndarray:
    """Account (node) features over the transactions `rows` (bool mask) only: the graph's state
    at the end of those rows. Accounts without a transaction in `rows` get all zeros."""
    s, d, a = src[rows], dst[rows], amount[rows]
    out_deg = np.bincount(s, minlength=num_nodes)
    in_deg = np.bincount(d, minlength=num_nodes)
    out_amt = np.bincount(s, weights=a, minlength=num_nodes)
    in_amt = np.bincount(d, weights=a, minlength=num_nodes)
    uniq = pd.DataFrame({"s": s, "d": d}).drop_duplicates()
    uniq_in = np.bincount(uniq["d"].to_numpy(), minlength=num_nodes)
    uniq_out = np.bincount(uniq["s"].to_numpy(), minlength=num_nodes)
    columns = {
        "log_out_degree": np.log1p(out_deg.astype(np.float64)),
        "log_in_degree": np.log1p(in_deg.astype(np.float64)),
        "log_out_amount": np.log1p(out_amt),
        "log_in_amount": np.log1p(in_amt),
        "log_distinct_in": np.log1p(uniq_in.astype(np.float64)),
        "log_distinct_out": np.log1p(uniq_out.astype(np.float64)),
        "is_customer": (out_deg > 0).astype(np.float64),
        "in_out_amount_ratio": np.log1p(in_amt) - np.log1p(out_amt),
    }
    return np.column_stack([columns[k] for k in NODE_FEATURES]).astype(np.float32)
