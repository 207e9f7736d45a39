"""Transaction-graph CSVs (Time,Source,Target,Amount,Location,Type,Labels): unlabelled rows
dropped and counted, categorical extras one-hot or hashed, through the preset or a mapping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedfraud.data.categorical import HASH_BUCKETS, ONE_HOT_MAX_LEVELS, encode_categorical
from fedfraud.data.features import build_bank_table
from fedfraud.data.loaders import load_table
from fedfraud.data.partition import prepare_banks
from fedfraud.errors import DataError

TYPES = ("wire", "card", "cash", "cheque")


def write_txgraph(path: Path, n: int = 300, seed: int = 0, cities: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    raw = pd.DataFrame(
        {
            "Time": np.sort(rng.uniform(0, 500, n)).round(3),
            "Source": rng.integers(0, 60, n),
            "Target": rng.integers(0, 90, n),
            "Amount": rng.gamma(2.0, 100.0, n).round(2),
            "Location": [f"City {i}" for i in rng.integers(0, cities, n)],
            "Type": [TYPES[i] for i in rng.integers(0, len(TYPES), n)],
            "Labels": rng.choice([0, 1, 2], n, p=[0.75, 0.05, 0.2]),
        }
    )
    raw.to_csv(path, index=False)
    return raw


def test_preset_drops_unlabelled_rows_and_encodes_categorical_columns(tmp_path):
    raw = write_txgraph(tmp_path / "graph.csv")
    df = load_table(tmp_path / "graph.csv")
    labelled = raw[raw["Labels"] != 2].sort_values("Time", kind="stable")
    assert df.attrs["format"] == "txgraph"
    assert df.attrs["unlabelled_dropped"] == int((raw["Labels"] == 2).sum()) > 0
    assert len(df) == len(labelled)
    np.testing.assert_array_equal(df["is_fraud"], labelled["Labels"])
    assert list(df["sender"]) == labelled["Source"].astype(str).tolist()
    # 4 types: one-hot, one column per level, exactly the row's level set.
    type_cols = [f"x_type_{t}" for t in sorted(TYPES)]
    assert set(type_cols) <= set(df.columns)
    for t in TYPES:
        np.testing.assert_array_equal(df[f"x_type_{t}"], (labelled["Type"] == t).to_numpy())
    # 40 cities > ONE_HOT_MAX_LEVELS: hashed buckets, one 1 per row, a city always one bucket.
    loc_cols = [c for c in df.columns if c.startswith("x_location_")]
    assert len(loc_cols) == HASH_BUCKETS and ONE_HOT_MAX_LEVELS < 40
    onehot = df[loc_cols].to_numpy()
    assert (onehot.sum(1) == 1).all()
    bucket = pd.Series(onehot.argmax(1)).groupby(labelled["Location"].to_numpy()).nunique()
    assert (bucket == 1).all()


def test_hashed_buckets_are_the_same_in_files_with_other_levels():
    a = encode_categorical(pd.Series(["x", "City 3", "y"]), "Location", "hash")
    b = encode_categorical(pd.Series([f"z{i}" for i in range(30)] + ["City 3"]), "Location")
    assert list(a.columns) == list(b.columns)  # always all HASH_BUCKETS columns
    np.testing.assert_array_equal(a.iloc[1].to_numpy(), b.iloc[-1].to_numpy())


def test_categorical_extras_reach_the_model_features(tmp_path):
    write_txgraph(tmp_path / "graph.csv")
    table = build_bank_table(load_table(tmp_path / "graph.csv"), "b")
    assert "x_type_wire" in table.feature_names and "x_location_h00" in table.feature_names
    assert np.isfinite(table.x).all()


def test_mapping_file_with_other_names_categorical_and_unlabelled(tmp_path):
    raw = write_txgraph(tmp_path / "g.csv").rename(
        columns={
            "Time": "t",
            "Source": "from",
            "Target": "to",
            "Amount": "amt",
            "Type": "kind",
            "Labels": "y",
        }  # fmt: skip
    )
    raw.to_csv(tmp_path / "g.csv", index=False)
    mapping = {"timestamp": "t", "sender": "from", "receiver": "to", "amount": "amt",
               "is_fraud": "y", "categorical": ["kind"], "unlabelled": [2]}  # fmt: skip
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    df = load_table(tmp_path / "g.csv", mapping=tmp_path / "map.json")
    assert df.attrs["unlabelled_dropped"] == int((raw["y"] == 2).sum())
    assert {f"x_kind_{t}" for t in TYPES} <= set(df.columns)
    assert not any(c.startswith("x_location") for c in df.columns)  # not listed: not read
    manifest = prepare_banks(
        tmp_path / "g.csv", tmp_path / "banks", mapping=mapping, num_banks=3, scheme="iid"
    )
    assert manifest["unlabelled_dropped"] == df.attrs["unlabelled_dropped"]


def test_label_2_without_unlabelled_option_is_refused(tmp_path):
    raw = write_txgraph(tmp_path / "g.csv")
    mapping = {"timestamp": "Time", "amount": "Amount", "is_fraud": "Labels"}
    with pytest.raises(DataError, match="only 0"):
        load_table(tmp_path / "g.csv", mapping=mapping)
    assert (raw["Labels"] == 2).any()


@pytest.mark.parametrize(
    "mapping, fragment",
    [
        ({"categorical": ["Nowhere"]}, "Nowhere"),
        ({"categorical": "Type", "categorical_encoding": "bits"}, "categorical_encoding"),
        ({"unlabelled": ["two"]}, "unlabelled"),
    ],
)
def test_bad_categorical_or_unlabelled_options_are_refused(tmp_path, mapping, fragment):
    write_txgraph(tmp_path / "g.csv")
    base = {"timestamp": "Time", "amount": "Amount", "is_fraud": "Labels", "unlabelled": [2]}
    with pytest.raises(DataError, match=fragment):
        load_table(tmp_path / "g.csv", mapping={**base, **mapping})


def test_a_file_of_only_unlabelled_rows_is_refused(tmp_path):
    raw = write_txgraph(tmp_path / "g.csv").assign(Labels=2)
    raw.to_csv(tmp_path / "g.csv", index=False)
    with pytest.raises(DataError, match="unlabelled"):
        load_table(tmp_path / "g.csv")
