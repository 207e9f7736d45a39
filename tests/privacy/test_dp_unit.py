"""Record-level DP-SGD protects a training example, not a transaction: the unit is named so in
results.json and the docs, and the rows one transaction changes are measured with the real
feature builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedfraud.config import RunConfig
from fedfraud.data.features import TRAIN, build_bank_table
from fedfraud.data.synth import generate_consortium
from fedfraud.privacy.accountant import BANK_UNIT, RECORD_UNIT
from fedfraud.privacy.operator import privacy_summary
from fedfraud.privacy.unit import (
    privacy_unit_analysis,
    rows_changed_by_each_transaction,
    rows_changed_summary,
    sample_transactions,
    time_order,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "privacy.md"


@pytest.fixture(scope="module")
def consortium() -> dict[str, pd.DataFrame]:
    return generate_consortium(3, 6000, seed=0)


@pytest.fixture(scope="module")
def bank(consortium: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return consortium["bank-00"]  # ~4,000 rows with merchant/mule hubs


def _hub_row(frame: pd.DataFrame) -> tuple[int, object]:
    """Position (time order) of the first transaction sent by the busiest sender, and its id."""
    ordered = time_order(frame)
    hub = ordered["sender"].value_counts().index[0]
    row = int(np.flatnonzero(ordered["sender"].to_numpy() == hub)[0])
    return row, ordered["tx_id"].iloc[row]


def test_one_hub_transaction_changes_many_training_rows(bank: pd.DataFrame) -> None:
    row, _ = _hub_row(bank)
    changed = rows_changed_by_each_transaction(bank, [row])[row]
    assert len(changed) > 1  # "one transaction" is not the unit DP-SGD protects
    assert row not in changed


def test_counted_rows_are_exactly_those_the_feature_builder_changes(bank: pd.DataFrame) -> None:
    """By hand: featurize with and without the transaction, align rows by tx_id, compare."""
    row, tx = _hub_row(bank)
    full = build_bank_table(bank, "b", with_graph=False)
    without = build_bank_table(bank[bank["tx_id"] != tx], "b", with_graph=False)
    assert len(without.x) == len(full.x) - 1
    x_without = dict(zip(without.tx_id.tolist(), without.x, strict=True))
    expected = {
        t
        for t, x, split in zip(full.tx_id.tolist(), full.x, full.split, strict=True)
        if t != tx and split == TRAIN and not np.array_equal(x, x_without[t])
    }
    counted = rows_changed_by_each_transaction(bank, [row])[row]
    assert len(expected) > 1
    assert {full.tx_id[i] for i in counted} == expected
    # Every later training row of the hub sender is among them (its transaction count drops).
    ordered = time_order(bank)
    hub = ordered["sender"].iloc[row]
    later = np.flatnonzero((ordered["sender"].to_numpy() == hub) & (full.split == TRAIN))
    assert set(later[later > row]) <= set(counted.tolist())


def test_without_accounts_a_transaction_changes_no_other_row(bank: pd.DataFrame) -> None:
    per_row_only = bank.drop(columns=["sender", "receiver"])
    rows = sample_transactions(per_row_only)
    assert len(rows) == 10  # no accounts: random rows only
    changed = rows_changed_by_each_transaction(per_row_only, rows)
    assert all(len(v) == 0 for v in changed.values())


def test_summary_samples_hubs_and_reports_k(bank: pd.DataFrame) -> None:
    summary = rows_changed_summary(bank)
    assert 10 < summary["sampled"] <= 20
    assert summary["max"] > 1 and summary["median"] <= summary["p90"] <= summary["max"]
    assert _hub_row(bank)[0] in sample_transactions(bank)  # the busiest sender's first row


def test_analysis_measures_the_largest_bank(consortium: dict[str, pd.DataFrame]) -> None:
    out = privacy_unit_analysis(RECORD_UNIT, consortium)
    assert out["unit"] == RECORD_UNIT
    assert out["bank"] == max(consortium, key=lambda b: len(consortium[b]))
    assert set(out["rows_changed_per_transaction"]) >= {"sampled", "median", "p90", "max"}


@pytest.mark.parametrize(
    ("dp_epsilon", "level", "unit"),
    [
        (3.0, "record", RECORD_UNIT),
        (3.0, "bank", BANK_UNIT),
        (3.0, "both", [RECORD_UNIT, BANK_UNIT]),
        (3.0, "auto", RECORD_UNIT),  # MLP
        (0.0, "auto", None),
    ],
)
def test_privacy_summary_names_the_protected_unit(
    dp_epsilon: float, level: str, unit: str | list[str] | None
) -> None:
    config = RunConfig(dp_epsilon=dp_epsilon, dp_level=level, num_banks=5, min_banks=3)
    assert privacy_summary(config, [], {})["unit"] == unit


def test_record_unit_is_a_training_example_not_a_transaction() -> None:
    assert "training example" in RECORD_UNIT and "transaction" not in RECORD_UNIT


def test_docs_units_table_does_not_call_the_record_level_one_transaction() -> None:
    text = DOCS.read_text()
    section = text.split("## The two units", 1)[1]
    record_row = next(line for line in section.splitlines() if line.startswith("| record |"))
    protects = record_row.split("|")[2]
    assert "training example" in protects
    assert "one transaction of a bank" not in text
    assert "group of" in text and "no ε" in text  # the group-privacy consequence is stated
