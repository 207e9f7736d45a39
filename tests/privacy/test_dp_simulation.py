"""Real 3-bank Flower simulations with DP on: ε within target, budgets halt banks honestly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fedfraud.data.store import write_banks
from fedfraud.privacy import LEDGER_FILE, PrivacyLedger, Spend, bank_level_epsilons
from fedfraud.privacy.accountant import RECORD, RECORD_UNIT, Mechanism, bank_noise_multiplier
from fl_server.federation import FederationError
from simulations.runner import simulate
from tests.conftest import random_bank

BANKS = ["bank-00", "bank-01", "bank-02"]
BANKS4 = [*BANKS, "bank-03"]


def test_three_bank_mlp_simulation_with_dp_reports_epsilon_within_target(
    small_consortium, tmp_path
):
    cfg = RunConfig(
        num_banks=3,
        num_rounds=2,
        data_format="banks",
        data_path=str(small_consortium),
        dp_epsilon=3.0,
        batch_size=256,
    )
    results = simulate(cfg, tmp_path / "run", baselines=False)
    privacy = results["privacy"]
    assert privacy["dp"] is True and privacy["level"] == "record"
    assert privacy["unit"] == RECORD_UNIT  # a training example, not a transaction
    unit = results["analysis"]["privacy_unit"]
    assert unit["unit"] == RECORD_UNIT and unit["rows_changed_per_transaction"]["max"] >= 1
    assert "one transaction is not the unit" in (tmp_path / "run" / "report.md").read_text()
    assert set(privacy["epsilon_per_bank"]) == set(BANKS)
    for eps in privacy["epsilon_per_bank"].values():
        assert math.isfinite(eps) and 0.9 * 3.0 <= eps <= 3.0
    first, last = results["rounds"]
    for bank in BANKS:  # ε grows round by round and the ledger agrees with the run
        assert 0 < first["epsilon"][bank] < last["epsilon"][bank]
        assert last["ledger_epsilon"][bank][RECORD] == pytest.approx(last["epsilon"][bank])
    for bank in BANKS:  # each bank's ledger sits in its data folder and holds both rounds
        spends = PrivacyLedger(small_consortium / bank / LEDGER_FILE, bank).spends()
        assert [s.round for s in spends] == [1, 2]
    assert 0.0 <= results["final"]["pooled"]["pr_auc"] <= 1.0


def _gnn_config(consortium: Path, min_banks: int, banks: int = 3) -> RunConfig:
    return RunConfig(
        num_banks=banks,
        num_rounds=2,
        model="gnn",
        data_format="banks",
        data_path=str(consortium),
        dp_epsilon=3.0,
        min_banks=min_banks,
        privacy_budget=3.0,
    )


def _spend_one_round_earlier(consortium: Path, bank: str, cfg: RunConfig) -> None:
    """bank already spent one round of this budget in an earlier run: it can afford one more."""
    ledger = PrivacyLedger(consortium / bank / LEDGER_FILE, bank)
    z = bank_noise_multiplier(cfg) * math.sqrt(cfg.min_banks / cfg.num_banks)
    spend = Spend.of("bank", Mechanism(z, 1.0, 1), "an-earlier-run", 1, cfg.dp_delta)
    ledger.charge([spend], None, cfg.dp_delta)


def four_banks(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    frames = {b: random_bank(rng, 3000, 100_000 * (i + 1)) for i, b in enumerate(BANKS4)}
    write_banks(frames, tmp_path / "banks4")
    return tmp_path / "banks4"


def test_bank_out_of_budget_is_halted_and_the_rest_go_on_with_honest_epsilon(tmp_path):
    # Changed with issue 13: four banks with min-banks 3 (was three with min-banks 2), and the
    # refusal reaches the operator as the budget error code only (its reason stays at the bank).
    consortium = four_banks(tmp_path)
    cfg = _gnn_config(consortium, min_banks=3, banks=4)
    _spend_one_round_earlier(consortium, "bank-01", cfg)
    results = simulate(cfg, tmp_path / "run", baselines=False)
    first, second = results["rounds"]
    assert first["num_results"] == 4
    assert second["num_results"] == 3 and second["num_failures"] == 1
    assert next(iter(second["failures"].values())) == f"error {rm.BUDGET_ERROR_CODE}"
    privacy = results["privacy"]
    assert privacy["level"] == "bank" and privacy["budget"] == 3.0
    assert privacy["halted_banks"] == ["bank-01"]
    # The realised noise of round 2 is that of 2 banks, not 3: ε reported for it, not the plan.
    sigma = bank_noise_multiplier(cfg)
    rest = ["bank-00", "bank-02", "bank-03"]
    expected = bank_level_epsilons([BANKS4, rest], sigma, 4, cfg.dp_delta)
    assert second["bank_level_epsilon"] == pytest.approx({b: expected[b] for b in rest})
    assert privacy["epsilon_per_bank"] == pytest.approx(expected)
    assert all(eps <= cfg.dp_epsilon for eps in expected.values())  # calibrated for min-banks
    assert expected["bank-00"] > bank_level_epsilons([BANKS4] * 2, sigma, 4, 1e-5)["bank-00"]
    on_disk = json.loads((consortium / "bank-01" / LEDGER_FILE).read_text())
    assert [e["run"] for e in on_disk["entries"]][0] == "an-earlier-run"
    assert len(on_disk["entries"]) == 2  # the refused round was never charged


def test_federation_stops_cleanly_when_budgets_leave_fewer_than_min_banks(
    small_consortium, tmp_path
):
    cfg = _gnn_config(small_consortium, min_banks=3)
    _spend_one_round_earlier(small_consortium, "bank-01", cfg)
    with pytest.raises(FederationError, match="privacy budget exhausted at bank-01"):
        simulate(cfg, tmp_path / "run", baselines=False)
