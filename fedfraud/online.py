"""Bank-local features of one new transaction from the bank's history, in microseconds.

`build_bank_table` computes account features over a whole table with pandas (tens of ms for a
bank). Scoring one transaction needs only the accounts it touches, so `AccountHistory` keeps a
small running state per account and updates it as each transaction arrives. Contract (tested
against `build_bank_table`): the features of a transaction observed here equal the features
`build_bank_table(history + [transaction])` gives that transaction's row when it is the latest.

Two consequences to know:
* every observed transaction joins the in-memory history (the next one from the same sender sees
  it in its velocity features); the bank's file on disk is not changed;
* `log_gap_next_h` looks ahead (time to the sender's *next* transaction) in the training table;
  a transaction scored live has no next yet, so it gets the table's fill value (720 h), exactly
  as the newest rows of a training table do. A transaction older than the history is scored as
  if it were the latest (gaps clipped at 0).
"""

from __future__ import annotations

import math
from bisect import insort
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedfraud.data.features import STRUCTURING_THRESHOLD
from fedfraud.data.schema import CHANNELS, MCC_BUCKETS, OPTIONAL_DEFAULTS, check_value
from fedfraud.errors import DataError

NO_GAP_H = 24.0 * 30  # the fill value build_bank_table uses for "no previous/next transaction"
ACCOUNT_FEATURES = (
    "log_sender_tx",
    "log_receiver_tx",
    "log_receiver_fan_in",
    "log_sender_fan_out",
    "receiver_sends_here",
    "log_amount_vs_sender_median",
    "log_gap_prev_h",
    "log_gap_next_h",
    "log_receiver_gap_prev_h",
    "log_sender_tx_same_hour",
    "log_sender_tx_same_day",
    "log_receiver_tx_same_day",
)


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
    """Features that need no history (mirrors the first half of `build_bank_table`)."""
    amount = tx.amount
    hod = math.fmod(tx.timestamp, 24.0)
    hod = (hod + 24.0 if hod < 0 else hod) / 24.0 * 2 * math.pi
    out = {
        "log_amount": math.log1p(amount),
        "round_amount": float(math.fmod(amount, 100.0) == 0),
        "near_threshold": float(0.9 * STRUCTURING_THRESHOLD <= amount < STRUCTURING_THRESHOLD),
        "tiny_amount": float(amount < 5.0),
        "hour_sin": math.sin(hod),
        "hour_cos": math.cos(hod),
    }
    for i, ch in enumerate(CHANNELS):
        out[f"channel_{ch}"] = float(tx.channel == i)
    for i, m in enumerate(MCC_BUCKETS):
        out[f"mcc_{m}"] = float(tx.mcc == i)
    out["device_new"] = tx.device_new
    out["log_geo_km"] = math.log1p(tx.geo_km)
    for key, v in tx.extra.items():
        out[key] = math.copysign(math.log1p(abs(v)), v) if v else 0.0
    return out


class _Sender:
    __slots__ = ("count", "amounts", "amount_sum", "last_t", "hour", "hour_n", "day", "day_n")

    def __init__(self) -> None:
        self.count, self.amounts, self.amount_sum = 0, [], 0.0
        self.last_t, self.hour, self.hour_n, self.day, self.day_n = None, None, 0, None, 0


class _Receiver:
    __slots__ = ("count", "amount_sum", "last_t", "day", "day_n")

    def __init__(self) -> None:
        self.count, self.amount_sum, self.last_t, self.day, self.day_n = 0, 0.0, None, None, 0


def _bucket(last: int | None, count: int, bucket: int) -> tuple[int | None, int, int]:
    """(latest bucket, its count, this transaction's count) after a transaction in `bucket`;
    a transaction older than the latest bucket counts 1 and leaves the state as it was."""
    if last is None or bucket > last:
        return bucket, 1, 1
    if bucket == last:
        return last, count + 1, count + 1
    return last, count, 1


class AccountHistory:
    """Running per-account state of one bank; `observe` adds a transaction and returns its
    account features (and the new node statistics the GNN reads)."""

    def __init__(self) -> None:
        self.senders: dict[str, _Sender] = {}
        self.receivers: dict[str, _Receiver] = {}
        self.out_pairs: dict[str, set[str]] = {}  # sender -> distinct receivers
        self.in_pairs: dict[str, set[str]] = {}  # receiver -> distinct senders
        self.size = 0

    def observe(self, s_key: str, r_key: str, t: float, amount: float) -> dict[str, float]:
        """Add a transaction (the newest one) and return its account features."""
        s = self.senders.get(s_key) or self.senders.setdefault(s_key, _Sender())
        r = self.receivers.get(r_key) or self.receivers.setdefault(r_key, _Receiver())
        hour, day = math.floor(t), math.floor(t / 24)
        gap_prev = NO_GAP_H if s.last_t is None else max(t - s.last_t, 0.0)
        r_gap_prev = NO_GAP_H if r.last_t is None else max(t - r.last_t, 0.0)
        s.count += 1
        insort(s.amounts, amount)
        s.amount_sum += amount
        s.last_t = t if s.last_t is None else max(s.last_t, t)
        s.hour, s.hour_n, hour_n = _bucket(s.hour, s.hour_n, hour)
        s.day, s.day_n, day_n = _bucket(s.day, s.day_n, day)
        r.count += 1
        r.amount_sum += amount
        r.last_t = t if r.last_t is None else max(r.last_t, t)
        r.day, r.day_n, r_day_n = _bucket(r.day, r.day_n, day)
        self.out_pairs.setdefault(s_key, set()).add(r_key)
        self.in_pairs.setdefault(r_key, set()).add(s_key)
        self.size += 1
        n, a = s.count, s.amounts
        median = a[n // 2] if n % 2 else (a[n // 2 - 1] + a[n // 2]) / 2
        return {
            "log_sender_tx": math.log1p(s.count),
            "log_receiver_tx": math.log1p(r.count),
            "log_receiver_fan_in": math.log1p(len(self.in_pairs[r_key])),
            "log_sender_fan_out": math.log1p(len(self.out_pairs[s_key])),
            "receiver_sends_here": float(r_key in self.senders),
            "log_amount_vs_sender_median": math.log1p(amount) - math.log1p(median),
            "log_gap_prev_h": math.log1p(gap_prev),
            "log_gap_next_h": math.log1p(NO_GAP_H),
            "log_receiver_gap_prev_h": math.log1p(r_gap_prev),
            "log_sender_tx_same_hour": math.log1p(hour_n),
            "log_sender_tx_same_day": math.log1p(day_n),
            "log_receiver_tx_same_day": math.log1p(r_day_n),
        }

    def node_features(self, key: str) -> dict[str, float]:
        """Account (node) features of `_account_graph` for one account, from the state."""
        s, r = self.senders.get(key), self.receivers.get(key)
        out_deg, out_amt = (s.count, s.amount_sum) if s else (0, 0.0)
        in_deg, in_amt = (r.count, r.amount_sum) if r else (0, 0.0)
        return {
            "log_out_degree": math.log1p(out_deg),
            "log_in_degree": math.log1p(in_deg),
            "log_out_amount": math.log1p(out_amt),
            "log_in_amount": math.log1p(in_amt),
            "log_distinct_in": math.log1p(len(self.in_pairs.get(key, ()))),
            "log_distinct_out": math.log1p(len(self.out_pairs.get(key, ()))),
            "is_customer": float(out_deg > 0),
            "in_out_amount_ratio": math.log1p(in_amt) - math.log1p(out_amt),
        }

    def accounts(self) -> list[str]:
        """Every account seen as sender or receiver."""
        return list(dict.fromkeys([*self.senders, *self.receivers]))


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
