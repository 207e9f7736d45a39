"""User mistakes at the command line: one line naming the problem, exit code 2, no traceback."""

import pytest

from tests.conftest import assert_user_error, fedfraud, random_bank


@pytest.fixture
def ulb_like_banks(tmp_path):
    import numpy as np

    from fedfraud.data.store import write_banks

    rng = np.random.default_rng(0)
    write_banks(
        {f"bank-{i:02d}": random_bank(rng, 600, 0, accounts=False) for i in range(3)},
        tmp_path / "ulb",
    )
    return tmp_path / "ulb"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (
            ["simulate", "--out", "r", "--secure-agg", "rot13"],
            "unknown secure aggregation backend 'rot13'",
        ),
        (["simulate", "--out", "r", "--model", "xgb"], "model must be one of mlp, gnn"),
        (
            ["simulate", "--out", "r", "--data", "missing-dir", "--format", "banks"],
            "does not exist",
        ),
        (["simulate", "--out", "r", "--config", "nope.toml"], "config file nope.toml not found"),
        (["simulate", "--out", "r", "--rounds", "0"], "num-rounds must be at least 1"),
        (["report", "no-such-run"], "results.json not found"),
        (
            ["simulate", "--out", "r", "--data", "x.csv", "--format", "synthetic-typo"],
            "format must be one of",
        ),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, args, fragment):
    assert_user_error(fedfraud(*args, cwd=tmp_path), fragment)


def test_gnn_on_data_without_accounts_says_use_mlp(tmp_path, ulb_like_banks):
    proc = fedfraud(
        "simulate",
        "--out",
        "r",
        "--data",
        str(ulb_like_banks),
        "--banks",
        "3",
        "--model",
        "gnn",
        cwd=tmp_path,
    )
    assert_user_error(proc, "use --model mlp")


def test_bank_without_fraud_in_training_split_is_named(tmp_path, small_consortium):
    import pandas as pd

    path = small_consortium / "bank-01" / "transactions.parquet"
    df = pd.read_parquet(path)
    df.assign(is_fraud=0).to_parquet(path)
    proc = fedfraud(
        "simulate", "--out", "r", "--data", str(small_consortium), "--banks", "3", cwd=tmp_path
    )
    assert_user_error(proc, "training split has no fraud rows")
    assert "bank-01" in proc.stderr


def test_help_lists_the_commands(tmp_path):
    proc = fedfraud("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for command in ("simulate", "data", "keys", "report"):
        assert command in proc.stdout
