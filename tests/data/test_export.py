"""`fedfraud data export`: synthetic data in PaySim/ULB layout, loaded back by the presets and
split into banks that build model tables (export -> load -> banks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedfraud.cli import app
from fedfraud.data.export import export_synthetic, paysim_table
from fedfraud.data.features import TRAIN, build_bank_table
from fedfraud.data.loaders import load_table
from fedfraud.data.partition import prepare_banks
from fedfraud.data.schema import extra_feature_columns, has_accounts
from fedfraud.data.store import list_banks, read_bank
from fedfraud.data.synth import generate_consortium
from fedfraud.errors import ConfigError

BANKS, ROWS = 3, 9000


@pytest.mark.parametrize("fmt", ["paysim", "ulb"])
def test_export_loads_back_and_splits_into_model_ready_banks(tmp_path, fmt):
    summary = export_synthetic(fmt, tmp_path / f"{fmt}.csv", BANKS, ROWS, seed=4)
    frames = generate_consortium(BANKS, ROWS, seed=4)
    fraud = sum(int(f["is_fraud"].sum()) for f in frames.values())
    assert summary["rows"] == ROWS and summary["fraud"] == fraud
    df = load_table(tmp_path / f"{fmt}.csv")
    assert df.attrs["format"] == fmt and len(df) == ROWS and int(df["is_fraud"].sum()) == fraud
    if fmt == "ulb":
        assert extra_feature_columns(df.columns) == sorted(f"x_v{i}" for i in range(1, 29))
        assert not has_accounts(df)
    else:
        assert has_accounts(df) and "x_oldbalanceorg" in df.columns
    prepare_banks(tmp_path / f"{fmt}.csv", tmp_path / "banks", num_banks=BANKS, scheme="iid")
    names = list_banks(tmp_path / "banks")
    assert len(names) == BANKS
    for name in names:
        table = build_bank_table(read_bank(tmp_path / "banks" / name), name)
        assert np.isfinite(table.x).all() and table.y[table.mask(TRAIN)].sum() > 0
        assert (table.node_x is not None) == (fmt == "paysim")


def test_paysim_balances_follow_each_accounts_transactions():
    table = paysim_table(generate_consortium(BANKS, ROWS, seed=1), seed=1)
    assert (table["step"] >= 1).all() and table["step"].is_monotonic_increasing
    np.testing.assert_allclose(
        table["newbalanceOrig"], table["oldbalanceOrg"] - table["amount"], atol=0.011
    )
    np.testing.assert_allclose(
        table["newbalanceDest"], (table["oldbalanceDest"] + table["amount"]), atol=0.011
    )
    # An account that only sends: its next old balance is its previous new balance.
    nxt = table.groupby("nameOrig")["oldbalanceOrg"].shift(-1)
    only_sends = ~table["nameOrig"].isin(set(table["nameDest"]))
    both = nxt.notna() & only_sends
    assert both.sum() > 100
    np.testing.assert_allclose(nxt[both], table["newbalanceOrig"][both], atol=0.011)


def test_cli_export_writes_the_file_and_refuses_bad_formats(tmp_path):
    runner = CliRunner()
    out = tmp_path / "p.parquet"
    args = ["data", "export", "--format", "paysim", "--out", str(out)]
    result = runner.invoke(app, [*args, "--banks", "3", "--transactions", "6000"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(out)) == 6000
    bad = runner.invoke(app, ["data", "export", "--format", "x", "--out", str(tmp_path / "a.csv")])
    # fedfraud.cli.main turns this FedfraudError into one line and exit code 2.
    assert isinstance(bad.exception, ConfigError) and "paysim, ulb" in str(bad.exception)
    with pytest.raises(ConfigError, match="folder"):
        export_synthetic("ulb", tmp_path, 3, 6000)
