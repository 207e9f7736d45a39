"""The synthetic consortium: determinism, shape, realism properties and the on-disk layout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedfraud.data import store
from fedfraud.data.features import TEST, TRAIN, temporal_split
from fedfraud.data.schema import TYPOLOGIES, validate_transactions
from fedfraud.data.synth import SPAN_H, THRESHOLD, generate_consortium, write_consortium
from fedfraud.errors import ConfigError

FRAUD_TYPOLOGIES = set(TYPOLOGIES) - {"legit"}
COLUMNS = [
    "tx_id", "bank", "sender", "receiver", "amount", "timestamp", "channel", "mcc",
    "device_new", "geo_km", "is_fraud", "typology",
]  # fmt: skip


@pytest.fixture(scope="module")
def small() -> dict[str, pd.DataFrame]:
    return generate_consortium(5, 20_000, seed=0)


@pytest.fixture(scope="module")
def medium() -> dict[str, pd.DataFrame]:
    return generate_consortium(8, 160_000, seed=3)


@pytest.fixture(scope="module")
def pooled(medium: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(medium.values(), ignore_index=True)


def _early(df: pd.DataFrame, frac: float = 0.75) -> pd.DataFrame:
    t = df["timestamp"]
    return df[t < t.min() + frac * (t.max() - t.min())]


def test_same_seed_gives_identical_frames(small: dict[str, pd.DataFrame]) -> None:
    again = generate_consortium(5, 20_000, seed=0)
    assert list(again) == list(small)
    for name in small:
        pd.testing.assert_frame_equal(again[name], small[name])


def test_other_seed_gives_other_data(small: dict[str, pd.DataFrame]) -> None:
    other = generate_consortium(5, 20_000, seed=1)
    assert any(
        len(other[n]) != len(small[n]) or not other[n]["amount"].equals(small[n]["amount"])
        for n in small
    )


def test_banks_are_keyed_by_store_names_and_rows_add_up(small: dict[str, pd.DataFrame]) -> None:
    assert list(small) == [store.bank_name(i) for i in range(5)]
    assert sum(len(df) for df in small.values()) == 20_000
    for name, df in small.items():
        assert (df["bank"] == name).all()


def test_frames_are_canonical_and_pass_validation(small: dict[str, pd.DataFrame]) -> None:
    tx_ids = np.concatenate([df["tx_id"].to_numpy() for df in small.values()])
    assert len(np.unique(tx_ids)) == len(tx_ids)
    for name, df in small.items():
        assert list(df.columns) == COLUMNS
        pd.testing.assert_frame_equal(validate_transactions(df, name), df)
        assert df["timestamp"].is_monotonic_increasing
        assert df["timestamp"].between(0, SPAN_H, inclusive="left").all()
        assert (df["amount"] >= 0).all() and (df["geo_km"] >= 0).all()
        assert df["channel"].between(0, 4).all() and df["mcc"].between(0, 9).all()
        assert set(df["typology"]) <= set(TYPOLOGIES)
        assert ((df["typology"] == "legit") == (df["is_fraud"] == 0)).all()
        assert df["sender"].dtype == np.int64 and df["receiver"].dtype == np.int64


def test_bank_sizes_are_skewed_but_no_bank_is_tiny(medium: dict[str, pd.DataFrame]) -> None:
    sizes = np.array([len(df) for df in medium.values()])
    assert sizes.max() / sizes.min() >= 2
    assert sizes.min() / sizes.sum() >= 0.03


def test_fraud_rate_of_every_bank_is_between_0_1_and_2_percent(
    medium: dict[str, pd.DataFrame],
) -> None:
    rates = np.array([df["is_fraud"].mean() for df in medium.values()])
    assert ((rates >= 0.001) & (rates <= 0.02)).all(), rates
    assert rates.max() / rates.min() > 1.5  # banks differ


def test_every_bank_has_fraud_in_its_train_and_test_split(small: dict[str, pd.DataFrame]) -> None:
    for name, df in small.items():
        split = temporal_split(df["timestamp"].to_numpy())
        y = df["is_fraud"].to_numpy()
        assert y[split == TRAIN].sum() > 0, name
        assert y[split == TEST].sum() > 0, name


def test_no_bank_sees_all_typologies_in_its_first_75_percent(
    medium: dict[str, pd.DataFrame],
) -> None:
    for name, df in medium.items():
        early = set(_early(df).query("is_fraud == 1")["typology"])
        assert len(early) < 4, (name, early)


def test_each_typology_is_missing_from_some_banks_early_period(
    medium: dict[str, pd.DataFrame],
) -> None:
    early = [set(_early(df).query("is_fraud == 1")["typology"]) for df in medium.values()]
    for typology in FRAUD_TYPOLOGIES:
        assert any(typology not in seen for seen in early), typology
        assert any(typology in seen for seen in early), typology  # someone can teach it


def test_concept_shift_a_typology_appears_only_in_some_banks_test_period(
    medium: dict[str, pd.DataFrame],
) -> None:
    shifted = []
    for name, df in medium.items():
        fraud = df[df["is_fraud"] == 1]
        test_from = df["timestamp"].iloc[int(0.8 * len(df))]
        for typology in set(fraud["typology"]):
            times = fraud.loc[fraud["typology"] == typology, "timestamp"]
            if times.min() >= _early(df)["timestamp"].max() and (times >= test_from).any():
                shifted.append((name, typology))
    assert shifted
    for name, typology in shifted:  # ...while other banks had it in training all along
        others = [_early(df) for n, df in medium.items() if n != name]
        assert any((e["typology"] == typology).any() for e in others)


def test_a_mule_receives_ring_transfers_from_senders_at_two_banks(
    small: dict[str, pd.DataFrame],
) -> None:
    rings = pd.concat(small.values()).query("typology == 'mule_ring'")
    banks_per_receiver = rings.groupby("receiver")["bank"].nunique()
    assert banks_per_receiver.max() >= 2


def test_mules_are_customer_like_and_forward_money(pooled: pd.DataFrame) -> None:
    rings = pooled[pooled["typology"] == "mule_ring"]
    mules = set(rings["receiver"]) & set(pooled["sender"])
    assert mules
    legit = pooled[pooled["is_fraud"] == 0]
    # Mules also pay like ordinary customers, and they send money on (mule -> mule / cash).
    assert legit["sender"].isin(mules).any()
    assert rings["sender"].isin(mules).sum() > 0.2 * len(rings)
    # Their distinct transfer senders exceed those of a typical customer payee.
    transfers = pooled[pooled["channel"] == 2]
    fan_in = transfers.groupby("receiver")["sender"].nunique()
    customers = fan_in[fan_in.index.isin(set(pooled["sender"]))]
    assert customers[customers.index.isin(mules)].median() > customers.median()


def test_typologies_leave_their_documented_signals(pooled: pd.DataFrame) -> None:
    legit = pooled[pooled["is_fraud"] == 0]
    card = pooled[pooled["typology"] == "card_testing"]
    assert (card["channel"] == 1).all() and (card["amount"] < 5).mean() > 0.7
    gaps = card.groupby("sender")["timestamp"].diff().dropna()
    assert gaps.median() < 0.25  # minutes apart
    ato = pooled[pooled["typology"] == "account_takeover"]
    assert (ato["channel"] == 2).all()
    assert ato["device_new"].mean() > 0.5 > 20 * legit["device_new"].mean()
    assert ato["amount"].median() > 3 * legit.loc[legit["channel"] == 2, "amount"].median()
    far = pooled["geo_km"] > 300
    assert far[ato.index].mean() > 0.3 > 10 * far[legit.index].mean()
    structuring = pooled[pooled["typology"] == "structuring"]
    assert structuring["amount"].between(0.9 * THRESHOLD, THRESHOLD, inclusive="left").all()
    per_day = structuring.groupby(["sender", structuring["timestamp"] // 24]).size()
    assert per_day.max() >= 3


def test_hard_negatives_exist_for_every_single_signal(pooled: pd.DataFrame) -> None:
    legit = pooled[pooled["is_fraud"] == 0]
    assert ((legit["channel"] == 1) & (legit["amount"] < 5)).sum() > 100  # small online
    assert legit["device_new"].sum() > 100  # new phones
    assert (legit["geo_km"] > 300).sum() > 100  # travel
    assert legit["amount"].between(0.9 * THRESHOLD, THRESHOLD, inclusive="left").sum() > 20
    assert (legit["amount"] > 2_000).sum() > 100  # large transfers


def test_write_consortium_writes_banks_and_a_matching_manifest(tmp_path) -> None:
    manifest = write_consortium(tmp_path / "out", 3, 6_000, seed=7)
    on_disk = json.loads((tmp_path / "out" / store.MANIFEST_FILE).read_text())
    assert on_disk == manifest
    assert manifest["generator"] == "fedfraud.synth" and manifest["seed"] == 7
    assert manifest["num_banks"] == 3 and manifest["transactions"] == 6_000
    assert store.list_banks(tmp_path / "out") == ["bank-00", "bank-01", "bank-02"]
    for entry in manifest["banks"]:
        df = store.read_bank(tmp_path / "out" / entry["bank"])
        assert len(df) == entry["transactions"] and int(df["is_fraud"].sum()) == entry["fraud"]
    assert sum(e["transactions"] for e in manifest["banks"]) == 6_000
    assert set(manifest["typology_schedule"]["bank-00"]) == FRAUD_TYPOLOGIES


def test_write_consortium_refuses_a_folder_with_other_banks(tmp_path) -> None:
    write_consortium(tmp_path, 3, 6_000)
    write_consortium(tmp_path, 3, 6_000, seed=1)  # same banks: overwritten
    with pytest.raises(ConfigError, match="bank-02"):
        write_consortium(tmp_path, 2, 4_000)  # bank-02 would linger as a third bank
    with pytest.raises(ConfigError, match="is a file"):
        write_consortium(tmp_path / store.MANIFEST_FILE, 2, 4_000)


@pytest.mark.parametrize(
    ("num_banks", "transactions", "seed", "match"),
    [
        (0, 10_000, 0, "num_banks"),
        (101, 1_000_000, 0, "num_banks"),
        (2.5, 10_000, 0, "num_banks"),
        (True, 10_000, 0, "num_banks"),
        (5, 9_999, 0, "at least 10000"),
        (1, 0, 0, "too small"),
        (5, 50_000, -1, "seed"),
    ],
)
def test_bad_arguments_raise_config_error(num_banks, transactions, seed, match, tmp_path) -> None:
    with pytest.raises(ConfigError, match=match):
        generate_consortium(num_banks, transactions, seed)
    with pytest.raises(ConfigError, match=match):
        write_consortium(tmp_path, num_banks, transactions, seed)
    assert not list(tmp_path.iterdir())  # nothing written
