"""Synthetic consortium data written in a public data set's layout (PaySim, ULB credit cards),
so the PaySim and ULB loaders can be exercised end to end: export -> load -> bank folders.

- paysim: one row per transaction with PaySim's columns. `step` is the hour (1-based, as in
  PaySim), `type` comes from the channel (the inverse of the loader's mapping), balances are each
  account's exact running balance from a random opening balance (it can go below 0, an
  overdraft, where PaySim's would stay at 0); isFlaggedFraud is 0. mcc, device and geo
  fields have no PaySim column and are lost.
- ulb: `Time` in whole seconds since the first transaction, V1..V28 the first 28 principal
  components of the standardized point-in-time features fedfraud computes per bank (all but
  the amount, which ULB keeps as `Amount`), `Class` the label. Accounts are not exported, as in
  the real file. The components are fitted on all rows (as ULB's were); they carry no label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedfraud.data.features import build_bank_table
from fedfraud.data.schema import CHANNELS
from fedfraud.data.synth import check_args, generate_consortium
from fedfraud.errors import ConfigError
from fedfraud.io import atomic_write, atomic_write_text, check_out_file

EXPORT_FORMATS: tuple[str, ...] = ("paysim", "ulb")
ULB_COMPONENTS = 28
# channel -> PaySim `type`, the inverse of fedfraud.data.values.CHANNEL_SYNONYMS' PaySim entries.
PAYSIM_TYPE = {"card_present": "DEBIT", "card_not_present": "PAYMENT", "transfer": "TRANSFER",
               "cash": "CASH_OUT", "other": "CASH_IN"}  # fmt: skip


def export_synthetic(
    fmt: str,
    out: Path,
    num_banks: int = 5,
    transactions: int = 200_000,
    seed: int = 0,
    force: bool = False,
) -> dict[str, int | str]:
    """Generate a consortium, pool its banks and write them to `out` (.csv, or .parquet) in
    `fmt`'s layout; return a summary (rows, fraud, format, path). An existing `out` is kept
    unless `force`; the file is written atomically (a reader never sees half of it)."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of paysim, ulb.")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{out} is a folder; give --out a file name such as paysim.csv.")
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"{out}: give --out a .csv or .parquet file name.")
    check_args(num_banks, transactions, seed)
    check_out_file(out, force=force)  # before minutes of generating: exists, or not writable
    frames = generate_consortium(num_banks, transactions, seed)
    table = paysim_table(frames, seed) if fmt == "paysim" else ulb_table(frames, seed)
    if out.suffix.lower() == ".parquet":
        atomic_write(out, table.to_parquet(None, index=False), durable=False)
    else:
        atomic_write_text(out, table.to_csv(index=False))
    label = "isFraud" if fmt == "paysim" else "Class"
    return {"format": fmt, "path": str(out), "rows": len(table), "fraud": int(table[label].sum())}


def _pooled(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    pooled = pd.concat(list(frames.values()), ignore_index=True)
    return pooled.sort_values("timestamp", kind="stable").reset_index(drop=True)


def paysim_table(frames: dict[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """The pooled banks in PaySim's columns (see the module docstring)."""
    df = _pooled(frames)
    n = len(df)
    amount = df["amount"].round(2).to_numpy()
    # Running balances: each row is a debit of the sender and a credit of the receiver.
    account = pd.concat([df["sender"], df["receiver"]], ignore_index=True)
    codes, uniques = pd.factorize(account)
    opening = np.random.default_rng(seed).lognormal(8.0, 1.5, len(uniques)).round(2)
    delta = np.concatenate([-amount, amount])
    event_order = np.r_[np.arange(n), np.arange(n)]  # debit and credit of row i happen at i
    order = np.lexsort((np.r_[np.zeros(n), np.ones(n)], event_order))
    moves = pd.Series(delta[order]).groupby(codes[order]).cumsum().to_numpy()
    after = np.empty(2 * n)
    after[order] = opening[codes[order]] + moves
    before = after - delta
    channel = df["channel"].to_numpy()
    return pd.DataFrame(
        {
            "step": np.floor(df["timestamp"].to_numpy()).astype(np.int64) + 1,
            "type": [PAYSIM_TYPE[CHANNELS[c]] for c in channel],
            "amount": amount,
            "nameOrig": "C" + df["sender"].astype(str),
            "oldbalanceOrg": before[:n].round(2),
            "newbalanceOrig": after[:n].round(2),
            "nameDest": "C" + df["receiver"].astype(str),
            "oldbalanceDest": before[n:].round(2),
            "newbalanceDest": after[n:].round(2),
            "isFraud": df["is_fraud"].astype(np.int64).to_numpy(),
            "isFlaggedFraud": 0,
        }
    )


def ulb_table(frames: dict[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """The pooled banks in ULB creditcard.csv's columns (see the module docstring)."""
    from sklearn.decomposition import PCA

    parts, features = [], []
    for name, frame in frames.items():
        ordered = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
        table = build_bank_table(ordered, name, with_graph=False)
        keep = [i for i, f in enumerate(table.feature_names) if f != "log_amount"]
        parts.append(ordered)
        features.append(table.x[:, keep].astype(np.float64))
    df = pd.concat(parts, ignore_index=True)
    x = np.concatenate(features)
    order = np.argsort(df["timestamp"].to_numpy(), kind="stable")
    df, x = df.iloc[order].reset_index(drop=True), x[order]
    std = x.std(0)
    z = (x - x.mean(0)) / np.where(std > 0, std, 1.0)
    v = PCA(n_components=ULB_COMPONENTS, random_state=seed).fit_transform(z)
    hours = df["timestamp"].to_numpy()
    out = pd.DataFrame({"Time": np.round((hours - hours.min()) * 3600.0)})
    for i in range(ULB_COMPONENTS):
        out[f"V{i + 1}"] = v[:, i]
    out["Amount"] = df["amount"].round(2).to_numpy()
    out["Class"] = df["is_fraud"].astype(np.int64).to_numpy()
    return out
