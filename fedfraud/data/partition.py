"""Split one transaction table into N banks (IID or Dirichlet non-IID) for simulations.

Unit of assignment: when the table names accounts, whole *sender accounts* go to one bank (a
customer banks in one place, so each bank's graph stays coherent); otherwise single rows. A unit
is a "fraud unit" when it holds at least one fraud row.

What is drawn, with `rng = numpy.random.default_rng(seed)`:
1. fraud units and legit units are each shuffled (`rng.permutation`);
2. `dirichlet`: q_fraud ~ Dir(alpha * 1_N), then q_legit ~ Dir(alpha * 1_N), independently —
   the per-class Dirichlet recipe of Hsu et al. (2019). Independent class proportions give label
   skew (bank fraud rates differ) and the legit draw, which holds most rows, gives size skew.
   Small alpha -> very uneven banks; large alpha -> close to IID. `iid`: q_fraud = q_legit = 1/N.
3. the first N shuffled fraud units go one to each bank, so every bank has a fraud row;
4. the remaining fraud units are cut, in shuffled order, into consecutive runs whose row counts
   follow q_fraud; the legit units likewise follow q_legit mixed with a small floor,
   q = f + (1 - N f) q_legit with f = min(1/N, (min_rows + largest legit unit) / legit_rows),
   so no bank is left below `min_rows` by the draw alone.
The result depends only on (table contents, num_banks, scheme, alpha, seed).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedfraud.data.loaders import load_table
from fedfraud.data.schema import LABEL, has_accounts
from fedfraud.data.store import bank_name, remove_stale_banks, write_banks
from fedfraud.errors import DataError

log = logging.getLogger(__name__)

SCHEMES: tuple[str, ...] = ("iid", "dirichlet")
BANK_COLUMN = "bank"
# Below this a bank's temporal train/val/test split leaves too few rows to train or evaluate.
MIN_ROWS_PER_BANK = 50


def partition(
    df: pd.DataFrame,
    num_banks: int,
    scheme: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    *,
    min_rows: int = MIN_ROWS_PER_BANK,
) -> dict[str, pd.DataFrame]:
    """Split a canonical table into {bank-00: df, ...}, each with a `bank` column, time-sorted."""
    _check_args(df, num_banks, scheme, alpha, min_rows)
    labels = df[LABEL].to_numpy()
    if has_accounts(df):
        # Sorted codes make the result independent of the table's row order.
        unit_of_row, _ = pd.factorize(df["sender"], sort=True)
        unit = "sender accounts"
    else:
        unit_of_row = np.arange(len(df))
        unit = "rows"
    num_units = int(unit_of_row.max()) + 1
    unit_rows = np.bincount(unit_of_row, minlength=num_units)
    unit_fraud = np.bincount(unit_of_row, weights=labels, minlength=num_units) > 0
    if int(unit_fraud.sum()) < num_banks:
        raise DataError(
            f"only {int(labels.sum())} fraud rows in {int(unit_fraud.sum())} {unit}: too few for "
            f"{num_banks} banks to get a fraud row each; use at most {int(unit_fraud.sum())} "
            "banks or a larger dataset."
        )
    if len(df) < num_banks * min_rows:
        raise DataError(
            f"{len(df)} transactions are too few for {num_banks} banks of at least {min_rows} "
            f"rows; use at most {len(df) // min_rows} banks or a larger dataset."
        )
    rng = np.random.default_rng(seed)
    bank_of_unit = _assign(unit_rows, unit_fraud, num_banks, scheme, alpha, min_rows, rng)
    bank_of_row = bank_of_unit[unit_of_row]
    sizes = np.bincount(bank_of_row, minlength=num_banks)
    if sizes.min() < min_rows:
        small = int(sizes.argmin())
        raise DataError(
            f"{bank_name(small)} would get only {int(sizes[small])} rows (minimum {min_rows}): "
            f"the data ({len(df)} rows in {num_units} {unit}) is too small for {num_banks} banks "
            f"with this split; use fewer banks, a larger alpha, or scheme iid."
        )
    frames = {}
    for index in range(num_banks):
        name = bank_name(index)
        part = df.loc[bank_of_row == index].copy()
        part[BANK_COLUMN] = name
        frames[name] = part.sort_values("timestamp", kind="stable").reset_index(drop=True)
    return frames


def _check_args(df: pd.DataFrame, num_banks: int, scheme: str, alpha: float, min_rows: int) -> None:
    if isinstance(num_banks, bool) or not isinstance(num_banks, int | np.integer) or num_banks < 1:
        raise DataError(f"number of banks must be a whole number >= 1, got {num_banks!r}.")
    if scheme not in SCHEMES:
        raise DataError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(SCHEMES)}.")
    if scheme == "dirichlet" and not (isinstance(alpha, int | float) and math.isfinite(alpha)):
        raise DataError(f"dirichlet alpha must be a positive number, got {alpha!r}.")
    if scheme == "dirichlet" and alpha <= 0:
        raise DataError(f"dirichlet alpha must be positive (e.g. 0.5), got {alpha!r}.")
    if min_rows < 1:
        raise DataError(f"min_rows must be at least 1, got {min_rows!r}.")
    for column in (LABEL, "timestamp"):
        if column not in df.columns:
            raise DataError(f"the table has no '{column}' column; load it with load_table first.")


def _assign(
    unit_rows: np.ndarray,
    unit_fraud: np.ndarray,
    num_banks: int,
    scheme: str,
    alpha: float,
    min_rows: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Bank index per unit, following the recipe in the module docstring."""
    fraud_units = rng.permutation(np.flatnonzero(unit_fraud))
    legit_units = rng.permutation(np.flatnonzero(~unit_fraud))
    if scheme == "dirichlet":
        q_fraud = rng.dirichlet(np.full(num_banks, float(alpha)))
        q_legit = rng.dirichlet(np.full(num_banks, float(alpha)))
    else:
        q_fraud = q_legit = np.full(num_banks, 1.0 / num_banks)
    bank = np.empty(len(unit_rows), dtype=np.int64)
    bank[fraud_units[:num_banks]] = np.arange(num_banks)
    rest = fraud_units[num_banks:]
    bank[rest] = _cut(unit_rows[rest], q_fraud)
    legit_rows = int(unit_rows[legit_units].sum())
    # A run can miss up to one unit's rows at its two ends, hence the largest unit on top.
    largest = int(unit_rows[legit_units].max()) if legit_rows else 0
    floor = min(1.0 / num_banks, (min_rows + largest) / legit_rows) if legit_rows else 0.0
    bank[legit_units] = _cut(unit_rows[legit_units], floor + (1 - num_banks * floor) * q_legit)
    return bank


def _cut(weights: np.ndarray, proportions: np.ndarray) -> np.ndarray:
    """Bank per item: consecutive runs whose total weights follow `proportions`."""
    if len(weights) == 0:
        return np.empty(0, dtype=np.int64)
    ends = np.cumsum(weights, dtype=np.float64)
    middles = ends - weights / 2.0
    bounds = np.cumsum(proportions)[:-1] * ends[-1]
    return np.searchsorted(bounds, middles, side="right").astype(np.int64)


def prepare_banks(
    source: Path,
    out_dir: Path,
    fmt: str = "auto",
    mapping: Path | Mapping[str, object] | None = None,
    num_banks: int = 5,
    scheme: str = "dirichlet",
    alpha: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Load `source`, split it into banks and write the consortium layout; return the manifest."""
    df = load_table(source, fmt, mapping)
    frames = partition(df, num_banks, scheme=scheme, alpha=alpha, seed=seed)
    out_dir = Path(out_dir)
    remove_stale_banks(out_dir, keep=set(frames))
    if mapping is None or isinstance(mapping, Mapping):
        mapping_meta: object = dict(mapping) if mapping else None
    else:
        mapping_meta = str(mapping) or None
    meta = {
        "source": str(Path(source).resolve()),
        "format": df.attrs.get("format", fmt),
        "requested_format": fmt,
        "mapping": mapping_meta,
        "scheme": scheme,
        "alpha": float(alpha),
        "seed": int(seed),
        "num_banks": int(num_banks),
        "partition_unit": "sender" if has_accounts(df) else "row",
        "transactions": int(len(df)),
        "fraud": int(df[LABEL].sum()),
        "unlabelled_dropped": int(df.attrs.get("unlabelled_dropped", 0)),
    }
    return write_banks(frames, out_dir, meta)
