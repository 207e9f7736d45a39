"""The GNN is inductive in time: no row's score uses an edge of a later split."""

import numpy as np
import pandas as pd
import torch

from fedfraud.config import RunConfig
from fedfraud.data.features import TEST, TRAIN, VAL, build_bank_table
from fedfraud.data.scaling import Scaler, local_moments
from fedfraud.train import build_model, make_inputs
from tests.conftest import random_bank


def gnn_scores(frame: pd.DataFrame, scaler: Scaler | None = None) -> tuple[np.ndarray, Scaler]:
    """Logits of every row (time order) from a GNN with the run's fixed initialisation."""
    table = build_bank_table(frame, "b", split_column="_split")
    scaler = scaler or Scaler.from_moments(local_moments(table))
    net = build_model(RunConfig(model="gnn", hidden=16), table)
    with torch.no_grad():
        return net(make_inputs("gnn", table, scaler).graph).numpy(), scaler


def bank_with_hub(split: int, timestamp: float) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """A bank (70/10/20 split by time) and 50 extra transactions of `split` at `timestamp`,
    all into one account, between accounts that exist since training."""
    frame = random_bank(np.random.default_rng(0), 3000, 0)
    n = len(frame)
    frame["_split"] = np.repeat([TRAIN, VAL, TEST], [n * 7 // 10, n // 10, n - n * 8 // 10])
    accounts = frame["sender"].iloc[:50].to_numpy()
    hub = frame.iloc[:50].assign(
        sender=accounts, receiver=accounts[0], timestamp=timestamp, _split=split
    )
    return frame, pd.concat([frame, hub], ignore_index=True), n


def test_test_period_edges_change_no_rows_score():
    frame, with_hub, n = bank_with_hub(TEST, timestamp=1e6)  # after every row
    base, scaler = gnn_scores(frame)
    more, _ = gnn_scores(with_hub, scaler)
    # A whole-table graph would pass the hub's messages to the earlier rows' accounts.
    np.testing.assert_array_equal(more[:n], base)


def test_validation_period_edges_reach_no_training_or_validation_row():
    probe, _, n = bank_with_hub(VAL, 0.0)
    last_val = float(probe["timestamp"].iloc[n * 8 // 10 - 1])
    frame, with_hub, n = bank_with_hub(VAL, timestamp=last_val)  # sorts after every val row
    base, scaler = gnn_scores(frame)
    more, _ = gnn_scores(with_hub, scaler)
    old = frame["_split"].to_numpy() != TEST
    np.testing.assert_array_equal(more[: old.sum()], base[old])
