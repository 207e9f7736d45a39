"""Cross-bank features as model inputs: the one place banks, the research analysis and the
centralized yardsticks add them, so every arm sees the same columns computed the same way.

A bank's rows get `FEATURES` (log1p of the receiver's activity at other banks in the windows
before the row's own, `sketch.cross_bank_features`) appended to its transaction features.

Scaling: the statistics stage (consortium moments) runs before the sketch stage, so these
columns are not in the secure moments. They need no moments: they are already log1p of counts
and log-amount sums (0 for an account no other bank paid, a few units for a busy mule), which
is the range the standardized columns live in, and a fixed transform is the same at every bank
and in every arm without another secure round. `cross_bank_scaler` gives them mean 0, std 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd

from fedfraud.crossbank.sketch import (
    FEATURES,
    STATS,
    SketchSpec,
    buckets,
    cross_bank_features,
    encode,
    exact_consortium,
    query,
)
from fedfraud.data.features import BankTable
from fedfraud.data.scaling import Scaler
from fedfraud.data.schema import has_accounts
from fedfraud.errors import DataError


def table_order(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` in the row order `build_bank_table` uses (stable sort by timestamp)."""
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def bank_sketch(frame: pd.DataFrame, key: bytes, spec: SketchSpec, bank: str = "") -> np.ndarray:
    """This bank's sketch over all its rows, flat (what it protects and sends)."""
    if not has_accounts(frame):
        raise DataError(
            f"{bank or 'this bank'}: cross-bank sketches need sender and receiver account ids, "
            "which this data lacks; map those columns or set cross-bank=off"
        )
    return encode(frame, key, spec).ravel()


def bank_features(
    frame: pd.DataFrame, consortium: np.ndarray, key: bytes, spec: SketchSpec
) -> np.ndarray:
    """(rows, len(FEATURES)) cross-bank features of `frame`'s rows in table order."""
    return cross_bank_features(table_order(frame), consortium.reshape(spec.shape), key, spec)


def with_features(table: BankTable, values: np.ndarray) -> BankTable:
    """`table` with the cross-bank columns appended (rows in the table's order)."""
    if values.shape != (len(table.y), len(FEATURES)):
        raise ValueError(f"cross-bank features {values.shape} do not fit {len(table.y)} rows")
    return dataclasses.replace(
        table,
        x=np.column_stack([table.x, values]).astype(np.float32),
        feature_names=(*table.feature_names, *FEATURES),
    )


def cross_bank_table(
    table: BankTable, frame: pd.DataFrame, consortium: np.ndarray, key: bytes, spec: SketchSpec
) -> BankTable:
    """The bank's table with its cross-bank columns (`frame`: the rows the table was built of)."""
    return with_features(table, bank_features(frame, consortium, key, spec))


def cross_bank_scaler(scaler: Scaler, table: BankTable) -> Scaler:
    """`scaler` for `table`: cross-bank columns get the fixed transform (mean 0, std 1),
    whether the scaler lacks them (consortium moments) or measured them (a yardstick's own)."""
    d = table.x.shape[1]
    mean = np.zeros(d, np.float32)
    std = np.ones(d, np.float32)
    k = min(d, scaler.mean.size)
    mean[:k], std[:k] = scaler.mean[:k], scaler.std[:k]
    fixed = [i for i, name in enumerate(table.feature_names) if name in FEATURES]
    mean[fixed], std[fixed] = 0.0, 1.0
    return dataclasses.replace(scaler, mean=mean, std=std)


def clear_consortium(frames: Mapping[str, pd.DataFrame], key: bytes, spec: SketchSpec):
    """The consortium sketch computed in the clear from every bank's rows (research side only):
    the sum the secure aggregation gives the banks."""
    return sum(bank_sketch(f, key, spec, name).reshape(spec.shape) for name, f in frames.items())


def sketch_error(
    frames: Mapping[str, pd.DataFrame], consortium: np.ndarray, key: bytes, spec: SketchSpec
) -> dict[str, float]:
    """Mean absolute error of the sketch against exact consortium counts, per statistic, over
    every (receiver, window) with activity (research side only: needs pooled rows)."""
    exact = exact_consortium(list(frames.values()), spec)
    accounts = np.array(sorted(exact))
    est = query(consortium.reshape(spec.shape), buckets(accounts, key, spec))
    truth = np.stack([exact[a] for a in accounts])
    active = truth[:, :, 0] > 0  # (accounts, windows) with at least one inflow
    err = np.abs(est - truth)[active]  # (cells, stats)
    return {s: float(err[:, i].mean()) for i, s in enumerate(STATS)}
