"""On-disk layout of a consortium: DIR/bank-XX/transactions.parquet plus DIR/manifest.json."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fedfraud.data.features import TEST, temporal_split
from fedfraud.data.schema import LABEL, TYPOLOGY, validate_transactions
from fedfraud.errors import DataError
from fedfraud.io import atomic_write_text

log = logging.getLogger(__name__)

TRANSACTIONS_FILE = "transactions.parquet"
MANIFEST_FILE = "manifest.json"


def bank_name(index: int) -> str:
    """Canonical bank id for a partition index: bank-00, bank-01, ..."""
    return f"bank-{index:02d}"


def write_banks(
    frames: Mapping[str, pd.DataFrame], out_dir: Path, meta: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write one parquet per bank and a manifest with sizes and fraud rates; return the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    banks = []
    for name, df in frames.items():
        bank_dir = out_dir / name
        bank_dir.mkdir(exist_ok=True)
        df.to_parquet(bank_dir / TRANSACTIONS_FILE, index=False)
        entry: dict[str, Any] = {
            "bank": name,
            "transactions": int(len(df)),
            "fraud": int(df[LABEL].sum()),
            "fraud_rate": float(df[LABEL].mean()) if len(df) else 0.0,
            # Fraud in the rows every arm is tested on (build_bank_table's temporal split).
            "test_fraud": int(
                df[LABEL].to_numpy()[temporal_split(df["timestamp"].to_numpy()) == TEST].sum()
            )
            if len(df)
            else 0,
        }
        if TYPOLOGY in df.columns:
            counts = df.loc[df[LABEL] == 1, TYPOLOGY].value_counts()
            entry["typologies"] = {str(k): int(v) for k, v in counts.items()}
        banks.append(entry)
    manifest = {**dict(meta or {}), "banks": banks}
    atomic_write_text(out_dir / MANIFEST_FILE, json.dumps(manifest, indent=2))
    return manifest


def remove_stale_banks(out_dir: Path, keep: set[str]) -> None:
    """Delete bank files of an earlier, larger split so no phantom bank is picked up later."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return
    for path in sorted(out_dir.glob(f"*/{TRANSACTIONS_FILE}")):
        name = path.parent.name
        if re.fullmatch(r"bank-\d+", name) and name not in keep:
            log.info("removing %s left from an earlier split", path)
            path.unlink()
            if not any(path.parent.iterdir()):
                path.parent.rmdir()
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)


def list_banks(data_dir: Path) -> list[str]:
    """Bank folder names under `data_dir` that hold a transactions file, sorted."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"data folder {data_dir} does not exist; run `fedfraud data generate --out "
            f"{data_dir}` or point --data at your bank folders."
        )
    names = sorted(p.parent.name for p in data_dir.glob(f"*/{TRANSACTIONS_FILE}"))
    if not names and (data_dir / TRANSACTIONS_FILE).is_file():
        raise DataError(
            f"{data_dir} is one bank's folder; pass the folder that holds the bank folders, "
            f"--data {data_dir.parent}"
        )
    if not names:
        raise DataError(
            f"{data_dir} holds no bank folders with {TRANSACTIONS_FILE}; expected "
            f"{data_dir}/bank-00/{TRANSACTIONS_FILE} (see `fedfraud data generate`)."
        )
    return names


def read_bank(bank_dir: Path) -> pd.DataFrame:
    """Read and validate one bank's transactions."""
    path = Path(bank_dir) / TRANSACTIONS_FILE
    if not path.exists():
        raise DataError(f"{path} not found; each bank folder needs a {TRANSACTIONS_FILE}.")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(
            f"{path} is not a readable parquet file ({exc.__class__.__name__})."
        ) from exc
    return validate_transactions(df, str(path))
