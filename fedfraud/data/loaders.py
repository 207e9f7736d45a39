"""Read the transaction files people bring (CSV/Parquet, PaySim, ULB, transaction graphs) into
the canonical schema.

Every user mistake becomes a one-line `DataError` naming the file or column and the fix; no
pandas/pyarrow traceback reaches the user. Categorical values are mapped as follows:

- channel: numeric codes 0..4 index `schema.CHANNELS` (another number, e.g. 99, is an error
  naming that range); strings match a channel name or a common synonym (e.g. "online" ->
  card_not_present, "atm" -> cash, PaySim's types); other strings and empty cells become "other".
- mcc: numeric codes 0..9 index `schema.MCC_BUCKETS`; 4-digit ISO 18245 merchant category codes
  are bucketed (5411 -> grocery, 7995 -> gambling, ...); strings match a bucket name or synonym;
  anything else, including empty cells, becomes "unknown".
- other categorical columns (a mapping's "categorical" list, the txgraph preset's extra
  columns) become 0/1 extra features, one-hot or hashed: see fedfraud.data.categorical.

Unlabelled rows (label values listed under a mapping's "unlabelled", 2 in the txgraph preset)
are dropped; their count is left in `df.attrs["unlabelled_dropped"]` and logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from fedfraud.data import values as values_
from fedfraud.data.categorical import encode_categorical
from fedfraud.data.mapping import (
    CANONICAL,
    ColumnMapping,
    extra_name,
    parse_mapping,
    read_mapping,
    suggest,
)
from fedfraud.data.schema import (
    ACCOUNT_COLUMNS,
    CHANNELS,
    EXTRA_PREFIX,
    LABEL,
    MCC_BUCKETS,
    REQUIRED_COLUMNS,
    TX_ID,
    TYPOLOGY,
    validate_transactions,
)
from fedfraud.errors import DataError

__all__ = ["CANONICAL", "FORMATS", "extra_name", "load_table", "read_mapping"]
log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("auto", "csv", "parquet", "paysim", "ulb", "txgraph")
PRESETS: tuple[str, ...] = ("paysim", "ulb", "txgraph")

PAYSIM_COLUMNS = ("step", "type", "amount", "nameOrig", "nameDest", "isFraud")
PAYSIM_BALANCES = ("oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest")
ULB_COLUMNS = ("Time", "Amount", "Class")
# A transaction-graph export: every other column of the file is a categorical extra feature.
TXGRAPH_COLUMNS = ("Time", "Source", "Target", "Amount", "Labels")
TXGRAPH_UNLABELLED = (2.0,)

_PARQUET_SUFFIXES = (".parquet", ".pq")
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst")


def load_table(
    path: Path, fmt: str = "auto", mapping: Path | Mapping[str, object] | None = None
) -> pd.DataFrame:
    """Read a CSV/Parquet file (or a PaySim/ULB/txgraph preset) into a validated canonical table.

    Columns already named canonically (any case) are taken as they are. `fmt` csv/parquet picks
    the reader (auto: Parquet magic bytes or suffix); the presets are recognised by their
    columns unless a `mapping` is given. `mapping` ({canonical_name: source_column} plus the
    options of fedfraud.data.mapping, a dict or a JSON/TOML file) overrides or extends what the
    names or an explicit preset give. The resolved format ("paysim", "ulb", "txgraph", "csv" or
    "parquet") is left in `df.attrs["format"]`, the count of dropped unlabelled rows in
    `df.attrs["unlabelled_dropped"]`.
    A `tx_id` column is kept (unique, non-empty); a file without one gets its row numbers
    (1 = first data row, counted before unlabelled rows are dropped), so alerts can always be
    traced back to the source.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    _check_file(path)
    spec = parse_mapping(mapping)
    kind = _file_kind(path, fmt)
    columns = _read_header(path, kind)
    preset = fmt if fmt in PRESETS else _detect_preset(columns) if not spec else ""
    plan = _preset_plan(preset, columns, path) if preset else _identity_plan(columns)
    plan.update(spec.columns)
    if preset == "txgraph":
        spec = _txgraph_options(spec, plan, columns)
    _check_plan(plan, columns, path, spec.categorical)
    raw = _read_body(path, kind, sorted({*plan.values(), *spec.categorical}))
    if raw.empty:
        raise DataError(f"{path}: the file has a header but no rows; point to a file with data.")
    seconds = preset == "ulb" and plan.get("timestamp") == "Time"
    df, dropped = _to_canonical(raw, plan, path, 1 / 3600 if seconds else 1.0, spec.unlabelled)
    if dropped:
        log.warning("%s: dropped %d unlabelled rows (label %s)", path, dropped, spec.unlabelled)
    df = _with_categorical(df, raw.loc[df.index], spec, path)
    df = df.sort_values("timestamp", kind="stable").reset_index(drop=True)
    df = validate_transactions(df, source=str(path))
    df = df[sorted(df.columns, key=_column_order)]
    df.attrs["format"] = preset or kind
    df.attrs["unlabelled_dropped"] = dropped
    return df


def _txgraph_options(
    spec: ColumnMapping, plan: dict[str, str], columns: list[str]
) -> ColumnMapping:
    """The txgraph preset: label 2 means unlabelled, every unmapped column is categorical."""
    used = set(plan.values())
    return replace(
        spec,
        categorical=spec.categorical or tuple(c for c in columns if c not in used),
        unlabelled=spec.unlabelled or TXGRAPH_UNLABELLED,
    )


def _with_categorical(
    df: pd.DataFrame, raw: pd.DataFrame, spec: ColumnMapping, path: Path
) -> pd.DataFrame:
    """`df` plus the 0/1 extra columns of each categorical source column."""
    parts = [df]
    for column in spec.categorical:
        encoded = encode_categorical(raw[column], column, spec.encoding)
        clash = sorted(set(encoded.columns) & set().union(*(p.columns for p in parts)))
        if clash:
            raise DataError(
                f"{path}: categorical column {column!r} gives feature {clash[0]!r}, which "
                "another column already gives; rename one of the source columns."
            )
        parts.append(encoded)
    return pd.concat(parts, axis=1) if len(parts) > 1 else df


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
    if set(TXGRAPH_COLUMNS) <= present:
        return "txgraph"
    return ""


def _preset_plan(preset: str, columns: list[str], path: Path) -> dict[str, str]:
    required = {"paysim": PAYSIM_COLUMNS, "ulb": ULB_COLUMNS, "txgraph": TXGRAPH_COLUMNS}[preset]
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
        return plan | _id_column(columns)
    if preset == "txgraph":  # an id column is the tx_id, not one more categorical extra
        return {"timestamp": "Time", "sender": "Source", "receiver": "Target",
                "amount": "Amount", LABEL: "Labels", **_id_column(columns)}  # fmt: skip
    plan = {"timestamp": "Time", "amount": "Amount", LABEL: "Class", **_id_column(columns)}
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
    if TX_ID not in plan:
        plan.update(_id_column(columns))
    for column in columns:
        if column.startswith(EXTRA_PREFIX):
            plan.setdefault(extra_name(column[len(EXTRA_PREFIX) :]), column)
    return plan


def _id_column(columns: list[str]) -> dict[str, str]:
    """{tx_id: column} for the file's own transaction id under a common name, else {}."""
    lowered: dict[str, list[str]] = {}
    for column in columns:
        lowered.setdefault(column.strip().lower(), []).append(column)
    for alias in (TX_ID, "transaction_id", "txn_id", "id"):
        if len(lowered.get(alias, [])) == 1:
            return {TX_ID: lowered[alias][0]}
    return {}


def _check_plan(
    plan: dict[str, str], columns: list[str], path: Path, categorical: tuple[str, ...] = ()
) -> None:
    absent = sorted({src for src in (*plan.values(), *categorical) if src not in columns})
    if absent:
        raise DataError(
            f"{path}: mapped column(s) {', '.join(repr(c) for c in absent)} not in the file"
            f"{suggest(absent[0], columns)}; the file's columns are {_show(columns)}."
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
    raw: pd.DataFrame,
    plan: dict[str, str],
    path: Path,
    timestamp_scale: float,
    unlabelled: tuple[float, ...] = (),
) -> tuple[pd.DataFrame, int]:
    """The canonical columns, without the unlabelled rows, and how many rows were dropped."""

    def label(target: str) -> str:
        src = plan[target]
        return f"column '{src}'" + (f" (mapped to {target})" if src != target else "")

    out: dict[str, pd.Series] = {}
    for target in sorted(plan, key=_column_order):
        values = raw[plan[target]]
        where = f"{path}: {label(target)}"
        if target == "timestamp":
            out[target] = values_.hours(values, where) * timestamp_scale
        elif target == "channel":
            out[target] = values_.categories(
                values, CHANNELS, values_.CHANNEL_SYNONYMS, "other", {}
            )
            values_.check_channel_codes(values, where)
        elif target == "mcc":
            out[target] = values_.categories(
                values, MCC_BUCKETS, values_.MCC_SYNONYMS, "unknown", values_.ISO_LOOKUP
            )
        elif target in ACCOUNT_COLUMNS:
            out[target] = values_.accounts(values, where)
        elif target == TX_ID:
            out[target] = values_.ids(values)
        elif target == TYPOLOGY:
            out[target] = values.fillna("unknown").astype(str)
        else:
            out[target] = values_.numbers(values, where, boolean=target in (LABEL, "device_new"))
    df = pd.DataFrame(out)
    if TX_ID not in df.columns:  # a file without ids: its row numbers are the ids alerts name
        df.insert(0, TX_ID, np.arange(1, len(df) + 1, dtype=np.int64))
    keep = ~df[LABEL].isin(unlabelled)
    dropped = int((~keep).sum())
    if not keep.any():
        raise DataError(
            f"{path}: every row of {label(LABEL)} is unlabelled ({', '.join(map(str, unlabelled))})"
            "; a fraud model needs labelled rows (0 legit, 1 fraud)."
        )
    df = df[keep]
    labels = df[LABEL]
    if not labels.isin([0, 1]).all():
        example = raw[plan[LABEL]][~labels.isin([0, 1])].iloc[0]
        raise DataError(
            f"{path}: {label(LABEL)} must hold only 0 (legit) and 1 (fraud), found "
            f"{values_.plain(example)!r}; recode the labels or map the right column onto is_fraud."
        )
    if (df["amount"] < 0).any():
        raise DataError(f"{path}: {label('amount')} has negative values; use absolute amounts.")
    if labels.sum() == 0:
        raise DataError(
            f"{path}: {label(LABEL)} has no fraud rows (value 1) in {len(df)} transactions; a "
            "fraud model needs some - check the label column or use a larger extract."
        )
    return df, dropped


def _column_order(name: str) -> tuple[int, str]:
    """Canonical columns first, in schema order, then extra features by name."""
    return (CANONICAL.index(name), name) if name in CANONICAL else (len(CANONICAL), name)
