"""Attack 1 of issue 13, downgrade by run-config: the operator edits backend, dp-delta or the
bank counts in its message. The bank's own policy decides, so the attack yields a refusal, or
exactly the noise the bank would have added anyway."""

from __future__ import annotations

import math

import pytest

import fedfraud.privacy.dp as dp
from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fedfraud.errors import ConfigError
from fedfraud.privacy import LEDGER_FILE, PrivacyLedger
from tests.attacks.conftest import BANKS, Consortium

pytestmark = pytest.mark.usefixtures("task_identity")


def test_bank_pinned_to_ckks_refuses_a_run_config_saying_secure_agg_none(
    small_consortium, tmp_path
):
    # Before issue 13 the bank took the backend from the message and answered this stats query
    # with its feature moments and row count in the clear (backend "none").
    banks = Consortium(small_consortium, tmp_path, backend="ckks")
    fed = banks.operator(RunConfig(num_banks=3, num_rounds=1, secure_agg="ckks"))
    banks.stats(fed)  # the honest stage works under the bank's backend
    assert fed.state.scaler.backend == "ckks"

    fed.config = fed.config.replace(secure_agg="none")
    fed.aggregator = __import__("secure_agg").get("none", "server")
    replies = fed.broadcast(sorted(banks.contexts), f"query.{rm.STATS}", 0, {})
    assert replies.payloads == {}  # nothing, clear or otherwise, came back
    refusals = [r for r in fed.grid.replies[-3:] if r.has_error()]
    assert [r.error.code for r in refusals] == [rm.REFUSED_ERROR_CODE] * 3
    assert all(not r.error.reason for r in refusals)  # the reason stays in the bank's log


def test_dp_delta_of_the_operator_does_not_lower_the_banks_noise(small_consortium, tmp_path):
    # Before: dp-delta=0.5 in the message calibrated DP-SGD for δ=0.5 (noise multiplier ~0.40
    # instead of ~1.2 at δ=1e-5) and the ledger charged it at δ=0.5, within budget.
    honest = RunConfig(num_banks=3, num_rounds=2, dp_epsilon=3.0, dp_delta=1e-5, batch_size=256)
    runs = {}
    for name, delta in (("honest", 1e-5), ("attack", 0.5)):
        root = tmp_path / name
        banks = Consortium(small_consortium, root, max_delta=1e-5, max_epsilon=3.0)
        fed = banks.operator(honest.replace(dp_delta=delta))
        banks.stats(fed)
        replies = banks.train(fed, sorted(banks.contexts), 1)
        assert "bank-00" in replies.payloads, replies.failures
        path = small_consortium / "bank-00" / LEDGER_FILE
        runs[name] = [
            s for s in PrivacyLedger(path, "bank-00").spends() if s.run == fed.state.run_label
        ]
        for bank in BANKS:
            (small_consortium / bank / LEDGER_FILE).unlink()
    (honest_spend,), (attack_spend,) = runs["honest"], runs["attack"]
    assert attack_spend.delta == honest_spend.delta <= 1e-5
    assert attack_spend.noise_multiplier == pytest.approx(honest_spend.noise_multiplier)
    assert attack_spend.noise_multiplier > 1.0


def test_num_banks_of_the_operator_does_not_shrink_distributed_noise(
    small_consortium, tmp_path, monkeypatch
):
    # Before: num-banks = min-banks = 1000 made each bank add σC/√1000 (0.11·C at ε=3) instead
    # of σC/√3, while its ledger still charged the full ε.
    stds: dict[str, float] = {}
    real = dp.privatize_update

    def spy(start, new, clip, noise_multiplier, num_banks, seed=None):
        stds[current] = noise_multiplier * clip / math.sqrt(num_banks)
        return real(start, new, clip, noise_multiplier, num_banks, seed)

    monkeypatch.setattr(dp, "privatize_update", spy)
    base = RunConfig(num_banks=3, num_rounds=2, dp_epsilon=3.0, dp_level="bank")
    for current, cfg in (
        ("honest", base),
        ("attack", base.replace(num_banks=1000, min_banks=1000)),
    ):
        banks = Consortium(small_consortium, tmp_path / current, max_epsilon=3.0)
        fed = banks.operator(base)
        banks.stats(fed)
        fed.config = cfg  # the operator edits its run-config for the training message
        replies = banks.train(fed, sorted(banks.contexts), 1)
        assert "bank-00" in replies.payloads, replies.failures
        (small_consortium / "bank-00" / LEDGER_FILE).unlink()
    assert stds["attack"] == pytest.approx(stds["honest"])
    assert stds["honest"] > 1.0  # σC/√3 with σ calibrated for ε=3 over two rounds


def test_run_config_below_three_banks_is_refused():
    for bad in ({"min_banks": 2}, {"min_banks": 1}, {"num_banks": 2, "min_banks": 2}):
        with pytest.raises(ConfigError, match="must be at least 3"):
            RunConfig(**bad)
