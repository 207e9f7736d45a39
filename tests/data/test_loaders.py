"""Loaders: presets and column mappings land in the canonical schema; bad input is a DataError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedfraud.data.loaders import FORMATS, extra_name, load_table, read_mapping
from fedfraud.data.schema import CHANNELS, MCC_BUCKETS, extra_feature_columns, has_accounts
from fedfraud.errors import DataError

PAYSIM_TYPES = ("PAYMENT", "DEBIT", "TRANSFER", "CASH_OUT", "CASH_IN")


def write_paysim(path: Path, n: int = 60, seed: int = 0) -> pd.DataFrame:
    """A PaySim-shaped CSV (same columns and value kinds as the public file)."""
    rng = np.random.default_rng(seed)
    raw = pd.DataFrame(
        {
            "step": np.sort(rng.integers(1, 744, n)),
            "type": [PAYSIM_TYPES[i % 5] for i in range(n)],
            "amount": rng.gamma(2.0, 500.0, n).round(2),
            "nameOrig": [f"C{1000 + i % 17}" for i in range(n)],
            "oldbalanceOrg": rng.uniform(0, 1e5, n).round(2),
            "newbalanceOrig": rng.uniform(0, 1e5, n).round(2),
            "nameDest": [f"M{2000 + i % 23}" for i in range(n)],
            "oldbalanceDest": rng.uniform(0, 1e5, n).round(2),
            "newbalanceDest": rng.uniform(0, 1e5, n).round(2),
            "isFraud": (np.arange(n) % 10 == 3).astype(int),
            "isFlaggedFraud": 0,
        }
    )
    raw.to_csv(path, index=False)
    return raw


def write_ulb(path: Path, n: int = 50, seed: int = 0) -> pd.DataFrame:
    """A creditcard.csv-shaped file: Time (seconds), V1..V28, Amount, Class."""
    rng = np.random.default_rng(seed)
    raw = pd.DataFrame({"Time": np.sort(rng.uniform(0, 172_800, n)).round(0)})
    for i in range(1, 29):
        raw[f"V{i}"] = rng.normal(size=n)
    raw["Amount"] = rng.gamma(1.5, 60.0, n).round(2)
    raw["Class"] = (np.arange(n) % 7 == 0).astype(int)
    raw.to_csv(path, index=False)
    return raw


def write_generic(path: Path, n: int = 30) -> pd.DataFrame:
    """A bank export with its own column names, needing a mapping."""
    raw = pd.DataFrame(
        {
            "ts": np.arange(n, dtype=float) * 0.5,
            "amt": np.linspace(1.0, 300.0, n).round(2),
            "label": (np.arange(n) % 5 == 0).astype(int),
            "from_acct": [f"A{i % 6}" for i in range(n)],
            "to_acct": [f"B{i % 4}" for i in range(n)],
            "colA": np.arange(n, dtype=float),
            "Col B": -np.arange(n, dtype=float),
            "ignored": "x",
        }
    )
    raw.to_csv(path, index=False)
    return raw


GENERIC_MAPPING = {
    "timestamp": "ts",
    "amount": "amt",
    "is_fraud": "label",
    "sender": "from_acct",
    "receiver": "to_acct",
    "extra": ["colA", "Col B"],
}


def test_paysim_round_trip_maps_every_column(tmp_path: Path) -> None:
    raw = write_paysim(tmp_path / "paysim.csv")
    df = load_table(tmp_path / "paysim.csv")
    assert df.attrs["format"] == "paysim"
    assert "isFlaggedFraud" not in df.columns and "x_isflaggedfraud" not in df.columns
    np.testing.assert_array_equal(df["timestamp"], raw["step"].astype(float))
    np.testing.assert_allclose(df["amount"], raw["amount"])
    np.testing.assert_array_equal(df["is_fraud"], raw["isFraud"])
    assert list(df["sender"]) == list(raw["nameOrig"])
    assert list(df["receiver"]) == list(raw["nameDest"])
    np.testing.assert_allclose(df["x_oldbalanceorg"], raw["oldbalanceOrg"])
    np.testing.assert_allclose(df["x_newbalancedest"], raw["newbalanceDest"])
    expected = {"PAYMENT": "card_not_present", "DEBIT": "card_present", "TRANSFER": "transfer",
                "CASH_OUT": "cash", "CASH_IN": "other"}  # fmt: skip
    got = {t: CHANNELS[c] for t, c in zip(raw["type"], df["channel"], strict=True)}
    assert got == expected
    assert has_accounts(df)


def test_ulb_round_trip_converts_seconds_to_hours(tmp_path: Path) -> None:
    raw = write_ulb(tmp_path / "creditcard.csv")
    df = load_table(tmp_path / "creditcard.csv")
    assert df.attrs["format"] == "ulb"
    np.testing.assert_allclose(df["timestamp"], raw["Time"] / 3600.0)
    np.testing.assert_allclose(df["amount"], raw["Amount"])
    np.testing.assert_array_equal(df["is_fraud"], raw["Class"])
    assert extra_feature_columns(df.columns) == sorted(f"x_v{i}" for i in range(1, 29))
    np.testing.assert_allclose(df["x_v17"], raw["V17"])
    assert not has_accounts(df)


def test_explicit_preset_on_parquet(tmp_path: Path) -> None:
    raw = write_paysim(tmp_path / "p.csv")
    raw.to_parquet(tmp_path / "export.data")
    df = load_table(tmp_path / "export.data", fmt="paysim")
    assert len(df) == len(raw) and df["is_fraud"].sum() == raw["isFraud"].sum()


@pytest.mark.parametrize("suffix", ["json", "toml"])
def test_generic_csv_with_mapping_file(tmp_path: Path, suffix: str) -> None:
    raw = write_generic(tmp_path / "export.csv")
    mapping = tmp_path / f"map.{suffix}"
    if suffix == "json":
        mapping.write_text(json.dumps(GENERIC_MAPPING))
    else:
        mapping.write_text(
            'extra = ["colA", "Col B"]\ntimestamp = "ts"\namount = "amt"\nis_fraud = "label"\n'
            'sender = "from_acct"\nreceiver = "to_acct"\n'
        )
    df = load_table(tmp_path / "export.csv", mapping=mapping)
    np.testing.assert_allclose(df["amount"], raw["amt"])
    np.testing.assert_allclose(df["timestamp"], raw["ts"])
    assert list(df["sender"]) == list(raw["from_acct"])
    np.testing.assert_allclose(df["x_cola"], raw["colA"])
    np.testing.assert_allclose(df["x_col_b"], raw["Col B"])
    assert "ignored" not in df.columns
    assert df["channel"].eq(CHANNELS.index("other")).all()


def test_mapping_dict_equals_mapping_file(tmp_path: Path) -> None:
    write_generic(tmp_path / "export.csv")
    (tmp_path / "map.json").write_text(json.dumps(GENERIC_MAPPING))
    a = load_table(tmp_path / "export.csv", mapping=GENERIC_MAPPING)
    b = load_table(tmp_path / "export.csv", mapping=tmp_path / "map.json")
    pd.testing.assert_frame_equal(a, b)


def test_canonical_parquet_round_trip(tmp_path: Path) -> None:
    canonical = pd.DataFrame(
        {
            "amount": [10.0, 20.0, 30.0],
            "timestamp": [0.0, 1.5, 3.0],
            "is_fraud": [0, 1, 0],
            "sender": ["a", "b", "a"],
            "receiver": ["c", "c", "d"],
            "channel": [0, 2, 3],
            "mcc": [1, 5, 9],
            "device_new": [0, 1, 0],
            "geo_km": [0.0, 12.5, 3.0],
            "x_score": [0.1, 0.2, 0.3],
        }
    )
    canonical.to_parquet(tmp_path / "bank.parquet")
    df = load_table(tmp_path / "bank.parquet")
    assert df.attrs["format"] == "parquet"
    pd.testing.assert_frame_equal(
        df[canonical.columns].astype(canonical.dtypes.to_dict()), canonical
    )


def test_iso_timestamps_become_hours_since_first(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "when": ["2024-03-01T12:00:00Z", "2024-03-01 10:00:00", "2024-03-02T10:30:00"],
            "amount": [1.0, 2.0, 3.0],
            "is_fraud": [0, 1, 0],
        }
    ).to_csv(tmp_path / "iso.csv", index=False)
    df = load_table(tmp_path / "iso.csv", mapping={"timestamp": "when"})
    np.testing.assert_allclose(df["timestamp"], [0.0, 2.0, 24.5])  # sorted by time
    np.testing.assert_allclose(df["amount"], [2.0, 1.0, 3.0])


def test_parquet_datetime_column(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "timestamp": pd.to_datetime(["2024-01-01 00:00", "2024-01-01 06:00"]),
            "amount": [5.0, 6.0],
            "is_fraud": [1, 0],
        }
    ).to_parquet(tmp_path / "dt.parquet")
    np.testing.assert_allclose(load_table(tmp_path / "dt.parquet")["timestamp"], [0.0, 6.0])


def test_string_channels_and_mcc_map_by_name(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "timestamp": range(6),
            "amount": 1.0,
            "is_fraud": [1, 0, 0, 0, 0, 0],
            "channel": ["online", "ATM", "Card Present", "teleport", None, "2"],
            "mcc": ["Grocery", "5411", "7995", "casino", "1234", None],
        }
    ).to_csv(tmp_path / "cats.csv", index=False)
    df = load_table(tmp_path / "cats.csv")
    assert [CHANNELS[c] for c in df["channel"]] == [
        "card_not_present", "cash", "card_present", "other", "other", "transfer",
    ]  # fmt: skip
    assert [MCC_BUCKETS[c] for c in df["mcc"]] == [
        "grocery", "grocery", "gambling", "gambling", "unknown", "unknown",
    ]  # fmt: skip


def test_semicolon_csv_bool_labels_and_case_insensitive_names(tmp_path: Path) -> None:
    (tmp_path / "eu.csv").write_text(
        "Timestamp;Amount;IS_FRAUD;device_new\n1;10.5;true;yes\n2;3.0;false;no\n"
    )
    df = load_table(tmp_path / "eu.csv")
    assert list(df["is_fraud"]) == [1, 0] and list(df["device_new"]) == [1, 0]
    np.testing.assert_allclose(df["amount"], [10.5, 3.0])


def test_extra_name_slugs() -> None:
    assert extra_name("oldbalanceOrg") == "x_oldbalanceorg"
    assert extra_name(" Col B ") == "x_col_b"


def test_empty_mapping_string_means_none() -> None:
    assert read_mapping("") == {} and read_mapping(None) == {}


# --- bad input: every case is a DataError whose message names the culprit -----------------


def _csv(tmp_path: Path, text: str, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = "timestamp,amount,is_fraud\n1,10,0\n2,20,1\n"


def case_missing_file(tmp: Path):
    return tmp / "nope.csv", {}, ["nope.csv", "not found"]


def case_directory(tmp: Path):
    (tmp / "folder.csv").mkdir()
    return tmp / "folder.csv", {}, ["folder.csv", "directory"]


def case_zero_bytes(tmp: Path):
    return _csv(tmp, "", "zero.csv"), {}, ["zero.csv", "empty"]


def case_header_only(tmp: Path):
    return _csv(tmp, "timestamp,amount,is_fraud\n", "head.csv"), {}, ["head.csv", "no rows"]


def case_blank_lines(tmp: Path):
    return _csv(tmp, "\n\n\n", "blank.csv"), {}, ["blank.csv", "no CSV header"]


def case_corrupt_parquet(tmp: Path):
    path = tmp / "broken.parquet"
    path.write_bytes(b"PAR1" + b"\x13garbage" * 20)
    return path, {}, ["broken.parquet", "Parquet"]


def case_truncated_parquet(tmp: Path):
    pd.DataFrame({"timestamp": [1.0], "amount": [1.0], "is_fraud": [1]}).to_parquet(tmp / "t.pq")
    data = (tmp / "t.pq").read_bytes()
    (tmp / "trunc.parquet").write_bytes(data[: len(data) // 2])
    return tmp / "trunc.parquet", {}, ["trunc.parquet", "Parquet"]


def case_binary_garbage(tmp: Path):
    path = tmp / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 8)
    return path, {}, ["garbage.csv", "binary"]


def case_text_not_a_table(tmp: Path):
    path = _csv(tmp, "<html><body>Session expired</body></html>\n", "download.csv")
    return path, {}, ["download.csv", "does not look like a table"]


def case_parquet_named_csv_with_format_csv(tmp: Path):
    pd.DataFrame({"timestamp": [1.0], "amount": [1.0], "is_fraud": [1]}).to_parquet(tmp / "a.csv")
    return tmp / "a.csv", {"fmt": "csv"}, ["a.csv", "--format parquet"]


def case_missing_label_column(tmp: Path):
    path = _csv(tmp, "timestamp,amount,fraud_flag\n1,2,0\n", "nolabel.csv")
    return path, {}, ["nolabel.csv", "is_fraud", "fraud_flag"]


def case_mapping_names_absent_column(tmp: Path):
    return (
        _csv(tmp, GOOD),
        {"mapping": {"is_fraud": "lbl"}},
        ["'lbl'", "timestamp, amount, is_fraud"],
    )


def case_non_numeric_amount(tmp: Path):
    path = _csv(tmp, "ts,amt,is_fraud\n1,10,0\n2,ten,1\n")
    return path, {"mapping": {"timestamp": "ts", "amount": "amt"}}, ["'amt'", "'ten'"]


def case_nan_labels(tmp: Path):
    return _csv(tmp, "timestamp,amount,is_fraud\n1,1,\n2,2,1\n"), {}, ["'is_fraud'", "1 empty"]


def case_labels_not_binary(tmp: Path):
    path = _csv(tmp, "timestamp,amount,y\n1,1,2\n2,2,1\n")
    return path, {"mapping": {"is_fraud": "y"}}, ["'y'", "0 (legit) and 1"]


def case_no_fraud_rows(tmp: Path):
    path = _csv(tmp, "timestamp,amount,is_fraud\n1,1,0\n2,2,0\n", "clean.csv")
    return path, {}, ["clean.csv", "no fraud rows"]


def case_bad_json_mapping(tmp: Path):
    (tmp / "m.json").write_text('{"amount": "amt",}')
    return _csv(tmp, GOOD), {"mapping": tmp / "m.json"}, ["m.json", "JSON"]


def case_bad_toml_mapping(tmp: Path):
    (tmp / "m.toml").write_text("amount = amt\n")
    return _csv(tmp, GOOD), {"mapping": tmp / "m.toml"}, ["m.toml", "TOML"]


def case_missing_mapping_file(tmp: Path):
    return _csv(tmp, GOOD), {"mapping": tmp / "nomap.json"}, ["nomap.json", "not found"]


def case_unknown_canonical_target(tmp: Path):
    return _csv(tmp, GOOD), {"mapping": {"amout": "amt"}}, ["'amout'", "'amount'"]


def case_reversed_mapping(tmp: Path):
    return _csv(tmp, GOOD), {"mapping": {"amt": "amount"}}, ["'amt'", "reversed"]


def case_unknown_format(tmp: Path):
    return _csv(tmp, GOOD), {"fmt": "xlsx"}, ["'xlsx'", ", ".join(FORMATS)]


def case_wrong_preset(tmp: Path):
    return _csv(tmp, GOOD, "mine.csv"), {"fmt": "paysim"}, ["mine.csv", "nameOrig"]


def case_bad_timestamp(tmp: Path):
    path = _csv(tmp, "when,amount,is_fraud\n2024-01-01,1,0\nyesterday,2,1\n")
    return path, {"mapping": {"timestamp": "when"}}, ["'when'", "'yesterday'"]


def case_empty_account_ids(tmp: Path):
    path = _csv(tmp, "timestamp,amount,is_fraud,payer\n1,1,0,a\n2,2,1,\n")
    return path, {"mapping": {"sender": "payer"}}, ["'payer'", "empty account"]


def case_negative_amount(tmp: Path):
    return _csv(tmp, "timestamp,amount,is_fraud\n1,-5,0\n2,2,1\n"), {}, ["'amount'", "negative"]


def case_extra_not_a_list(tmp: Path):
    return _csv(tmp, GOOD), {"mapping": {"extra": 3}}, ['"extra"', "list"]


BAD_CASES = [v for k, v in dict(globals()).items() if k.startswith("case_")]


@pytest.mark.parametrize("make", BAD_CASES, ids=lambda f: f.__name__[5:])
def test_bad_input_is_a_one_line_data_error(tmp_path: Path, make) -> None:
    path, kwargs, expected = make(tmp_path)
    with pytest.raises(DataError) as info:
        load_table(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_presets_are_recognised_under_format_csv_and_in_gzip(tmp_path: Path) -> None:
    raw = write_paysim(tmp_path / "p.csv")
    raw.to_csv(tmp_path / "paysim.csv.gz", index=False)
    df = load_table(tmp_path / "paysim.csv.gz", fmt="csv")
    assert df.attrs["format"] == "paysim" and len(df) == len(raw)


def test_mapping_extends_an_explicit_preset(tmp_path: Path) -> None:
    raw = write_paysim(tmp_path / "paysim.csv")
    df = load_table(tmp_path / "paysim.csv", fmt="paysim", mapping={"extra": ["isFlaggedFraud"]})
    np.testing.assert_array_equal(df["x_isflaggedfraud"], raw["isFlaggedFraud"])
    assert df.attrs["format"] == "paysim"
