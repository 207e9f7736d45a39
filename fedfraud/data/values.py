"""Column values into canonical values: numbers, hours, fixed vocabularies, account ids.

Every bad value becomes a one-line `DataError` naming the column (`where`) and the fix.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from fedfraud.data.schema import CHANNELS, MCC_BUCKETS, range_error
from fedfraud.errors import DataError

BOOL_WORDS = {"true": 1, "false": 0, "yes": 1, "no": 0, "y": 1, "n": 0, "t": 1, "f": 0}

CHANNEL_SYNONYMS = {
    "pos": "card_present", "in_store": "card_present", "chip": "card_present",
    "online": "card_not_present", "ecommerce": "card_not_present", "e_commerce": "card_not_present",
    "web": "card_not_present", "cnp": "card_not_present",
    "wire": "transfer", "ach": "transfer", "sepa": "transfer", "p2p": "transfer",
    "bank_transfer": "transfer", "atm": "cash", "withdrawal": "cash",
    # PaySim's `type` values, so a PaySim-shaped file mapped by hand gets the preset's channels.
    "payment": "card_not_present", "debit": "card_present", "cash_out": "cash", "cash_in": "other",
}  # fmt: skip
MCC_SYNONYMS = {
    "supermarket": "grocery", "groceries": "grocery", "restaurant": "restaurants",
    "food": "restaurants", "gas": "fuel", "petrol": "fuel", "casino": "gambling",
    "betting": "gambling", "airline": "travel", "hotel": "travel", "jewelry": "luxury",
    "digital": "digital_goods", "remittance": "money_transfer", "money_order": "money_transfer",
}  # fmt: skip
# ISO 18245 merchant category codes -> our buckets (airline/car/hotel block 3000-3999 is travel).
_ISO_MCC = {
    "grocery": (5411, 5422, 5441, 5451, 5462, 5499),
    "electronics": (5045, 5722, 5732, 5734),
    "travel": (4111, 4112, 4121, 4131, 4411, 4511, 4722, 7011, 7512),
    "digital_goods": (5815, 5816, 5817, 5818),
    "gambling": (7800, 7801, 7802, 7995),
    "fuel": (5172, 5541, 5542, 5983),
    "restaurants": (5811, 5812, 5813, 5814),
    "luxury": (5094, 5681, 5944),
    "money_transfer": (4829, 6010, 6011, 6012, 6050, 6051, 6538, 6540),
}


def plain(value: object) -> object:
    """A numpy scalar as the Python value, so messages read 2 rather than np.int64(2)."""
    return value.item() if isinstance(value, np.generic) else value


def numbers(values: pd.Series, where: str, boolean: bool = False) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        return values.astype(np.int64)
    if pd.api.types.is_numeric_dtype(values):
        numeric = values.astype(np.float64)
    else:
        text = values.astype("string").str.strip()
        numeric = pd.to_numeric(text, errors="coerce").astype(np.float64)
        if boolean:  # true/false, yes/no
            numeric = numeric.fillna(text.str.lower().map(BOOL_WORDS).astype(np.float64))
    bad = numeric.isna() & values.notna()
    if bad.any():
        raise DataError(
            f"{where} has non-numeric values (e.g. {plain(values[bad].iloc[0])!r} in "
            f"{int(bad.sum())} rows); clean the column or map another one onto it."
        )
    if numeric.isna().any():
        raise DataError(f"{where} has {int(numeric.isna().sum())} empty values; fill or drop them.")
    if not np.isfinite(numeric.to_numpy()).all():
        raise DataError(f"{where} has infinite values; fix or drop those rows.")
    return numeric


def hours(values: pd.Series, where: str) -> pd.Series:
    """Numeric timestamps are hours already; date-times become hours since the first one."""
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = values
    else:
        numeric = None
        if pd.api.types.is_numeric_dtype(values):
            numeric = values
        else:
            parsed = pd.to_numeric(values.astype("string").str.strip(), errors="coerce")
            if parsed.notna().sum() == values.notna().sum():
                numeric = parsed
        if numeric is not None:
            return numbers(numeric, where)
        stamps = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
        bad = stamps.isna() & values.notna()
        if bad.any():
            raise DataError(
                f"{where} has values that are neither hours nor ISO date-times (e.g. "
                f"{plain(values[bad].iloc[0])!r}); use numbers or dates like 2024-01-31T14:05:00."
            )
    if stamps.isna().any():
        raise DataError(f"{where} has {int(stamps.isna().sum())} empty values; fill or drop them.")
    return ((stamps - stamps.min()) / pd.Timedelta(hours=1)).astype(np.float64)


def categories(
    values: pd.Series,
    names: tuple[str, ...],
    synonyms: dict[str, str],
    default: str,
    numeric_lookup: dict[int, int],
) -> pd.Series:
    """Map codes or names onto a fixed vocabulary's indices; unknowns become `default`."""
    fallback = names.index(default)

    def code(value: object) -> int:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            return fallback
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            key = re.sub(r"[\s\-/]+", "_", text.lower())
            key = synonyms.get(key, key)
            return names.index(key) if key in names else fallback
        if not np.isfinite(number):
            return fallback
        if 0 <= number < len(names):
            return int(number)
        return numeric_lookup.get(int(number), fallback)

    uniques = pd.unique(values)
    codes = {u: code(u) for u in uniques if not (isinstance(u, float) and np.isnan(u))}
    return values.map(codes).fillna(fallback).astype(np.int64)


def check_channel_codes(values: pd.Series, where: str) -> None:
    """A numeric channel outside 0..4 is a code from another scheme, not "other": refuse it."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.notna() & ~numeric.isin(range(len(CHANNELS)))
    if bad.any():
        raise DataError(
            f"{where}: {range_error('channel', plain(numeric[bad].iloc[0]))} (or map channel "
            "names such as card_present, online, atm)."
        )


ISO_LOOKUP: dict[int, int] = {
    **{c: MCC_BUCKETS.index("travel") for c in range(3000, 4000)},
    **{c: MCC_BUCKETS.index(b) for b, codes in _ISO_MCC.items() for c in codes},
}


def accounts(values: pd.Series, where: str) -> pd.Series:
    """Account ids as strings (numeric ids lose any '.0' a missing value forced on them)."""
    if values.isna().any():
        raise DataError(
            f"{where} has {int(values.isna().sum())} empty account ids; fill or drop them."
        )
    if pd.api.types.is_float_dtype(values) and (values == np.floor(values)).all():
        values = values.astype(np.int64)
    return values.astype(str)


def ids(values: pd.Series) -> pd.Series:
    """Transaction ids keep their type; whole floats (a CSV column with gaps) become ints.
    Empty and duplicated ids are rejected by validate_transactions."""
    if pd.api.types.is_float_dtype(values) and (values.dropna() == np.floor(values.dropna())).all():
        return values.astype("Int64") if values.isna().any() else values.astype(np.int64)
    return values
