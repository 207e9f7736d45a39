"""Canonical transaction schema shared by the generator, the loaders, features and graphs."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from fedfraud.errors import DataError

# Channels and merchant-category buckets are fixed vocabularies so every bank one-hot encodes
# them into the same feature columns without exchanging data.
CHANNELS: tuple[str, ...] = ("card_present", "card_not_present", "transfer", "cash", "other")
MCC_BUCKETS: tuple[str, ...] = (
    "unknown",
    "grocery",
    "electronics",
    "travel",
    "digital_goods",
    "gambling",
    "fuel",
    "restaurants",
    "luxury",
    "money_transfer",
)
TYPOLOGIES: tuple[str, ...] = (
    "legit",
    "card_testing",
    "account_takeover",
    "mule_ring",
    "structuring",
)

REQUIRED_COLUMNS: tuple[str, ...] = ("amount", "timestamp", "is_fraud")
# Optional columns and the value used when a dataset lacks them.
OPTIONAL_DEFAULTS: dict[str, object] = {
    "channel": 4,  # "other"
    "mcc": 0,  # "unknown"
    "device_new": 0,
    "geo_km": 0.0,
}
ACCOUNT_COLUMNS: tuple[str, ...] = ("sender", "receiver")
LABEL = "is_fraud"
TYPOLOGY = "typology"  # ground truth for analysis only; never a model feature
EXTRA_PREFIX = "x_"  # extra numeric features a dataset brings (e.g. ULB's V1..V28 -> x_v1..)


def extra_feature_columns(columns: Iterable[str]) -> list[str]:
    """The dataset's extra numeric feature columns, in a stable order."""
    return sorted(c for c in columns if c.startswith(EXTRA_PREFIX))


def has_accounts(df: pd.DataFrame) -> bool:
    """True when the data names sender and receiver accounts (needed by the GNN)."""
    return all(c in df.columns for c in ACCOUNT_COLUMNS)


def validate_transactions(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check and normalise a canonical transaction table; raise DataError naming the fix."""
    if len(df) == 0:
        raise DataError(f"{source}: the file has no rows; point to a file with transactions.")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)}; rename them or give a column "
            "mapping (--mapping FILE) onto amount, timestamp, is_fraud."
        )
    out = df.copy()
    numeric = ["amount", "timestamp", *OPTIONAL_DEFAULTS, *extra_feature_columns(df.columns)]
    for col in numeric:
        if col not in out.columns:
            out[col] = OPTIONAL_DEFAULTS[col]
            continue
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna() & out[col].notna()
        if bad.any():
            example = out.loc[bad, col].iloc[0]
            raise DataError(
                f"{source}: column '{col}' has non-numeric values (e.g. {example!r} in "
                f"{int(bad.sum())} rows); clean the column or map another one onto it."
            )
        if values.isna().any():
            raise DataError(
                f"{source}: column '{col}' has {int(values.isna().sum())} empty values; "
                "fill or drop those rows."
            )
        out[col] = values
    labels = pd.to_numeric(out[LABEL], errors="coerce")
    if labels.isna().any():
        raise DataError(
            f"{source}: label column '{LABEL}' has {int(labels.isna().sum())} missing or "
            "non-numeric values; every transaction needs a 0/1 label."
        )
    if not labels.isin([0, 1]).all():
        raise DataError(f"{source}: label column '{LABEL}' must hold only 0 and 1.")
    out[LABEL] = labels.astype(np.int8)
    if (out["amount"] < 0).any():
        raise DataError(f"{source}: column 'amount' has negative values; use absolute amounts.")
    out["channel"] = out["channel"].astype(np.int64).clip(0, len(CHANNELS) - 1)
    out["mcc"] = out["mcc"].astype(np.int64).clip(0, len(MCC_BUCKETS) - 1)
    out["device_new"] = (out["device_new"] > 0).astype(np.int8)
    out["geo_km"] = out["geo_km"].astype(np.float64).clip(lower=0)
    for col in ACCOUNT_COLUMNS:
        if col in out.columns and out[col].isna().any():
            raise DataError(f"{source}: column '{col}' has empty account ids; fill or drop them.")
    return out


def require_fraud(labels: np.ndarray, source: str, split: str = "training") -> None:
    """Refuse a split without fraud rows: no model can learn (or be scored) from it."""
    if int(np.asarray(labels).sum()) == 0:
        raise DataError(
            f"{source}: the {split} split has no fraud rows (is_fraud=1); give this bank more "
            "data, a longer time range, or check the label column."
        )
