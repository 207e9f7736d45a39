"""Distributed DP composes with secure aggregation: under the same noise seeds, the CKKS
aggregate of noised updates equals the plaintext one (to CKKS precision)."""

from __future__ import annotations

import numpy as np
import pytest

import secure_agg
from fedfraud.config import RunConfig
from fedfraud.privacy import UNIFORM_WEIGHT, bank_noise_multiplier, privatize_update

SHAPES = [(64, 30), (64,), (64, 64), (64,), (1, 64), (1,)]
BANKS = ["bank-00", "bank-01", "bank-02"]


def noised_updates(config: RunConfig) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]]]:
    rng = np.random.default_rng(11)
    start = [rng.normal(0, 0.1, s).astype(np.float32) for s in SHAPES]
    sigma = bank_noise_multiplier(config)
    updates = {}
    for i, bank in enumerate(BANKS):
        new = [(w + rng.normal(0, 0.05 * (i + 1), w.shape)).astype(np.float32) for w in start]
        updates[bank] = privatize_update(
            start, new, config.dp_clip, sigma, config.num_banks, seed=100 + i
        )
    return start, updates


def aggregate(name: str, options: dict, updates: dict[str, list[np.ndarray]]) -> list[np.ndarray]:
    bank = secure_agg.get(name, "client", options)
    operator = secure_agg.get(name, "server", options)
    payloads = {b: bank.client_protect(u, UNIFORM_WEIGHT, round=1) for b, u in updates.items()}
    agg = operator.server_aggregate(payloads)
    assert agg.included == tuple(BANKS) and not agg.rejected
    return bank.client_reveal(agg.payload, SHAPES)


def test_dp_ckks_aggregate_equals_dp_plaintext_aggregate_under_the_same_noise_seed(tmp_path):
    config = RunConfig(num_banks=3, min_banks=3, model="gnn", dp_epsilon=3.0, num_rounds=5)
    start, updates = noised_updates(config)
    plain = aggregate("none", {}, updates)
    ckks = aggregate("ckks", secure_agg.provision("ckks", tmp_path, 3), updates)
    for p, c in zip(plain, ckks, strict=True):
        np.testing.assert_allclose(c, p, atol=1e-5, rtol=0)
    # The aggregate carries the planned noise σC (sum of 3 shares σC/√3), divided by m = 3.
    noise = np.concatenate([(p - s).ravel() for p, s in zip(plain, start, strict=True)])
    sigma = bank_noise_multiplier(config)
    assert np.std(noise) == pytest.approx(sigma * config.dp_clip / 3, rel=0.05)
