"""Feature scaling from consortium-wide moments, without pooling any bank's raw data.

Each bank computes the mean and mean-of-squares of its training features; the banks send these
through the run's secure aggregator as one weighted update (weight = training rows), so the
consortium learns only the pooled moments. Node (account) moments ride along, weighted the same
way, which makes them an approximation of the pooled node moments. So does the bank's training
fraud rate: weighted by training rows, its consortium mean is the pooled fraud count over the
pooled training rows, the prior every bank starts its model's output bias from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedfraud.data.features import TRAIN, BankTable

_MIN_STD = 1e-6


@dataclass(frozen=True)
class Scaler:
    """Standardization for transaction features (and account features when present)."""

    mean: np.ndarray
    std: np.ndarray
    node_mean: np.ndarray
    node_std: np.ndarray
    fraud_rate: float | None = None  # consortium training fraud rate, when the stats carried it

    def transform(
        self, table: BankTable
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Scaled transaction features and the scaled node features of the training graph and
        of the evaluation graph (None without a graph)."""
        x = ((table.x - self.mean) / self.std).astype(np.float32)
        return x, self.scale_nodes(table.node_x), self.scale_nodes(table.node_x_eval)

    def scale_nodes(self, node_x: np.ndarray | None) -> np.ndarray | None:
        """Scaled account features (None stays None)."""
        if node_x is None:
            return None
        return ((node_x - self.node_mean) / self.node_std).astype(np.float32)

    @classmethod
    def from_moments(cls, moments: list[np.ndarray]) -> Scaler:
        """Build from `[E[x], E[x^2], E[node_x], E[node_x^2]]` (the output of `local_moments`),
        optionally followed by `[fraud rate]` (the output of `stats_update`)."""
        mean, sq, node_mean, node_sq = (np.asarray(m, dtype=np.float64) for m in moments[:4])
        rate = None
        if len(moments) > 4:
            rate = float(np.asarray(moments[4], dtype=np.float64).reshape(-1)[0])
        return cls(
            mean=mean.astype(np.float32),
            std=_std(mean, sq),
            node_mean=node_mean.astype(np.float32),
            node_std=_std(node_mean, node_sq),
            fraud_rate=rate,
        )


def local_moments(table: BankTable) -> list[np.ndarray]:
    """`[E[x], E[x^2], E[node_x], E[node_x^2]]` over this bank's training rows and the accounts
    of its training graph (accounts first seen later are not in it)."""
    train = table.mask(TRAIN)
    x = table.x[train].astype(np.float64)
    if table.node_x is not None and table.src is not None and table.dst is not None:
        active = np.unique(np.concatenate([table.src[train], table.dst[train]]))
        node_x = table.node_x[active].astype(np.float64)
    else:
        node_x = np.zeros((1, 0), dtype=np.float64)
    return [x.mean(0), (x**2).mean(0), node_x.mean(0), (node_x**2).mean(0)]


def local_fraud_rate(table: BankTable) -> np.ndarray:
    """`[fraud rows / training rows]` of this bank's training split, shape (1,)."""
    train = table.mask(TRAIN)
    return np.array([float(table.y[train].sum()) / max(int(train.sum()), 1)])


def stats_update(table: BankTable) -> list[np.ndarray]:
    """What a bank sends in the stats stage: its moments and its training fraud rate. Times the
    moment weight (training rows / MOMENT_WEIGHT_UNIT) the last entry is its fraud count / unit,
    so the revealed weighted mean is the consortium's training fraud rate."""
    return [*local_moments(table), local_fraud_rate(table)]


def stats_shapes(table: BankTable) -> list[tuple[int, ...]]:
    """Shapes of `stats_update(table)`, for revealing the aggregate."""
    d, k = table.x.shape[1], table.node_x.shape[1] if table.node_x is not None else 0
    return [(d,), (d,), (k,), (k,), (1,)]


# Weights only need to be proportional; a public divisor keeps weight x E[x^2] small enough for
# every backend's value range (CKKS bounds |weight x value|) even for banks with millions of rows.
MOMENT_WEIGHT_UNIT = 16.0


def moment_weight(table: BankTable) -> float:
    """Weight of a bank's moments in the consortium mean: its training rows / MOMENT_WEIGHT_UNIT."""
    return float(table.mask(TRAIN).sum()) / MOMENT_WEIGHT_UNIT


def _std(mean: np.ndarray, sq: np.ndarray) -> np.ndarray:
    var = np.clip(sq - mean**2, 0.0, None)
    std = np.sqrt(var)
    # Constant features (e.g. a channel no bank uses) keep their value instead of dividing by 0.
    return np.where(std < _MIN_STD, 1.0, std).astype(np.float32)
