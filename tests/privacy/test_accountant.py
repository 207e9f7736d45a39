"""RDP accounting equals Opacus' own, σ calibration hits the target, dropouts are reported."""

from __future__ import annotations

import math

import pytest
import torch
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant
from torch.utils.data import DataLoader, TensorDataset

from fedfraud.config import RunConfig
from fedfraud.errors import ConfigError
from fedfraud.privacy.accountant import (
    Mechanism,
    bank_level_epsilons,
    bank_noise_multiplier,
    batches_per_epoch,
    dp_level,
    epsilon,
    realised_noise_multiplier,
    record_mechanism,
)

DELTA = 1e-5


@pytest.mark.parametrize(
    "z, q, steps", [(1.1, 256 / 60_000, 14_040), (0.8, 0.05, 200), (4.0, 1.0, 10), (2.0, 0.5, 7)]
)
def test_epsilon_equals_opacus_rdp_accountant_stepped_step_by_step(z, q, steps):
    reference = RDPAccountant()
    for _ in range(steps):
        reference.step(noise_multiplier=z, sample_rate=q)
    assert epsilon([Mechanism(z, q, steps)], DELTA) == pytest.approx(
        reference.get_epsilon(DELTA), rel=1e-12
    )


def test_split_history_composes_like_one_opacus_history():
    reference = RDPAccountant()
    reference.history = [(1.0, 0.1, 30), (2.0, 1.0, 5)]
    parts = [Mechanism(1.0, 0.1, 10), Mechanism(2.0, 1.0, 5), Mechanism(1.0, 0.1, 20)]
    assert epsilon(parts, DELTA) == pytest.approx(reference.get_epsilon(DELTA), rel=1e-12)


def test_no_release_spends_nothing_and_no_noise_spends_everything():
    assert epsilon([], DELTA) == 0.0
    assert epsilon([Mechanism(0.0, 0.1, 3)], DELTA) == math.inf


def test_record_plan_matches_what_the_privacy_engine_accounts_after_real_training():
    """Our plan (sample rate 1/batches, local_epochs x batches steps per round) is exactly what
    Opacus' PrivacyEngine accounts for the same loader and number of rounds."""
    torch.manual_seed(0)
    n, cfg = 1000, RunConfig(dp_epsilon=2.0, num_rounds=3, batch_size=128, local_epochs=2)
    plan = record_mechanism(cfg, n)
    model = torch.nn.Linear(4, 1)
    loader = DataLoader(TensorDataset(torch.randn(n, 4), torch.rand(n, 1)), batch_size=128)
    engine = PrivacyEngine(accountant="rdp")
    model, optimizer, loader = engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=loader,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=1.0,
    )
    assert loader.batch_sampler.sample_rate == plan.sample_rate
    for _ in range(cfg.num_rounds * cfg.local_epochs):
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
    ours = epsilon([plan] * cfg.num_rounds, cfg.dp_delta)
    assert ours == pytest.approx(engine.get_epsilon(cfg.dp_delta), rel=1e-12)
    assert ours <= cfg.dp_epsilon


@pytest.mark.parametrize("target", [0.5, 1.0, 3.0, 8.0])  # min-banks >= 3 since issue 13
@pytest.mark.parametrize("n_train, rounds, epochs", [(1_800, 2, 1), (24_000, 10, 1), (5_000, 5, 3)])
def test_record_level_calibration_hits_target_within_5_percent(target, n_train, rounds, epochs):
    cfg = RunConfig(dp_epsilon=target, num_rounds=rounds, local_epochs=epochs)
    plan = record_mechanism(cfg, n_train)
    assert plan.sample_rate == 1 / batches_per_epoch(n_train, cfg.batch_size)
    spent = epsilon([plan] * rounds, cfg.dp_delta)
    assert 0.95 * target <= spent <= target


@pytest.mark.parametrize("target", [0.5, 1.0, 3.0, 8.0])  # min-banks >= 3 since issue 13
@pytest.mark.parametrize("banks, min_banks, rounds", [(3, 3, 2), (5, 3, 10), (10, 4, 20)])
def test_bank_level_calibration_hits_target_within_5_percent_at_min_banks(
    target, banks, min_banks, rounds
):
    cfg = RunConfig(dp_epsilon=target, num_banks=banks, min_banks=min_banks, num_rounds=rounds)
    sigma = bank_noise_multiplier(cfg)
    fewest = [[f"b{i}" for i in range(min_banks)]] * rounds
    worst = bank_level_epsilons(fewest, sigma, banks, cfg.dp_delta)["b0"]
    assert 0.95 * target <= worst <= target
    everyone = [[f"b{i}" for i in range(banks)]] * rounds
    assert bank_level_epsilons(everyone, sigma, banks, cfg.dp_delta)["b0"] <= worst


def test_dropouts_are_accounted_with_the_noise_actually_realised():
    """Each bank adds σC/√n, so a sum of m < n banks carries only σC·√(m/n): ε goes up, and a
    bank that sat a round out does not spend it."""
    sigma, n = 4.0, 4
    assert realised_noise_multiplier(sigma, 4, n) == pytest.approx(sigma)
    assert realised_noise_multiplier(sigma, 1, n) == pytest.approx(sigma / 2)
    full = [["a", "b", "c", "d"]] * 3
    dropped = [["a", "b", "c", "d"], ["a", "b"], ["a", "b", "c"]]
    eps_full = bank_level_epsilons(full, sigma, n, DELTA)
    eps_dropped = bank_level_epsilons(dropped, sigma, n, DELTA)
    assert eps_dropped["a"] > eps_full["a"]
    reference = [Mechanism(sigma, 1.0, 1), Mechanism(sigma / math.sqrt(2), 1.0, 1)]
    reference.append(Mechanism(sigma * math.sqrt(3 / 4), 1.0, 1))
    assert eps_dropped["a"] == pytest.approx(epsilon(reference, DELTA))
    assert eps_dropped["d"] == pytest.approx(epsilon([Mechanism(sigma, 1.0, 1)], DELTA))


def test_auto_level_is_record_for_the_mlp_and_bank_for_the_gnn():
    assert dp_level(RunConfig()) == "off"
    assert dp_level(RunConfig(dp_epsilon=1.0)) == "record"
    assert dp_level(RunConfig(dp_epsilon=1.0, model="gnn")) == "bank"
    assert dp_level(RunConfig(dp_epsilon=1.0, dp_level="both")) == "both"


@pytest.mark.parametrize("level", ["record", "both"])
def test_dp_sgd_levels_are_refused_for_the_gnn_with_the_reason(level):
    with pytest.raises(ConfigError, match="message passing breaks"):
        RunConfig(model="gnn", dp_epsilon=1.0, dp_level=level)
