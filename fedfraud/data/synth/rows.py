"""Rows: column chunks of generated transactions."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedfraud.data.synth.constants import SPAN_H


class Rows:
    """Column chunks of generated transactions, concatenated once at the end."""

    COLS = ("bank", "sender", "receiver", "amount", "t", "channel", "mcc", "dev", "geo", "typ")

    def __init__(self) -> None:
        self.chunks: list[dict[str, np.ndarray]] = []

    def add(self, **cols: Any) -> None:
        n = len(cols["t"])
        keep = np.asarray(cols["t"]) < SPAN_H  # events running past the end are cut there
        if keep.any():
            self.chunks.append({k: np.broadcast_to(cols[k], (n,))[keep] for k in self.COLS})

    def count_per_bank(self, n_banks: int) -> np.ndarray:
        counts = np.zeros(n_banks, dtype=np.int64)
        for c in self.chunks:
            counts += np.bincount(c["bank"].astype(np.int64), minlength=n_banks)
        return counts

    def concat(self) -> dict[str, np.ndarray]:
        if not self.chunks:
            return {k: np.zeros(0) for k in self.COLS}
        return {k: np.concatenate([c[k] for c in self.chunks]) for k in self.COLS}
