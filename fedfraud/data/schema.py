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
TX_ID = "tx_id"  # the bank's own transaction id: carried through every step, never a feature
# Accepted ranges: values outside them are data errors, never silently clipped or scored.
MAX_AMOUNT = 1e12  # a trillion in the bank's currency
MAX_HOURS = 1e7  # timestamps are hours since the bank's epoch (~1,100 years)
MAX_GEO_KM = 20_040.0  # half the Earth's circumference: the farthest two places can be
RANGES: dict[str, tuple[float, float]] = {
    "amount": (0.0, MAX_AMOUNT),
    "timestamp": (0.0, MAX_HOURS),
    "channel": (0, len(CHANNELS) - 1),
    "mcc": (0, len(MCC_BUCKETS) - 1),
    "geo_km": (0.0, MAX_GEO_KM),
}
RANGE_HINTS: dict[str, str] = {
    "amount": "use absolute amounts in the bank's currency",
    "timestamp": "use hours since the bank's first transaction",
    "channel": f"codes index {', '.join(CHANNELS)}",
    "mcc": "codes index fedfraud.data.schema.MCC_BUCKETS",
    "geo_km": "use kilometres",
}


def range_error(column: str, value: object) -> str:
    """The message for a value outside RANGES[column]: the accepted range and what it means."""
    low, high = RANGES[column]
    whole = column in ("channel", "mcc")
    shown = f"{int(low)}..{int(high)} (whole numbers)" if whole else f"{low:g}..{high:g}"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)  # 99, not 99.0
    return f"'{column}' must be in {shown}, got {value!r}; {RANGE_HINTS[column]}"


def check_value(column: str, value: float) -> str | None:
    """None if `value` is acceptable for `column`, else the range_error message."""
    if column not in RANGES:
        return None
    low, high = RANGES[column]
    if not low <= value <= high or (column in ("channel", "mcc") and value != int(value)):
        return range_error(column, value)
    return None


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
    for col in RANGES:
        values = out[col].to_numpy(np.float64)
        low, high = RANGES[col]
        bad = ~np.isfinite(values) | (values < low) | (values > high)
        if col in ("channel", "mcc"):
            bad |= values != np.floor(values)
        if bad.any():
            example = values[bad][0].item()
            raise DataError(
                f"{source}: {int(bad.sum())} row(s) out of range: {range_error(col, example)}."
            )
    out["channel"] = out["channel"].astype(np.int64)
    out["mcc"] = out["mcc"].astype(np.int64)
    out["device_new"] = (out["device_new"] > 0).astype(np.int8)
    out["geo_km"] = out["geo_km"].astype(np.float64)
    if TX_ID in out.columns:
        check_tx_ids(out[TX_ID], source)
    for col in ACCOUNT_COLUMNS:
        if col in out.columns and out[col].isna().any():
            raise DataError(f"{source}: column '{col}' has empty account ids; fill or drop them.")
    return out


def check_tx_ids(ids: pd.Series, source: str, column: str = TX_ID) -> None:
    """Transaction ids must be present and unique: alerts, scores and rings name them."""
    if ids.isna().any():
        raise DataError(
            f"{source}: column '{column}' has {int(ids.isna().sum())} empty ids; every "
            "transaction needs its own id (or drop the column to number rows instead)."
        )
    dup = ids.duplicated(keep=False)
    if dup.any():
        raise DataError(
            f"{source}: column '{column}' has {int(dup.sum())} rows sharing an id (e.g. "
            f"{_plain(ids[dup].iloc[0])!r}); every transaction needs its own id."
        )


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def require_fraud(labels: np.ndarray, source: str, split: str = "training") -> None:
    """Refuse a split without fraud rows: no model can learn (or be scored) from it."""
    if int(np.asarray(labels).sum()) == 0:
        raise DataError(
            f"{source}: the {split} split has no fraud rows (is_fraud=1); give this bank more "
            "data, a longer time range, or check the label column."
        )
