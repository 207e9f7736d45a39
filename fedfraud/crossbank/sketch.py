"""Consortium account sketches: per-receiver activity at *other* banks, without pooling rows.

Each bank encodes, for every time window, count-min sketches of its own transactions keyed by
receiver account: how many transfers it received (`inflow_count`), from how many distinct
senders (`distinct_senders`) and how much (`inflow_log_amount`, log1p of each amount, capped).
Cells are located by a keyed BLAKE2b hash of the account id; the key is shared by the banks and
never by the operator, so the operator cannot tell which cell belongs to which account even if a
sketch were revealed. The arrays are plain float vectors: they travel through the run's secure
aggregation like a model update, and the banks reveal the consortium sum.

A transaction's cross-bank features only use windows that ended before its own window starts
(point in time), minus the bank's own exact contribution (so they measure other banks' activity).

Count-min error (Cormode & Muthukrishnan 2005): a query never underestimates, and overestimates a
window's value by at most e/width of that window's total mass with probability 1 - exp(-depth).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedfraud.errors import ConfigError

STATS: tuple[str, ...] = ("inflow_count", "distinct_senders", "inflow_log_amount")
FEATURES: tuple[str, ...] = tuple(f"xbank_{s}" for s in STATS)
LOG_AMOUNT_CAP = 16.0  # log1p(8.9M): bounds one transaction's influence (also for DP noise)
_HASH_DOMAIN = b"fedfraud-sketch"


@dataclass(frozen=True)
class SketchSpec:
    """Shape of the consortium sketch; every bank must use the same one (run-config)."""

    window_h: float = 72.0  # hours per window
    windows: int = 32  # windows from origin_h; later rows fall into the last one
    depth: int = 2  # hash rows (failure probability exp(-depth))
    width: int = 4096  # cells per row (error e/width of a window's mass)
    lookback: int = 4  # completed windows summed into a feature
    origin_h: float = 0.0  # start of window 0 (timestamps are hours)

    def __post_init__(self) -> None:
        if not (self.window_h > 0 and self.windows >= 1 and self.lookback >= 1):
            raise ConfigError("sketch: window-h > 0, windows >= 1 and lookback >= 1 are required")
        if not (1 <= self.depth <= 8 and 64 <= self.width <= 1 << 20):
            raise ConfigError("sketch: depth must be in 1..8 and width in 64..1048576")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.windows, len(STATS), self.depth, self.width)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def error_bound(self, window_mass: float) -> float:
        """Count-min overestimate bound for one window holding `window_mass` in total."""
        return float(np.e / self.width * window_mass)

    def window_of(self, timestamp_h: np.ndarray) -> np.ndarray:
        w = np.floor((np.asarray(timestamp_h, np.float64) - self.origin_h) / self.window_h)
        return np.clip(w, 0, self.windows - 1).astype(np.int64)


def buckets(accounts: np.ndarray, key: bytes, spec: SketchSpec) -> np.ndarray:
    """(len(accounts), depth) cell index per account and hash row (keyed BLAKE2b)."""
    if len(key) < 16:
        raise ConfigError(
            "sketch key must be at least 16 bytes; create it with `fedfraud roster init`"
        )
    out = np.empty((len(accounts), spec.depth), dtype=np.int64)
    for i, account in enumerate(map(str, accounts)):
        digest = hashlib.blake2b(
            account.encode(), key=key[:64], digest_size=8 * spec.depth, person=_HASH_DOMAIN
        ).digest()
        out[i] = np.frombuffer(digest, dtype="<u8") % spec.width
    return out


def _per_account_window(df: pd.DataFrame, spec: SketchSpec) -> tuple[np.ndarray, np.ndarray]:
    """Unique receivers and their exact (receivers, windows, stats) activity at this bank."""
    receivers, r_idx = np.unique(df["receiver"].astype(str).to_numpy(), return_inverse=True)
    window = spec.window_of(df["timestamp"].to_numpy())
    exact = np.zeros((len(receivers), spec.windows, len(STATS)))
    np.add.at(exact[:, :, 0], (r_idx, window), 1.0)
    amounts = np.minimum(np.log1p(df["amount"].to_numpy(np.float64).clip(min=0)), LOG_AMOUNT_CAP)
    np.add.at(exact[:, :, 2], (r_idx, window), amounts)
    senders = df["sender"].astype(str).to_numpy()
    pairs = pd.DataFrame({"r": r_idx, "w": window, "s": senders}).drop_duplicates()
    np.add.at(exact[:, :, 1], (pairs["r"].to_numpy(), pairs["w"].to_numpy()), 1.0)
    return receivers, exact


def encode(df: pd.DataFrame, key: bytes, spec: SketchSpec) -> np.ndarray:
    """This bank's sketch, shaped `spec.shape` (windows, stats, depth, width)."""
    receivers, exact = _per_account_window(df, spec)
    cells = buckets(receivers, key, spec)
    sketch = np.zeros(spec.shape)
    for row in range(spec.depth):
        # sketch[w, s, row, cell] += exact[account, w, s] for every account
        np.add.at(sketch[:, :, row, :].transpose(2, 0, 1), cells[:, row], exact)
    return sketch


def query(sketch: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Count-min estimate (accounts, windows, stats): the minimum over hash rows."""
    per_row = [sketch[:, :, row, cells[:, row]] for row in range(cells.shape[1])]
    return np.min(np.stack(per_row), axis=0).transpose(2, 0, 1)


def cross_bank_features(
    df: pd.DataFrame, consortium: np.ndarray, key: bytes, spec: SketchSpec
) -> np.ndarray:
    """(len(df), len(FEATURES)) log1p of the receiver's activity at other banks over the
    `lookback` windows before the row's own window (rows in df's order)."""
    if consortium.shape != spec.shape:
        raise ConfigError(f"consortium sketch has shape {consortium.shape}, expected {spec.shape}")
    receivers, exact = _per_account_window(df, spec)
    others = np.maximum(query(consortium, buckets(receivers, key, spec)) - exact, 0.0)
    # cum[:, k] = sum of windows < k, so windows [k - lookback, k) = cum[k] - cum[k - lookback]
    cum = np.concatenate([np.zeros_like(others[:, :1]), np.cumsum(others, axis=1)], axis=1)
    r_idx = np.searchsorted(receivers, df["receiver"].astype(str).to_numpy())
    window = spec.window_of(df["timestamp"].to_numpy())
    past = cum[r_idx, window] - cum[r_idx, np.maximum(window - spec.lookback, 0)]
    return np.log1p(np.maximum(past, 0.0)).astype(np.float32)


def exact_consortium(frames: list[pd.DataFrame], spec: SketchSpec) -> dict[str, np.ndarray]:
    """Exact per-receiver (windows, stats) totals over all banks' rows: the yardstick for the
    sketch's error in tests and benchmarks (needs pooled rows; never used in a run)."""
    receivers, exact = _per_account_window(pd.concat(frames, ignore_index=True), spec)
    return dict(zip(receivers, exact, strict=True))
