"""A bank's transaction ids survive every step (issue 17): prepare, features, score, explain,
rings; a file without ids gets its row numbers; duplicated ids are an error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedfraud.data.features import TEST, BankTable, build_bank_table
from fedfraud.data.loaders import load_table
from fedfraud.data.partition import prepare_banks
from fedfraud.data.store import read_bank
from fedfraud.errors import DataError
from fedfraud.rings import find_rings
from tests.conftest import random_bank


@pytest.fixture
def source(tmp_path):
    frame = random_bank(np.random.default_rng(5), 3000, 0)
    # Ids in another order than time, so an id lost to a re-sort or a row index would show.
    frame.insert(0, "tx_id", np.random.default_rng(6).permutation(3000) + 10_000)
    frame = frame.sample(frac=1.0, random_state=1)
    path = tmp_path / "export.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_prepare_keeps_every_tx_id_with_its_row(tmp_path, source):
    path, frame = source
    prepare_banks(path, tmp_path / "banks", num_banks=3, seed=0)
    banks = pd.concat(read_bank(tmp_path / "banks" / f"bank-{i:02d}") for i in range(3))
    assert sorted(banks["tx_id"]) == sorted(frame["tx_id"])
    merged = banks.merge(frame, on="tx_id", suffixes=("", "_src"))
    np.testing.assert_allclose(merged["amount"], merged["amount_src"])


def test_a_file_without_ids_gets_its_row_numbers(tmp_path, source):
    path, frame = source
    frame.drop(columns="tx_id").to_csv(path, index=False)
    table = load_table(path)
    first = table.loc[table["tx_id"] == 1]
    assert first["amount"].iloc[0] == pytest.approx(frame["amount"].iloc[0])
    assert sorted(table["tx_id"]) == list(range(1, len(frame) + 1))


@pytest.mark.parametrize("alias", ["transaction_id", "ID"])
def test_common_id_column_names_are_the_tx_id(tmp_path, source, alias):
    path, frame = source
    frame.rename(columns={"tx_id": alias}).to_csv(path, index=False)
    assert sorted(load_table(path)["tx_id"]) == sorted(frame["tx_id"])


def test_txgraph_keeps_its_id_column_and_numbers_rows_before_dropping_unlabelled(tmp_path):
    from tests.data.test_txgraph_loader import write_txgraph

    raw = write_txgraph(tmp_path / "graph.csv")
    numbered = load_table(tmp_path / "graph.csv")
    labelled = raw.index[raw["Labels"] != 2] + 1  # 1 = first data row, unlabelled ones counted
    assert sorted(numbered["tx_id"]) == sorted(labelled)
    raw.insert(0, "TxnID", np.arange(len(raw)) * 7 + 100)
    raw.rename(columns={"TxnID": "txn_id"}).to_csv(tmp_path / "graph.csv", index=False)
    df = load_table(tmp_path / "graph.csv")
    assert sorted(df["tx_id"]) == sorted(raw.loc[raw["Labels"] != 2, "TxnID"])
    assert not any(c.startswith("x_txn_id") for c in df.columns)  # an id, not a category


def test_duplicated_ids_are_an_error(tmp_path, source):
    path, frame = source
    frame.iloc[3, 0] = frame.iloc[4, 0]
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="rows sharing an id"):
        load_table(path)


def test_features_carry_the_ids_row_aligned_after_the_time_sort(source):
    _, frame = source
    table = build_bank_table(frame, "b")
    ordered = frame.sort_values("timestamp", kind="stable")
    np.testing.assert_array_equal(table.tx_id, ordered["tx_id"].to_numpy())
    np.testing.assert_allclose(table.x[:, 0], np.log1p(ordered["amount"].to_numpy()), rtol=1e-6)


def test_rings_name_the_transactions_by_their_ids():
    ids = np.array([71, 72, 73, 74])
    table = BankTable(
        name="b",
        x=np.zeros((4, 1), np.float32),
        y=np.ones(4, np.float32),
        split=np.full(4, TEST, np.int8),
        feature_names=("f",),
        typology=None,
        src=np.array([1, 2, 3, 5]),
        dst=np.array([0, 0, 0, 6]),
        node_x=np.zeros((7, 1), np.float32),
        tx_id=ids,
    )
    rings = find_rings(table, np.array([0.9, 0.9, 0.9, 0.9]), threshold=0.5)
    assert rings[0]["tx_ids"] == [71, 72, 73]


def test_explain_and_score_name_the_banks_ids(tmp_path, source):
    from fedfraud.explain import explain_bank
    from fedfraud.scoring import Scorer
    from tests.serving.conftest import make_run, write_bank

    _, frame = source
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    cut = int(len(frame) * 0.9)
    run = make_run(tmp_path / "run", frame.iloc[:cut])
    bank = write_bank(tmp_path / "banks", frame.iloc[:cut])
    expl = explain_bank(run, bank, "all", 0.05, max_alerts=5, sample=5)
    alerts = expl.alerts(1)
    assert alerts and {a["tx_id"] for a in alerts} <= set(frame["tx_id"].iloc[:cut])
    by_id = frame.set_index("tx_id")
    for alert in alerts:  # the id names the row whose label the explanation reports
        assert alert["is_fraud"] == by_id.loc[alert["tx_id"], "is_fraud"]
    scored = Scorer(run, bank).score_frame(frame.iloc[cut:].drop(columns="is_fraud"))
    assert scored["tx_id"].tolist() == frame["tx_id"].iloc[cut:].tolist()
