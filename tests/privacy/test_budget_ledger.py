"""The per-bank ledger: refuses rounds past the budget, persists across runs and restarts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedfraud.config import RunConfig
from fedfraud.errors import BudgetExceededError, ConfigError
from fedfraud.privacy import LEDGER_FILE, BankRound, LedgerError, PrivacyLedger, Spend
from fedfraud.privacy.accountant import BANK, RECORD, Mechanism, epsilon, record_mechanism
from fedfraud.privacy.budget import ledger_path, resolve_budget

CFG = RunConfig(dp_epsilon=2.0, num_rounds=3, num_banks=3, batch_size=100)
N_TRAIN = 1_000
START, NEW = [np.zeros(3, np.float32)], [np.ones(3, np.float32)]


def train_round(data: Path, run: str, rnd: int, **node: float) -> BankRound:
    """What the bank's train handler does around training (start -> release)."""
    dp = BankRound.start(CFG, node, data, "bank-00", run, rnd, N_TRAIN)
    dp.release(START, NEW, float(N_TRAIN))
    return dp


def test_ledger_halts_training_once_the_budget_would_be_exceeded(tmp_path):
    budget = {"privacy-budget": 2.5}  # one full run spends 2.0: the second cannot finish
    for rnd in (1, 2, 3):
        train_round(tmp_path, "run-a", rnd, **budget)
    done = 0
    with pytest.raises(BudgetExceededError, match=r"privacy budget ε=2.5 exhausted") as err:
        for rnd in (1, 2, 3):
            train_round(tmp_path, "run-b", rnd, **budget)
            done += 1
    assert 0 < done < 3
    assert "bank-00" in str(err.value) and "record ε=" in str(err.value)
    ledger = PrivacyLedger(tmp_path / LEDGER_FILE, "bank-00")
    assert len(ledger.spends()) == 3 + done  # the refused round left no trace
    assert ledger.spent(CFG.dp_delta)[RECORD] <= 2.5


def test_refusal_comes_before_training_and_the_race_is_caught_at_release(tmp_path):
    budget = {"privacy-budget": 2.0}
    early = BankRound.start(CFG, budget, tmp_path, "bank-00", "a", 1, N_TRAIN)
    for rnd in (1, 2, 3):  # another process spends the whole budget meanwhile
        train_round(tmp_path, "b", rnd, **budget)
    with pytest.raises(BudgetExceededError):
        early.release(START, NEW, float(N_TRAIN))
    with pytest.raises(BudgetExceededError):
        BankRound.start(CFG, budget, tmp_path, "bank-00", "c", 1, N_TRAIN)


def test_ledger_survives_a_restart_and_composes_by_rdp(tmp_path):
    for rnd in (1, 2):
        train_round(tmp_path, "run-a", rnd)
    # A new process (clients are rebuilt per message) sees the same history...
    reopened = PrivacyLedger(tmp_path / LEDGER_FILE, "bank-00")
    plan = record_mechanism(CFG, N_TRAIN)
    assert reopened.spent(CFG.dp_delta)[RECORD] == pytest.approx(epsilon([plan] * 2, 1e-5))
    # ...and continues the run's accounting where it stopped.
    third = train_round(tmp_path, "run-a", 3)
    assert third.metrics()["epsilon"] == pytest.approx(epsilon([plan] * 3, 1e-5))
    assert third.metrics()["epsilon"] <= CFG.dp_epsilon
    train_round(tmp_path, "run-b", 1)
    total = reopened.spent(CFG.dp_delta)[RECORD]
    run_a = reopened.spent(CFG.dp_delta, run="run-a")[RECORD]
    run_b = reopened.spent(CFG.dp_delta, run="run-b")[RECORD]
    assert run_a < total < run_a + run_b  # RDP composition across runs beats adding ε's


def test_units_are_kept_apart_and_each_held_to_the_budget(tmp_path):
    both = CFG.replace(dp_level="both")
    dp = BankRound.start(both, {}, tmp_path, "bank-00", "r", 1, N_TRAIN)
    dp.release(START, NEW, float(N_TRAIN))
    assert set(dp.metrics()) == {"epsilon", "ledger_epsilon_record", "ledger_epsilon_bank"}
    units = [s.unit for s in PrivacyLedger(tmp_path / LEDGER_FILE, "bank-00").spends()]
    assert units == [RECORD, BANK]


def test_unreadable_or_foreign_ledger_refuses_training(tmp_path):
    path = tmp_path / LEDGER_FILE
    path.write_text("{not json")
    with pytest.raises(LedgerError, match="unreadable"):
        BankRound.start(CFG, {}, tmp_path, "bank-00", "r", 1, N_TRAIN)
    train_round(tmp_path / "other", "r", 1)
    foreign = json.loads((tmp_path / "other" / LEDGER_FILE).read_text())
    path.write_text(json.dumps({**foreign, "bank": "bank-07"}))
    with pytest.raises(LedgerError, match="belongs to 'bank-07'"):
        BankRound.start(CFG, {}, tmp_path, "bank-00", "r", 1, N_TRAIN)
    assert isinstance(LedgerError("x"), BudgetExceededError)  # the server halts such a bank


def test_ledger_path_and_budget_come_from_node_config_and_only_tighten(tmp_path):
    assert ledger_path({}, tmp_path) == tmp_path / LEDGER_FILE
    assert (
        ledger_path({"privacy-ledger": str(tmp_path / "l.json")}, tmp_path) == tmp_path / "l.json"
    )
    assert resolve_budget({}, CFG) is None
    assert resolve_budget({"privacy-budget": "4"}, CFG) == 4.0
    assert resolve_budget({"privacy-budget": 9}, CFG.replace(privacy_budget=5.0)) == 5.0
    assert resolve_budget({"privacy-budget": 2}, CFG.replace(privacy_budget=5.0)) == 2.0
    assert resolve_budget({"privacy-budget": 0}, CFG.replace(privacy_budget=5.0)) == 5.0
    with pytest.raises(ConfigError, match="privacy-budget"):
        resolve_budget({"privacy-budget": "lots"}, CFG)


def test_ledger_file_is_plain_json_with_mechanisms_not_data(tmp_path):
    train_round(tmp_path, "run-a", 1)
    data = json.loads((tmp_path / LEDGER_FILE).read_text())
    assert data["bank"] == "bank-00" and data["format"] == "fedfraud-privacy-ledger"
    (entry,) = data["entries"]
    assert set(entry) == {
        "unit", "noise_multiplier", "sample_rate", "steps", "run", "round", "delta", "time",
    }  # fmt: skip
    assert Spend(**entry).mechanism == record_mechanism(CFG, N_TRAIN)
    assert isinstance(Spend(**entry).mechanism, Mechanism)


def test_a_run_resumed_under_a_new_flower_run_id_still_reports_all_its_rounds(tmp_path):
    for rnd in (1, 2):
        train_round(tmp_path, "run-a", rnd)
    resumed = train_round(tmp_path, "run-a-after-restart", 3)
    plan = record_mechanism(CFG, N_TRAIN)
    assert resumed.metrics()["epsilon"] == pytest.approx(epsilon([plan] * 3, CFG.dp_delta))
