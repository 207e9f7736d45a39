"""Splitting one table into banks: deterministic, exhaustive, account-coherent, skewed on demand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedfraud.data.partition import partition, prepare_banks
from fedfraud.data.store import MANIFEST_FILE, list_banks, read_bank
from fedfraud.errors import DataError


def transactions(
    n: int = 6000, accounts: int | None = 900, fraud_rate: float = 0.03, seed: int = 1
):
    """A canonical table; `row_id` lets tests check every row lands exactly once."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 50.0, n),
            "timestamp": rng.uniform(0, 24 * 60, n),
            "is_fraud": (rng.random(n) < fraud_rate).astype(np.int8),
            "row_id": np.arange(n),
        }
    )
    if accounts:
        df["sender"] = [f"C{i}" for i in rng.integers(0, accounts, n)]
        df["receiver"] = [f"M{i}" for i in rng.integers(0, accounts, n)]
    return df


def fraud_rate_cv(frames: dict[str, pd.DataFrame]) -> float:
    rates = np.array([f["is_fraud"].mean() for f in frames.values()])
    return float(rates.std() / rates.mean())


def size_cv(frames: dict[str, pd.DataFrame]) -> float:
    sizes = np.array([len(f) for f in frames.values()], dtype=float)
    return float(sizes.std() / sizes.mean())


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_same_seed_same_split_and_other_seed_differs(scheme: str) -> None:
    df = transactions()
    a = partition(df, 4, scheme, alpha=0.5, seed=7)
    b = partition(df, 4, scheme, alpha=0.5, seed=7)
    c = partition(df, 4, scheme, alpha=0.5, seed=8)
    assert list(a) == ["bank-00", "bank-01", "bank-02", "bank-03"]
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert any(set(a[n]["row_id"]) != set(c[n]["row_id"]) for n in a)


def test_split_ignores_the_tables_row_order() -> None:
    df = transactions()
    shuffled = df.sample(frac=1.0, random_state=3)
    a = partition(df, 5, "dirichlet", alpha=0.3, seed=2)
    b = partition(shuffled, 5, "dirichlet", alpha=0.3, seed=2)
    assert all(set(a[n]["row_id"]) == set(b[n]["row_id"]) for n in a)


@pytest.mark.parametrize("accounts", [900, None])
@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_every_row_lands_in_exactly_one_bank(scheme: str, accounts: int | None) -> None:
    df = transactions(accounts=accounts)
    frames = partition(df, 5, scheme, alpha=0.2, seed=0)
    ids = np.concatenate([f["row_id"].to_numpy() for f in frames.values()])
    assert len(ids) == len(df) and set(ids) == set(df["row_id"])


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_no_sender_account_is_split_across_banks(scheme: str) -> None:
    frames = partition(transactions(), 6, scheme, alpha=0.1, seed=3)
    owners = pd.concat(frames.values()).groupby("sender")["bank"].nunique()
    assert owners.max() == 1


def test_banks_are_labelled_and_sorted_by_time() -> None:
    frames = partition(transactions(), 3, "dirichlet", seed=0)
    for name, frame in frames.items():
        assert (frame["bank"] == name).all()
        assert frame["timestamp"].is_monotonic_increasing
        assert frame.index.equals(pd.RangeIndex(len(frame)))


@pytest.mark.parametrize("accounts", [900, None])
def test_iid_banks_are_roughly_equal(accounts: int | None) -> None:
    frames = partition(transactions(accounts=accounts), 5, "iid", seed=0)
    sizes = [len(f) for f in frames.values()]
    assert max(sizes) / min(sizes) < 1.15
    assert fraud_rate_cv(frames) < 0.3


def test_small_alpha_is_more_skewed_than_large_alpha() -> None:
    df = transactions(n=20_000, accounts=3000)
    seeds = range(5)
    small = [partition(df, 5, "dirichlet", alpha=0.1, seed=s) for s in seeds]
    large = [partition(df, 5, "dirichlet", alpha=100.0, seed=s) for s in seeds]
    assert np.mean([fraud_rate_cv(f) for f in small]) > 3 * np.mean(
        [fraud_rate_cv(f) for f in large]
    )
    assert np.mean([size_cv(f) for f in small]) > 3 * np.mean([size_cv(f) for f in large])


@pytest.mark.parametrize("alpha", [0.01, 0.1])
def test_every_bank_gets_fraud_and_minimum_rows_even_when_very_skewed(alpha: float) -> None:
    for seed in range(10):
        frames = partition(transactions(), 8, "dirichlet", alpha=alpha, seed=seed, min_rows=40)
        assert all(f["is_fraud"].sum() >= 1 and len(f) >= 40 for f in frames.values())


def test_one_bank_gets_everything() -> None:
    df = transactions()
    (only,) = partition(df, 1, "dirichlet", seed=0).values()
    assert len(only) == len(df)


def test_too_few_fraud_rows_for_the_banks_is_a_data_error() -> None:
    df = transactions(n=800, accounts=None)
    df["is_fraud"] = 0
    df.loc[[5, 50, 500], "is_fraud"] = 1
    with pytest.raises(DataError, match=r"only 3 fraud rows.*5 banks.*at most 3 banks"):
        partition(df, 5, "iid")


def test_fraud_counted_per_sender_account() -> None:
    df = transactions(n=800, accounts=50)
    df["is_fraud"] = 0
    df.loc[df["sender"] == df["sender"].iloc[0], "is_fraud"] = 1  # all fraud from one customer
    with pytest.raises(DataError, match="in 1 sender accounts"):
        partition(df, 2, "iid")


def test_too_small_table_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"too few for 10 banks.*at most 6 banks"):
        partition(transactions(n=300, accounts=None, fraud_rate=0.2), 10, "iid")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"num_banks": 0}, "whole number >= 1"),
        ({"num_banks": 2, "scheme": "pathological"}, "iid, dirichlet"),
        ({"num_banks": 2, "scheme": "dirichlet", "alpha": 0.0}, "alpha must be positive"),
        ({"num_banks": 2, "scheme": "dirichlet", "alpha": float("nan")}, "positive number"),
    ],
)
def test_bad_partition_arguments_are_data_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(DataError, match=fragment):
        partition(transactions(n=500), **kwargs)


def test_prepare_banks_writes_the_consortium_layout(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    transactions(n=3000).drop(columns="row_id").to_csv(source, index=False)
    out = tmp_path / "banks"
    manifest = prepare_banks(source, out, "csv", None, 4, "dirichlet", 0.7, 5)
    assert list_banks(out) == ["bank-00", "bank-01", "bank-02", "bank-03"]
    assert manifest == json.loads((out / MANIFEST_FILE).read_text())
    meta = {k: manifest[k] for k in ("format", "scheme", "alpha", "seed", "partition_unit")}
    assert meta == {"format": "csv", "scheme": "dirichlet", "alpha": 0.7, "seed": 5,
                    "partition_unit": "sender"}  # fmt: skip
    assert manifest["source"] == str(source.resolve())
    assert sum(b["transactions"] for b in manifest["banks"]) == 3000
    bank = read_bank(out / "bank-02")
    assert (bank["bank"] == "bank-02").all() and bank["is_fraud"].sum() >= 1


def test_prepare_banks_removes_banks_of_an_earlier_larger_split(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    transactions(n=3000, accounts=None).to_csv(source, index=False)
    out = tmp_path / "banks"
    prepare_banks(source, out, num_banks=5, scheme="iid")
    manifest = prepare_banks(source, out, num_banks=3, scheme="iid", mapping={"extra": ["row_id"]})
    assert list_banks(out) == ["bank-00", "bank-01", "bank-02"]
    assert manifest["mapping"] == {"extra": ["row_id"]} and manifest["partition_unit"] == "row"
