"""Run folders for scoring tests: a hand-made one (fast, any architecture) and a real
`simulate` run (module-scoped where used)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedfraud.config import RunConfig
from fedfraud.data.features import build_bank_table
from fedfraud.data.scaling import Scaler, local_moments
from fedfraud.data.store import write_banks
from fedfraud.run_model import save_run_model
from fedfraud.train import build_model, make_inputs, train_local
from tests.conftest import random_bank


def bank_frame(seed: int = 3, n: int = 1500, extra: bool = False) -> pd.DataFrame:
    """One bank's transactions, time-sorted; optionally with an extra signed feature x_v1."""
    frame = random_bank(np.random.default_rng(seed), n, 1000)
    if extra:
        frame["x_v1"] = np.random.default_rng(seed).normal(0, 50, len(frame))
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def make_run(
    run_dir: Path, frame: pd.DataFrame, model: str = "mlp", conv: str = "sage", epochs: int = 2
) -> Path:
    """model.pt + model.json as `simulate` writes them, trained briefly on one bank."""
    config = RunConfig(model=model, gnn_conv=conv, hidden=16, batch_size=256)
    table = build_bank_table(frame, "bank-00", with_graph=model == "gnn")
    scaler = Scaler.from_moments(local_moments(table))
    net = build_model(config, table)
    train_local(net, make_inputs(model, table, scaler), config, epochs=epochs)
    save_run_model(run_dir, net, config, table, scaler)
    return run_dir


def write_bank(root: Path, frame: pd.DataFrame, name: str = "bank-00") -> Path:
    write_banks({name: frame}, root)
    return root / name


@pytest.fixture
def mlp_setup(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    """(run folder, bank folder holding the first 90% as history, the newest 10%)."""
    frame = bank_frame()
    cut = int(len(frame) * 0.9)
    run = make_run(tmp_path / "run", frame)
    return run, write_bank(tmp_path / "banks", frame.iloc[:cut]), frame.iloc[cut:]
