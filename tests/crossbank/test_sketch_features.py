"""Cross-bank columns as model inputs: point in time, one place for every arm, fixed scaling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedfraud.baselines import centralized
from fedfraud.config import RunConfig
from fedfraud.crossbank.features import (
    bank_features,
    clear_consortium,
    cross_bank_scaler,
    cross_bank_table,
    table_order,
    with_features,
)
from fedfraud.crossbank.sketch import FEATURES, SketchSpec
from fedfraud.data.features import build_bank_table
from fedfraud.data.scaling import Scaler, local_moments
from fedfraud.errors import ConfigError
from tests.conftest import random_bank

KEY = b"s" * 32
SPEC = SketchSpec(window_h=100, windows=20, depth=2, width=512)


@pytest.fixture
def frames():
    rng = np.random.default_rng(5)
    out = {f"bank-{i:02d}": random_bank(rng, 1500, 100_000 * (i + 1)) for i in range(3)}
    # Everyone also pays a few shared accounts (mule-like), so the columns are not all zero.
    for frame in out.values():
        frame.loc[frame.index[::7], "receiver"] = rng.integers(0, 20, len(frame.index[::7]))
    return out


def test_later_windows_change_no_earlier_rows_features(frames):
    consortium = clear_consortium(frames, KEY, SPEC)
    mine = table_order(frames["bank-00"])
    before = bank_features(mine, consortium, KEY, SPEC)
    cut = 10  # rows in windows >= cut are changed at every bank, or removed
    window = SPEC.window_of(mine["timestamp"].to_numpy())
    early = int((window < cut).sum())
    assert 0 < early < len(mine) and (before[:early] > 0).any()

    def later(frame: pd.DataFrame, how: str) -> pd.DataFrame:
        frame = table_order(frame)
        late = SPEC.window_of(frame["timestamp"].to_numpy()) >= cut
        if how == "remove":
            return frame[~late].reset_index(drop=True)
        frame = frame.copy()
        frame.loc[late, "amount"] *= 50
        frame.loc[late, "receiver"] = frame.loc[late, "receiver"].to_numpy()[::-1]
        return frame

    for how in ("remove", "change"):
        changed = {n: later(f, how) for n, f in frames.items()}
        after = bank_features(changed["bank-00"], clear_consortium(changed, KEY, SPEC), KEY, SPEC)
        np.testing.assert_array_equal(after[:early], before[:early])
    # Control: the same edits one window earlier do change some early row.
    cut = 5
    changed = {n: later(f, "change") for n, f in frames.items()}
    after = bank_features(changed["bank-00"], clear_consortium(changed, KEY, SPEC), KEY, SPEC)
    assert not np.array_equal(after[:early], before[:early])


def test_columns_follow_the_table_rows_and_get_the_fixed_transform(frames):
    frame = frames["bank-01"].sample(frac=1.0, random_state=1)  # rows in any order
    table = build_bank_table(frame, "bank-01")
    consortium = clear_consortium(frames, KEY, SPEC)
    xtable = cross_bank_table(table, frame, consortium, KEY, SPEC)
    assert xtable.x.shape == (table.x.shape[0], table.x.shape[1] + len(FEATURES))
    assert xtable.feature_names[-len(FEATURES) :] == FEATURES
    np.testing.assert_array_equal(xtable.x[:, : table.x.shape[1]], table.x)
    # Consortium moments cover the bank-local columns only; a yardstick's own moments cover
    # all: either way the cross-bank columns pass through unchanged.
    for scaler in (
        Scaler.from_moments(local_moments(table)),
        Scaler.from_moments(local_moments(xtable)),
    ):
        x, _, _ = cross_bank_scaler(scaler, xtable).transform(xtable)
        np.testing.assert_allclose(x[:, -len(FEATURES) :], xtable.x[:, -len(FEATURES) :])
    with pytest.raises(ValueError, match="do not fit"):
        with_features(table, np.zeros((3, len(FEATURES))))


def test_centralized_yardstick_keeps_each_rows_own_columns(frames, monkeypatch):
    consortium = clear_consortium(frames, KEY, SPEC)
    cross = {n: bank_features(f, consortium, KEY, SPEC) for n, f in frames.items()}
    seen = {}
    monkeypatch.setattr(
        "fedfraud.baselines.train_and_score", lambda cfg, table: seen.setdefault("t", table) and {}
    )
    centralized(RunConfig(num_banks=3), frames, cross)
    pooled = seen["t"]
    # Row by row: each pooled row carries the columns its own bank computed for it.
    key = ["timestamp", "amount"]
    by_row = {
        tuple(r): c
        for n, f in frames.items()
        for r, c in zip(table_order(f)[key].to_numpy(), cross[n], strict=True)
    }
    amount = pooled.feature_names.index("log_amount")
    ordered = pd.concat(frames.values()).sort_values("timestamp", kind="stable")
    for i, r in enumerate(ordered[key].to_numpy()[:300]):
        assert np.isclose(np.log1p(r[1]), pooled.x[i, amount], rtol=1e-5)
        np.testing.assert_array_equal(pooled.x[i, -len(FEATURES) :], by_row[tuple(r)])


def test_cross_bank_run_config_is_validated():
    assert RunConfig().cross_bank == "off"
    assert RunConfig(cross_bank="sketch").sketch_spec().shape == (32, 3, 2, 2048)
    with pytest.raises(ConfigError, match="cross-bank must be one of off, sketch"):
        RunConfig(cross_bank="on")
    with pytest.raises(ConfigError, match="not wired into the federation yet"):
        RunConfig(cross_bank="sketch+psi")
    with pytest.raises(ConfigError, match="width"):
        RunConfig(sketch_width=10)
    assert RunConfig.from_mapping({"cross-bank": "sketch"}).cross_bank == "sketch"
