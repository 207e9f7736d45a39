"""Bank-local features of one new transaction from the bank's history, in microseconds.

`build_bank_table` computes account features over a whole table with pandas (tens of ms for a
bank). Scoring one transaction needs only the accounts it touches, so `AccountHistory` keeps a
small running state per account and updates it as each transaction arrives. Contract (tested
row by row, bit for bit, in tests/data/test_point_in_time.py): replaying a bank's table in its
time order through `observe` gives every row exactly the features `build_bank_table` gives it,
because every batch feature is point in time (see fedfraud.data.history for the order and the
same-timestamp rule: a transaction sees itself and every earlier one).

Two consequences to know:
* every observed transaction joins the in-memory history (the next one from the same sender sees
  it in its velocity features); the bank's file on disk is not changed;
* a transaction older than the newest one observed is counted against the state as it is (its
  gaps clipped at 0): batch and live agree for transactions that arrive in time order.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedfraud.data.features import transaction_features
from fedfraud.data.history import ACCOUNT_FEATURES, NO_GAP_H, NODE_FEATURES, WINDOWS_H
from fedfraud.data.schema import OPTIONAL_DEFAULTS, check_value
from fedfraud.errors import DataError


@dataclass
class Transaction:
    """One parsed, validated transaction (canonical schema)."""

    amount: float
    timestamp: float
    channel: int
    mcc: int
    device_new: float
    geo_km: float
    sender: str | None
    receiver: str | None
    extra: dict[str, float]


def account_key(value: Any) -> str:
    """Account ids compare as text, so 42, 42.0 and "42" are one account."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _number(record: Mapping[str, Any], key: str, where: str) -> float | None:
    value = record.get(key)
    if _missing(value):
        return None
    if isinstance(value, bool):  # JSON true is not an amount (float(True) would read 1.0)
        raise DataError(f"{where}: '{key}' must be a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: '{key}' must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise DataError(f"{where}: '{key}' must be finite, got {value!r}")
    return out


def parse_transaction(
    record: Mapping[str, Any], where: str, accounts: bool, extras: Sequence[str]
) -> Transaction:
    """Validate one record the way `validate_transactions` validates a table; DataError if bad."""
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: expected a JSON object with amount, timestamp, ...")
    amount = _number(record, "amount", where)
    timestamp = _number(record, "timestamp", where)
    for key, value in (("amount", amount), ("timestamp", timestamp)):
        if value is None:
            raise DataError(f"{where}: missing '{key}'; every transaction needs amount, timestamp")
    if amount < 0:
        raise DataError(f"{where}: 'amount' is negative; use absolute amounts")
    opt = {}
    for key, default in OPTIONAL_DEFAULTS.items():
        value = _number(record, key, where)
        opt[key] = float(default) if value is None else value
    for key, value in (("amount", amount), ("timestamp", timestamp), *opt.items()):
        problem = check_value(key, value)
        if problem:  # out of range is an error, never clipped and scored
            raise DataError(f"{where}: {problem}")
    sender = receiver = None
    if accounts:
        ids = {k: record.get(k) for k in ("sender", "receiver")}
        absent = [k for k, v in ids.items() if _missing(v) or v == ""]
        if absent:
            raise DataError(
                f"{where}: missing {' and '.join(absent)} account id(s); this model uses "
                "account features, so every transaction needs sender and receiver"
            )
        sender, receiver = account_key(ids["sender"]), account_key(ids["receiver"])
    extra = {}
    for key in extras:
        value = _number(record, key, where)
        if value is None:
            raise DataError(f"{where}: missing '{key}', a feature this model was trained on")
        extra[key] = value
    return Transaction(
        amount=amount,
        timestamp=timestamp,
        channel=int(opt["channel"]),
        mcc=int(opt["mcc"]),
        device_new=float(opt["device_new"] > 0),
        geo_km=opt["geo_km"],
        sender=sender,
        receiver=receiver,
        extra=extra,
    )


def stateless_features(tx: Transaction) -> dict[str, float]:
    """Features that need no history: `transaction_features` on a one-row table."""

    def one(v: float) -> np.ndarray:
        return np.array([v], dtype=np.float64)

    cols = transaction_features(
        one(tx.amount),
        one(tx.timestamp),
        np.array([tx.channel], dtype=np.int64),
        np.array([tx.mcc], dtype=np.int64),
        one(tx.device_new),
        one(tx.geo_km),
        {k: one(v) for k, v in tx.extra.items()},
    )
    return {k: float(v[0]) for k, v in cols.items()}


class _Account:
    """What the bank has seen of one account, as sender and as receiver."""

    __slots__ = (
        *("sent", "log_sum", "out_amount", "s_last", "s_times"),
        *("received", "in_amount", "r_last", "r_times"),
    )

    def __init__(self) -> None:
        self.sent, self.log_sum, self.out_amount = 0, 0.0, 0.0
        self.s_last: float | None = None
        self.s_times: list[float] = []
        self.received, self.in_amount = 0, 0.0
        self.r_last: float | None = None
        self.r_times: list[float] = []


def _in_window(times: list[float], t: float, width: float) -> int:
    """How many of `times` lie in (t - width, t]."""
    return bisect_right(times, t) - bisect_right(times, t - width)


def _gap(last: float | None, t: float) -> float:
    return NO_GAP_H if last is None else max(t - last, 0.0)


class AccountHistory:
    """Running per-account state of one bank; `observe` adds a transaction and returns its
    account features (and the new node statistics the GNN reads)."""

    def __init__(self) -> None:
        self.state: dict[str, _Account] = {}
        self.out_pairs: dict[str, set[str]] = {}  # sender -> distinct receivers
        self.in_pairs: dict[str, set[str]] = {}  # receiver -> distinct senders
        self.size = 0

    def _account(self, key: str) -> _Account:
        a = self.state.get(key)
        if a is None:
            a = self.state[key] = _Account()
        return a

    def observe(self, s_key: str, r_key: str, t: float, amount: float) -> dict[str, float]:
        """Add a transaction (the newest one) and return its account features.

        Every step mirrors `fedfraud.data.history.account_features` operation for operation
        (same float64 additions in the same order, numpy's log1p), so values are identical."""
        s, r = self._account(s_key), self._account(r_key)
        log_amount = float(np.log1p(np.array([amount], dtype=np.float64))[0])
        vs_mean = log_amount - s.log_sum / s.sent if s.sent else 0.0
        gap, r_gap = _gap(s.s_last, t), _gap(r.r_last, t)
        s.sent += 1
        s.log_sum += log_amount
        s.out_amount += amount
        s.s_last = t if s.s_last is None else max(s.s_last, t)
        insort(s.s_times, t)
        r.received += 1
        r.in_amount += amount
        r.r_last = t if r.r_last is None else max(r.r_last, t)
        insort(r.r_times, t)
        self.out_pairs.setdefault(s_key, set()).add(r_key)
        self.in_pairs.setdefault(r_key, set()).add(s_key)
        self.size += 1
        raw = {
            "log_sender_tx": s.sent,
            "log_receiver_tx": r.received,
            "log_receiver_fan_in": len(self.in_pairs[r_key]),
            "log_sender_fan_out": len(self.out_pairs[s_key]),
            "log_gap_prev_h": gap,
            "log_receiver_gap_prev_h": r_gap,
            "log_sender_tx_1h": _in_window(s.s_times, t, WINDOWS_H["1h"]),
            "log_sender_tx_24h": _in_window(s.s_times, t, WINDOWS_H["24h"]),
            "log_receiver_tx_24h": _in_window(r.r_times, t, WINDOWS_H["24h"]),
        }
        logs = np.log1p(np.array(list(raw.values()), dtype=np.float64)).tolist()
        out = dict(zip(raw, logs, strict=True))
        out["receiver_sends_here"] = float(r.sent > 0)
        out["log_amount_vs_sender_mean"] = vs_mean
        return {k: out[k] for k in ACCOUNT_FEATURES}

    def node_features(self, key: str) -> dict[str, float]:
        """Account (node) features of `fedfraud.data.history.node_features` for one account,
        over everything observed so far."""
        a = self.state.get(key) or _Account()
        raw = np.array(
            [
                a.sent,
                a.received,
                a.out_amount,
                a.in_amount,
                len(self.in_pairs.get(key, ())),
                len(self.out_pairs.get(key, ())),
            ],
            dtype=np.float64,
        )
        out_deg, in_deg, out_amt, in_amt, d_in, d_out = np.log1p(raw).tolist()
        values = {
            "log_out_degree": out_deg,
            "log_in_degree": in_deg,
            "log_out_amount": out_amt,
            "log_in_amount": in_amt,
            "log_distinct_in": d_in,
            "log_distinct_out": d_out,
            "is_customer": float(a.sent > 0),
            "in_out_amount_ratio": in_amt - out_amt,
        }
        return {k: values[k] for k in NODE_FEATURES}

    def accounts(self) -> list[str]:
        """Every account seen as sender or receiver, in order of first appearance."""
        return list(self.state)


def history_records(frame: Any) -> list[dict[str, Any]]:
    """A validated bank table as records in the order `build_bank_table` uses (stable by time)."""
    frame = frame.sort_values("timestamp", kind="stable")
    return frame.to_dict("records")


def ordered(values: Mapping[str, float], names: Sequence[str], what: str) -> np.ndarray:
    """`values` as a float32 vector in the model's feature order; DataError if a name is absent."""
    try:
        return np.fromiter((values[n] for n in names), dtype=np.float32, count=len(names))
    except KeyError as exc:
        raise DataError(
            f"the model expects {what} '{exc.args[0]}', which this bank's data does not give; "
            "score with data in the same schema the consortium trained on"
        ) from None
