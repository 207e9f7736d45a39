"""How many training examples one transaction touches: the group size record-level DP-SGD
would have to protect for a transaction to be covered.

DP-SGD with per-example clipping bounds the influence of one training example (a row's feature
vector and label). A bank's account features are point-in-time aggregates over earlier rows of
the same sender and receiver (`fedfraud.data.history`), so removing one transaction also changes
the feature vectors of later rows of those accounts. `rows_changed_by_each_transaction` measures
that with the real feature builder (`build_bank_table`): remove the transaction, rebuild the
bank's features, compare. A deployed bank can run it on its own table; nothing leaves the bank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fedfraud.data.features import TRAIN, BankTable, build_bank_table
from fedfraud.data.history import account_codes
from fedfraud.data.schema import has_accounts

SAMPLE_RANDOM = 10
SAMPLE_HEAVIEST = 10


def time_order(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame in `build_bank_table`'s row order (stable by timestamp), so that row i here is
    row i of the table and removing it leaves every other row in the same order."""
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _features(frame: pd.DataFrame) -> BankTable:
    # No graph: the MLP (the only model DP-SGD trains) sees x alone, and x does not depend on
    # the split, so rows can be compared across the rebuild.
    return build_bank_table(frame, "unit-check", with_graph=False)


def _changed_rows(base: np.ndarray, rebuilt: np.ndarray, removed: int) -> np.ndarray:
    """Positions in `base` (removed row excluded) whose feature vector differs in `rebuilt`."""
    kept = np.delete(np.arange(len(base)), removed)
    a, b = base[kept], rebuilt
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    return kept[~same.all(axis=1)]


def rows_changed_by_each_transaction(
    frame: pd.DataFrame, rows: Sequence[int]
) -> dict[int, np.ndarray]:
    """For each row position (in `time_order(frame)`), the training rows other than itself
    whose feature vector changes when that transaction is removed from the bank.

    Training rows are those of the full table's temporal split; removing a row can also move
    the split boundary by one row, which this does not count (it changes which examples are
    trained on, not their features)."""
    ordered = time_order(frame)
    base = _features(ordered)
    train = base.split == TRAIN
    out: dict[int, np.ndarray] = {}
    for row in rows:
        rebuilt = _features(ordered.drop(index=int(row)).reset_index(drop=True))
        changed = _changed_rows(base.x, rebuilt.x, int(row))
        out[int(row)] = changed[train[changed]]
    return out


def sample_transactions(
    frame: pd.DataFrame,
    n_random: int = SAMPLE_RANDOM,
    n_heaviest: int = SAMPLE_HEAVIEST,
    seed: int = 0,
) -> np.ndarray:
    """Row positions (in `time_order(frame)`) to measure: the first transaction of each of the
    `n_heaviest` accounts with the most rows (as sender or receiver; a first row feeds every
    later row of its account, the worst case) plus `n_random` other rows drawn uniformly."""
    ordered = time_order(frame)
    n = len(ordered)
    heavy: list[int] = []
    if has_accounts(ordered) and n_heaviest > 0:
        sender, receiver, num = account_codes(ordered["sender"], ordered["receiver"])
        rows_of = np.bincount(sender, minlength=num) + np.bincount(receiver, minlength=num)
        first = np.full(num, n, dtype=np.int64)
        np.minimum.at(first, sender, np.arange(n))
        np.minimum.at(first, receiver, np.arange(n))
        heaviest = np.argsort(-rows_of, kind="stable")[:n_heaviest]
        heavy = sorted({int(first[a]) for a in heaviest})
    rest = np.setdiff1d(np.arange(n), heavy)
    rng = np.random.default_rng(seed)
    drawn = rng.choice(rest, size=min(n_random, len(rest)), replace=False)
    return np.array(sorted({*heavy, *(int(r) for r in drawn)}), dtype=np.int64)


def rows_changed_summary(frame: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """k = training rows changed per sampled transaction: {"sampled", "median", "p90", "max"}
    over the whole sample, and the median over the random rows alone."""
    rows = sample_transactions(frame, seed=seed)
    changed = rows_changed_by_each_transaction(frame, rows)
    k = np.array([len(v) for v in changed.values()])
    # The heaviest accounts' first rows are worst cases; the random rows' median is typical.
    heavy = set(sample_transactions(frame, n_random=0).tolist())
    typical = [len(v) for row, v in changed.items() if row not in heavy]
    return {
        "sampled": int(len(k)),
        "median": float(np.median(k)),
        "p90": float(np.percentile(k, 90)),
        "max": int(k.max()),
        "random_median": float(np.median(typical)) if typical else None,
        "sample": f"first row of the {SAMPLE_HEAVIEST} accounts with the most rows "
        f"+ {SAMPLE_RANDOM} random rows (seed {seed})",
    }


def privacy_unit_analysis(
    unit: str | list[str] | None, frames: Mapping[str, pd.DataFrame], seed: int = 0
) -> dict[str, Any]:
    """results.json `analysis.privacy_unit`: the protected unit and, for the largest bank, how
    many training examples one transaction changes (research side: it reads the rows)."""
    bank = max(frames, key=lambda name: len(frames[name]))
    return {
        "unit": unit,
        "bank": bank,
        "rows_changed_per_transaction": rows_changed_summary(frames[bank], seed=seed),
    }
