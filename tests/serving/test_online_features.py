"""fedfraud.online: a live transaction's features equal build_bank_table's for the newest row."""

import re

import numpy as np
import pandas as pd
import pytest

from fedfraud.data.features import build_bank_table
from fedfraud.errors import DataError
from fedfraud.online import (
    AccountHistory,
    account_key,
    ordered,
    parse_transaction,
    stateless_features,
)
from tests.serving.conftest import bank_frame


def new_transactions(frame: pd.DataFrame) -> pd.DataFrame:
    """Newest transactions that hit every state path: same sender within the hour and day,
    a brand-new sender and receiver, a receiver that also sends, a self-transfer, a repeated
    pair, amounts on the structuring and round-amount edges."""
    t = float(frame["timestamp"].max())
    known_sender, known_receiver = frame["sender"].iloc[-1], frame["receiver"].iloc[-1]
    rows = [
        (known_sender, known_receiver, t + 0.1, 9500.0),
        (known_sender, known_receiver, t + 0.2, 300.0),
        (known_sender, 999_999_999, t + 3.0, 4.5),
        (888_888_888, known_sender, t + 30.0, 120.25),
        (888_888_888, 888_888_888, t + 30.5, 77.0),
        (known_receiver, known_sender, t + 31.0, 10_000.0),
    ]
    new = pd.DataFrame(rows, columns=["sender", "receiver", "timestamp", "amount"])
    new["is_fraud"] = 0
    new["channel"], new["mcc"] = [0, 1, 2, 3, 4, 2], [0, 3, 9, 5, 1, 8]
    new["device_new"], new["geo_km"] = [0, 1, 0, 1, 0, 0], [0.0, 3.5, 120.0, 0.0, 7.0, 1.0]
    if "x_v1" in frame.columns:
        new["x_v1"] = [-42.0, 0.0, 3.0, 1e4, -0.5, 2.0]
    return new


@pytest.mark.parametrize("extra", [False, True])
def test_observed_features_equal_build_bank_table_rows(extra):
    history = bank_frame(extra=extra)
    new = new_transactions(history)
    state = AccountHistory()
    for r in history.to_dict("records"):
        state.observe(
            account_key(r["sender"]), account_key(r["receiver"]), r["timestamp"], r["amount"]
        )
    extras = [c for c in history.columns if c.startswith("x_")]
    for k, record in enumerate(new.to_dict("records")):
        tx = parse_transaction(record, "test", accounts=True, extras=extras)
        values = {
            **stateless_features(tx),
            **state.observe(tx.sender, tx.receiver, tx.timestamp, tx.amount),
        }
        table = build_bank_table(pd.concat([history, new.iloc[: k + 1]]), "b", with_graph=True)
        live = ordered(values, table.feature_names, "feature")
        np.testing.assert_array_equal(live, table.x[-1], err_msg=str(k))
        assert state.size == len(history) + k + 1


def test_node_features_equal_the_account_graph():
    # Every row in the training split: the training graph's snapshot is the whole history,
    # which is what the live state holds after observing it.
    history = bank_frame().assign(_split=0)
    state = AccountHistory()
    for r in history.to_dict("records"):
        state.observe(
            account_key(r["sender"]), account_key(r["receiver"]), r["timestamp"], r["amount"]
        )
    table = build_bank_table(history, "b", with_graph=True, split_column="_split")
    codes, uniques = pd.factorize(pd.concat([history["sender"], history["receiver"]]))
    for node in (0, 1, len(uniques) // 2, len(uniques) - 1):
        live = ordered(
            state.node_features(account_key(uniques[node])), table.node_feature_names, ""
        )
        np.testing.assert_array_equal(live, table.node_x[node])


def test_account_ids_of_any_type_name_one_account():
    assert account_key(42) == account_key(42.0) == account_key("42") == account_key(np.int64(42))


@pytest.mark.parametrize(
    "record, fragment",
    [
        ({"timestamp": 1, "sender": 1, "receiver": 2}, "missing 'amount'"),
        ({"amount": 5, "sender": 1, "receiver": 2}, "missing 'timestamp'"),
        ({"amount": -5, "timestamp": 1, "sender": 1, "receiver": 2}, "negative"),
        ({"amount": "ten", "timestamp": 1, "sender": 1, "receiver": 2}, "must be a number"),
        ({"amount": float("inf"), "timestamp": 1, "sender": 1, "receiver": 2}, "finite"),
        ({"amount": 5, "timestamp": 1, "sender": 1}, "missing receiver"),
        ({"amount": 5, "timestamp": 1, "receiver": 1, "sender": None}, "missing sender"),
        ({"amount": 5, "timestamp": 1, "sender": 1, "receiver": 2, "mcc": "x"}, "'mcc'"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_transactions_are_refused_naming_the_field(record, fragment):
    with pytest.raises(DataError, match="line 7") as err:
        parse_transaction(record, "line 7", accounts=True, extras=[])
    assert fragment in str(err.value)


def test_missing_extra_feature_is_refused():
    with pytest.raises(DataError, match="x_v1"):
        parse_transaction({"amount": 1, "timestamp": 1}, "row 1", accounts=False, extras=["x_v1"])


def test_optional_columns_take_the_schema_defaults():
    tx = parse_transaction({"amount": 1, "timestamp": 1}, "t", False, [])
    assert (tx.channel, tx.mcc, tx.device_new, tx.geo_km) == (4, 0, 0.0, 0.0)


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"channel": 99}, "'channel' must be in 0..4"),
        ({"geo_km": -3}, "'geo_km' must be in 0..20040"),
        ({"amount": 1e300}, "'amount' must be in 0..1e+12"),
        ({"timestamp": 1e18}, "'timestamp' must be in 0..1e+07"),
        ({"timestamp": -5}, "'timestamp' must be in 0..1e+07"),
        ({"amount": True}, "'amount' must be a number"),
    ],
)
def test_out_of_range_values_are_errors_naming_the_range(change, fragment):
    with pytest.raises(DataError, match=re.escape(fragment)):
        parse_transaction({"amount": 1, "timestamp": 1, **change}, "t", False, [])
