"""Account sketches: never underestimate, stay within the count-min bound, only look back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedfraud.crossbank.sketch import (
    STATS,
    SketchSpec,
    buckets,
    cross_bank_features,
    encode,
    exact_consortium,
    query,
)
from fedfraud.errors import ConfigError

KEY = b"k" * 32


def _bank(rng: np.random.Generator, n: int, bank: int, shared: int = 40) -> pd.DataFrame:
    # Receivers: 40 accounts every bank pays (mule-like) plus this bank's own payees.
    own = [f"b{bank}-r{i}" for i in range(300)]
    pool = np.array([f"mule-{i}" for i in range(shared)] + own)
    return pd.DataFrame(
        {
            "sender": [f"b{bank}-s{i}" for i in rng.integers(0, 500, n)],
            "receiver": pool[rng.integers(0, len(pool), n)],
            "amount": rng.lognormal(4, 1, n),
            "timestamp": rng.uniform(0, 24 * 60, n),
        }
    )


@pytest.fixture
def banks():
    rng = np.random.default_rng(7)
    return [_bank(rng, 3000, b) for b in range(3)]


def test_consortium_sketch_never_underestimates_and_stays_within_bound(banks):
    spec = SketchSpec(window_h=72, windows=20, depth=3, width=512)
    consortium = sum(encode(df, KEY, spec) for df in banks)
    exact = exact_consortium(banks, spec)
    accounts = np.array(sorted(exact))
    est = query(consortium, buckets(accounts, KEY, spec))
    truth = np.stack([exact[a] for a in accounts])
    assert (est >= truth - 1e-9).all()
    mass = truth.sum(axis=0)  # (windows, stats): each window's total per statistic
    over = est - truth
    bound = np.e / spec.width * mass
    # Count-min: P(over > bound) <= exp(-depth) per query; allow that fraction plus slack.
    assert (over > bound + 1e-9).mean() <= np.exp(-spec.depth) + 0.01


def test_distinct_senders_counts_each_sender_once_per_window():
    df = pd.DataFrame(
        {
            "sender": ["a", "a", "b", "a"],
            "receiver": ["m", "m", "m", "m"],
            "amount": [10.0, 10.0, 10.0, 10.0],
            "timestamp": [1.0, 2.0, 3.0, 100.0],
        }
    )
    spec = SketchSpec(window_h=72, windows=4, depth=1, width=64)
    est = query(encode(df, KEY, spec), buckets(np.array(["m"]), KEY, spec))[0]
    assert est[0, STATS.index("inflow_count")] == 3
    assert est[0, STATS.index("distinct_senders")] == 2
    assert est[1, STATS.index("distinct_senders")] == 1


def test_features_only_see_other_banks_in_earlier_windows(banks):
    spec = SketchSpec(window_h=72, windows=20, depth=3, width=4096, lookback=2)
    consortium = sum(encode(df, KEY, spec) for df in banks)
    mine = banks[0]
    feats = cross_bank_features(mine, consortium, KEY, spec)
    # Rows in window 0 have no past; an account no other bank paid has no cross-bank activity.
    first = spec.window_of(mine["timestamp"].to_numpy()) == 0
    assert (feats[first] == 0).all()
    local_only = mine["receiver"].str.startswith("b0-").to_numpy()
    # Only hash collisions (both rows colliding) give a local-only payee cross-bank activity.
    assert (feats[local_only] > 0).any(axis=1).mean() < 0.02
    # Shared payees: equal to the exact count at the other banks over the lookback windows
    # (never below it; above it only where hash cells collide).
    others = pd.concat(banks[1:])
    win_all = spec.window_of(others["timestamp"].to_numpy())
    win = spec.window_of(mine["timestamp"].to_numpy())
    truth = np.array(
        [
            ((others["receiver"].to_numpy() == r) & (win_all >= w - 2) & (win_all < w)).sum()
            for r, w in zip(mine["receiver"], win, strict=True)
        ]
    )
    count = np.expm1(feats[:, 0].astype(np.float64))
    assert (count >= truth - 1e-3).all()
    assert np.isclose(count, truth, atol=1e-3).mean() > 0.98
    assert truth[~local_only].mean() > 1.0  # shared payees are busy elsewhere: not vacuous
    # Changing the consortium in the row's own or later windows changes nothing for it.
    row = int(np.flatnonzero(~first)[0])
    w = int(spec.window_of(mine["timestamp"].to_numpy()[row : row + 1])[0])
    future = consortium.copy()
    future[w:] += 1000.0
    assert np.array_equal(cross_bank_features(mine, future, KEY, spec)[row], feats[row])


def test_wrong_key_puts_accounts_in_other_cells():
    spec = SketchSpec(depth=2, width=4096)
    accounts = np.array([f"acct-{i}" for i in range(200)])
    same = (buckets(accounts, KEY, spec) == buckets(accounts, b"x" * 32, spec)).all(axis=1)
    assert same.mean() < 0.01


def test_bad_spec_and_short_key_are_user_errors():
    with pytest.raises(ConfigError, match="width"):
        SketchSpec(width=3)
    with pytest.raises(ConfigError, match="16 bytes"):
        buckets(np.array(["a"]), b"short", SketchSpec())
