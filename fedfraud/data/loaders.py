"""Read the transaction files people bring (CSV/Parquet, PaySim, ULB) into the canonical schema.

Every user mistake becomes a one-line `DataError` naming the file or column and the fix; no
pandas/pyarrow traceback reaches the user. Categorical values are mapped as follows:

- channel: numeric codes 0..4 index `schema.CHANNELS` (another number, e.g. 99, is an error
  naming that range); strings match a channel name or a common synonym (e.g. "online" ->
  card_not_present, "atm" -> cash, PaySim's types); other strings and empty cells become "other".
- mcc: numeric codes 0..9 index `schema.MCC_BUCKETS`; 4-digit ISO 18245 merchant category codes
  are bucketed (5411 -> grocery, 7995 -> gambling, ...); strings match a bucket name or synonym;
  anything else, including empty cells, becomes "unknown".
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from fedfraud.data.schema import (
    ACCOUNT_COLUMNS,
    CHANNELS,
    EXTRA_PREFIX,
    LABEL,
    MCC_BUCKETS,
    OPTIONAL_DEFAULTS,
    REQUIRED_COLUMNS,
    TX_ID,
    TYPOLOGY,
    range_error,
    validate_transactions,
)
from fedfraud.errors import DataError

FORMATS: tuple[str, ...] = ("auto", "csv", "parquet", "paysim", "ulb")
CANONICAL: tuple[str, ...] = (
    TX_ID,
    *REQUIRED_COLUMNS,
    *ACCOUNT_COLUMNS,
    *OPTIONAL_DEFAULTS,
    TYPOLOGY,
)

PAYSIM_COLUMNS = ("step", "type", "amount", "nameOrig", "nameDest", "isFraud")
PAYSIM_BALANCES = ("oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest")
ULB_COLUMNS = ("Time", "Amount", "Class")

_PARQUET_SUFFIXES = (".parquet", ".pq")
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst")
_BOOL_WORDS = {"true": 1, "false": 0, "yes": 1, "no": 0, "y": 1, "n": 0, "t": 1, "f": 0}

_CHANNEL_SYNONYMS = {
    "pos": "card_present", "in_store": "card_present", "chip": "card_present",
    "online": "card_not_present", "ecommerce": "card_not_present", "e_commerce": "card_not_present",
    "web": "card_not_present", "cnp": "card_not_present",
    "wire": "transfer", "ach": "transfer", "sepa": "transfer", "p2p": "transfer",
    "bank_transfer": "transfer", "atm": "cash", "withdrawal": "cash",
    # PaySim's `type` values, so a PaySim-shaped file mapped by hand gets the preset's channels.
    "payment": "card_not_present", "debit": "card_present", "cash_out": "cash", "cash_in": "other",
}  # fmt: skip
_MCC_SYNONYMS = {
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


def load_table(
    path: Path, fmt: str = "auto", mapping: Path | Mapping[str, object] | None = None
) -> pd.DataFrame:
    """Read a CSV/Parquet file (or a PaySim/ULB preset) into a validated canonical table.

    Columns already named canonically (any case) are taken as they are. `fmt` csv/parquet picks
    the reader (auto: Parquet magic bytes or suffix); the PaySim/ULB presets are recognised by
    their columns unless a `mapping` is given. `mapping` ({canonical_name: source_column}, a dict
    or a JSON/TOML file) overrides or extends what the names or an explicit preset give. The
    resolved format ("paysim", "ulb", "csv" or "parquet") is left in `df.attrs["format"]`.
    A `tx_id` column is kept (unique, non-empty); a file without one gets its row numbers
    (1 = first data row), so alerts can always be traced back to the source.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    _check_file(path)
    user_map = read_mapping(mapping)
    kind = _file_kind(path, fmt)
    columns = _read_header(path, kind)
    preset = fmt if fmt in ("paysim", "ulb") else _detect_preset(columns) if not user_map else ""
    plan = _preset_plan(preset, columns, path) if preset else _identity_plan(columns)
    plan.update(user_map)
    _check_plan(plan, columns, path)
    raw = _read_body(path, kind, sorted(set(plan.values())))
    if raw.empty:
        raise DataError(f"{path}: the file has a header but no rows; point to a file with data.")
    seconds = preset == "ulb" and plan.get("timestamp") == "Time"
    df = _to_canonical(raw, plan, path, timestamp_scale=1 / 3600 if seconds else 1.0)
    if TX_ID not in df.columns:  # a file without ids: its row numbers are the ids alerts name
        df.insert(0, TX_ID, np.arange(1, len(df) + 1, dtype=np.int64))
    df = df.sort_values("timestamp", kind="stable").reset_index(drop=True)
    df = validate_transactions(df, source=str(path))
    df = df[sorted(df.columns, key=_column_order)]
    df.attrs["format"] = preset or kind
    return df


def read_mapping(mapping: Path | str | Mapping[str, object] | None) -> dict[str, str]:
    """Parse a column mapping (dict, or JSON/TOML file) into {canonical_name: source_column}."""
    if mapping is None or (isinstance(mapping, str) and not mapping.strip()):
        return {}
    if isinstance(mapping, Mapping):
        return _normalise_mapping(dict(mapping), "column mapping")
    path = Path(mapping)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not found"
        raise DataError(f"mapping file {path} {what}; give a JSON or TOML file of column names.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"mapping file {path} cannot be read ({exc.__class__.__name__}).") from exc
    raw = _parse_mapping_text(text, path)
    if not isinstance(raw, dict):
        raise DataError(
            f'mapping file {path} must hold one object like {{"amount": "amt"}}, '
            f"not a {type(raw).__name__}."
        )
    return _normalise_mapping(raw, f"mapping file {path}")


def _parse_mapping_text(text: str, path: Path) -> object:
    suffix = path.suffix.lower()
    parsers = {".json": ["json"], ".toml": ["toml"]}.get(suffix, ["json", "toml"])
    problems = []
    for parser in parsers:
        try:
            return json.loads(text) if parser == "json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"{parser.upper()}: {exc}")
    example = 'amount = "amt"' if parsers == ["toml"] else '{"amount": "amt"}'
    raise DataError(
        f"mapping file {path} is not valid {' or '.join(p.upper() for p in parsers)} "
        f"({'; '.join(problems)}); fix the syntax, e.g. {example}."
    )


def _normalise_mapping(raw: dict, where: str) -> dict[str, str]:
    plan: dict[str, str] = {}
    for key, value in raw.items():
        target = str(key).strip().lower()
        if target == "extra":
            extra = [value] if isinstance(value, str) else value
            if not isinstance(extra, list) or not all(isinstance(c, str) and c for c in extra):
                raise DataError(f'{where}: "extra" must be a list of column names.')
            for column in extra:
                plan[extra_name(column)] = column
            continue
        if target not in CANONICAL and not _is_extra_name(target):
            hint = _suggest(target, CANONICAL)
            if isinstance(value, str) and value.strip().lower() in CANONICAL:
                hint = f" (it looks reversed: write {{{value!r}: {str(key)!r}}})"
            raise DataError(
                f"{where}: unknown canonical column {key!r}{hint}; map onto "
                f'{", ".join(CANONICAL)}, x_<name>, or list extra features under "extra".'
            )
        if not isinstance(value, str) or not value:
            raise DataError(f"{where}: the source column for {key!r} must be a column name.")
        plan[target] = value
    return plan


def extra_name(column: str) -> str:
    """Canonical name of an extra numeric feature: 'oldbalanceOrg' -> 'x_oldbalanceorg'."""
    slug = re.sub(r"[^0-9a-z]+", "_", column.strip().lower()).strip("_")
    return EXTRA_PREFIX + (slug or "col")


def _is_extra_name(name: str) -> bool:
    return bool(re.fullmatch(re.escape(EXTRA_PREFIX) + r"[0-9a-z_]+", name))


def _suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- reading files ---------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise DataError(f"{path} is a directory; give the path of one .csv or .parquet file.")
    if not path.exists():
        raise DataError(f"{path} not found; check the path and the current directory.")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes); point to a file with transactions.")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise DataError(
            f"{path} cannot be opened ({exc.strerror}); check its permissions."
        ) from exc


def _file_kind(path: Path, fmt: str) -> str:
    """'csv' or 'parquet': by fmt, else by the parquet magic bytes, else by suffix."""
    if fmt in ("csv", "parquet"):
        return fmt
    with path.open("rb") as handle:
        if handle.read(4) == b"PAR1":
            return "parquet"
    return "parquet" if path.suffix.lower() in _PARQUET_SUFFIXES else "csv"


def _csv_options(path: Path) -> dict[str, object]:
    """Reject binary files up front and sniff the delimiter (',', ';', tab or '|')."""
    if path.suffix.lower() in _COMPRESSED_SUFFIXES:
        return {}
    with path.open("rb") as handle:
        head = handle.read(64 * 1024)
    if head.startswith(b"PAR1"):
        raise DataError(f"{path} is a Parquet file, not CSV; use --format parquet (or auto).")
    if b"\x00" in head:
        raise DataError(
            f"{path} is binary, not a CSV text file; export it as CSV or Parquet "
            "(--format parquet for Parquet files)."
        )
    first = head.splitlines()[0] if head.strip() else b""
    counts = {sep: first.count(sep.encode()) for sep in (",", ";", "\t", "|")}
    sep = max(counts, key=lambda s: counts[s])
    return {"sep": sep if counts[sep] else ","}


def _read_csv(path: Path, **kwargs: object) -> pd.DataFrame:
    options = {**_csv_options(path), **kwargs}
    try:
        try:
            return pd.read_csv(path, encoding="utf-8-sig", **options)
        except UnicodeDecodeError:  # spreadsheet exports are often Windows-1252
            return pd.read_csv(path, encoding="cp1252", **options)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path} holds no CSV header or rows; point to a file with data.") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
        raise DataError(
            f"{path} is not a readable CSV file ({reason}); check it is comma-separated "
            "text with one header row."
        ) from exc


def _read_header(path: Path, kind: str) -> list[str]:
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DataError(
                f"{path} is not a readable Parquet file ({exc.__class__.__name__}); re-export it, "
                "or use --format csv if it is text."
            ) from exc
    return [str(c) for c in _read_csv(path, nrows=0).columns]


def _read_body(path: Path, kind: str, columns: list[str]) -> pd.DataFrame:
    if kind == "parquet":
        try:
            return pd.read_parquet(path, columns=columns)
        except Exception as exc:  # corrupt pages only show up when the data is read
            raise DataError(
                f"{path} is not a readable Parquet file ({exc.__class__.__name__}); re-export it."
            ) from exc
    return _read_csv(path, usecols=columns, low_memory=False)


# --- column plans: {canonical_name: source_column} ---------------------------------------------


def _detect_preset(columns: list[str]) -> str:
    present = set(columns)
    if set(PAYSIM_COLUMNS) <= present:
        return "paysim"
    if set(ULB_COLUMNS) <= present and "V1" in present:
        return "ulb"
    return ""


def _preset_plan(preset: str, columns: list[str], path: Path) -> dict[str, str]:
    required = PAYSIM_COLUMNS if preset == "paysim" else ULB_COLUMNS
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(
            f"{path}: not a {preset} file, column(s) {', '.join(missing)} missing (found "
            f"{_show(columns)}); use --format csv with a --mapping for other layouts."
        )
    if preset == "paysim":
        # isFlaggedFraud is dropped on purpose: it is the legacy rule's output, not a feature.
        plan = {"timestamp": "step", "channel": "type", "amount": "amount",
                "sender": "nameOrig", "receiver": "nameDest", LABEL: "isFraud"}  # fmt: skip
        plan.update({extra_name(c): c for c in PAYSIM_BALANCES if c in columns})
        return plan
    plan = {"timestamp": "Time", "amount": "Amount", LABEL: "Class"}
    plan.update({extra_name(c): c for c in columns if re.fullmatch(r"V\d+", c)})
    return plan


def _identity_plan(columns: list[str]) -> dict[str, str]:
    """Canonical names found in the file, matched exactly or else case-insensitively."""
    plan: dict[str, str] = {}
    lowered: dict[str, list[str]] = {}
    for column in columns:
        lowered.setdefault(column.strip().lower(), []).append(column)
    for name in CANONICAL:
        if name in columns:
            plan[name] = name
        elif len(lowered.get(name, [])) == 1:
            plan[name] = lowered[name][0]
    for alias in ("transaction_id", "txn_id", "id"):  # common names for the bank's own id
        if TX_ID not in plan and len(lowered.get(alias, [])) == 1:
            plan[TX_ID] = lowered[alias][0]
    for column in columns:
        if column.startswith(EXTRA_PREFIX):
            plan.setdefault(extra_name(column[len(EXTRA_PREFIX) :]), column)
    return plan


def _check_plan(plan: dict[str, str], columns: list[str], path: Path) -> None:
    absent = sorted({src for src in plan.values() if src not in columns})
    if absent:
        raise DataError(
            f"{path}: mapped column(s) {', '.join(repr(c) for c in absent)} not in the file"
            f"{_suggest(absent[0], columns)}; the file's columns are {_show(columns)}."
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in plan]
    if missing and len(columns) == 1:
        raise DataError(
            f"{path}: found one column only ({_show(columns)[:60]!r}); this does not look like a "
            "table - give a CSV with a header row of column names, or a Parquet file."
        )
    if missing:
        hint = ", ".join(f'"{c}": "<your column>"' for c in missing)
        raise DataError(
            f"{path}: no column for {', '.join(missing)} (found {_show(columns)}); rename "
            f"the column(s) or pass --mapping with {{{hint}}}."
        )


def _show(columns: list[str], limit: int = 12) -> str:
    shown = ", ".join(columns[:limit])
    return shown + (f", ... (+{len(columns) - limit} more)" if len(columns) > limit else "")


# --- values --------------------------------------------------------------------------------


def _to_canonical(
    raw: pd.DataFrame, plan: dict[str, str], path: Path, timestamp_scale: float
) -> pd.DataFrame:
    def label(target: str) -> str:
        src = plan[target]
        return f"column '{src}'" + (f" (mapped to {target})" if src != target else "")

    out: dict[str, pd.Series] = {}
    for target in sorted(plan, key=_column_order):
        values = raw[plan[target]]
        where = f"{path}: {label(target)}"
        if target == "timestamp":
            out[target] = _hours(values, where) * timestamp_scale
        elif target == "channel":
            out[target] = _categories(values, CHANNELS, _CHANNEL_SYNONYMS, "other", {})
            _check_channel_codes(values, where)
        elif target == "mcc":
            out[target] = _categories(values, MCC_BUCKETS, _MCC_SYNONYMS, "unknown", _ISO_LOOKUP)
        elif target in ACCOUNT_COLUMNS:
            out[target] = _accounts(values, where)
        elif target == TX_ID:
            out[target] = _ids(values)
        elif target == TYPOLOGY:
            out[target] = values.fillna("unknown").astype(str)
        else:
            out[target] = _numbers(values, where, boolean=target in (LABEL, "device_new"))
    df = pd.DataFrame(out)
    labels = df[LABEL]
    if not labels.isin([0, 1]).all():
        example = raw[plan[LABEL]][~labels.isin([0, 1])].iloc[0]
        raise DataError(
            f"{path}: {label(LABEL)} must hold only 0 (legit) and 1 (fraud), found "
            f"{_plain(example)!r}; recode the labels or map the right column onto is_fraud."
        )
    if (df["amount"] < 0).any():
        raise DataError(f"{path}: {label('amount')} has negative values; use absolute amounts.")
    if labels.sum() == 0:
        raise DataError(
            f"{path}: {label(LABEL)} has no fraud rows (value 1) in {len(df)} transactions; a "
            "fraud model needs some - check the label column or use a larger extract."
        )
    return df


def _plain(value: object) -> object:
    """A numpy scalar as the Python value, so messages read 2 rather than np.int64(2)."""
    return value.item() if isinstance(value, np.generic) else value


def _column_order(name: str) -> tuple[int, str]:
    """Canonical columns first, in schema order, then extra features by name."""
    return (CANONICAL.index(name), name) if name in CANONICAL else (len(CANONICAL), name)


def _numbers(values: pd.Series, where: str, boolean: bool = False) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        return values.astype(np.int64)
    if pd.api.types.is_numeric_dtype(values):
        numeric = values.astype(np.float64)
    else:
        text = values.astype("string").str.strip()
        numeric = pd.to_numeric(text, errors="coerce").astype(np.float64)
        if boolean:  # true/false, yes/no
            numeric = numeric.fillna(text.str.lower().map(_BOOL_WORDS).astype(np.float64))
    bad = numeric.isna() & values.notna()
    if bad.any():
        raise DataError(
            f"{where} has non-numeric values (e.g. {_plain(values[bad].iloc[0])!r} in "
            f"{int(bad.sum())} rows); clean the column or map another one onto it."
        )
    if numeric.isna().any():
        raise DataError(f"{where} has {int(numeric.isna().sum())} empty values; fill or drop them.")
    if not np.isfinite(numeric.to_numpy()).all():
        raise DataError(f"{where} has infinite values; fix or drop those rows.")
    return numeric


def _hours(values: pd.Series, where: str) -> pd.Series:
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
            return _numbers(numeric, where)
        stamps = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
        bad = stamps.isna() & values.notna()
        if bad.any():
            raise DataError(
                f"{where} has values that are neither hours nor ISO date-times (e.g. "
                f"{_plain(values[bad].iloc[0])!r}); use numbers or dates like 2024-01-31T14:05:00."
            )
    if stamps.isna().any():
        raise DataError(f"{where} has {int(stamps.isna().sum())} empty values; fill or drop them.")
    return ((stamps - stamps.min()) / pd.Timedelta(hours=1)).astype(np.float64)


def _categories(
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


def _check_channel_codes(values: pd.Series, where: str) -> None:
    """A numeric channel outside 0..4 is a code from another scheme, not "other": refuse it."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.notna() & ~numeric.isin(range(len(CHANNELS)))
    if bad.any():
        raise DataError(
            f"{where}: {range_error('channel', _plain(numeric[bad].iloc[0]))} (or map channel "
            "names such as card_present, online, atm)."
        )


_ISO_LOOKUP: dict[int, int] = {
    **{c: MCC_BUCKETS.index("travel") for c in range(3000, 4000)},
    **{c: MCC_BUCKETS.index(b) for b, codes in _ISO_MCC.items() for c in codes},
}


def _ids(values: pd.Series) -> pd.Series:
    """Transaction ids keep their type; whole floats (a CSV column with gaps) become ints.
    Empty and duplicated ids are rejected by validate_transactions."""
    if pd.api.types.is_float_dtype(values) and (values.dropna() == np.floor(values.dropna())).all():
        return values.astype("Int64") if values.isna().any() else values.astype(np.int64)
    return values


def _accounts(values: pd.Series, where: str) -> pd.Series:
    """Account ids as strings (numeric ids lose any '.0' a missing value forced on them)."""
    if values.isna().any():
        raise DataError(
            f"{where} has {int(values.isna().sum())} empty account ids; fill or drop them."
        )
    if pd.api.types.is_float_dtype(values) and (values == np.floor(values)).all():
        values = values.astype(np.int64)
    return values.astype(str)
