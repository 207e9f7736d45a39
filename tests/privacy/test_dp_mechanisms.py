"""The bank's mechanisms: update clipping bound, noise scale and freshness, DP-SGD wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from opacus.data_loader import DPDataLoader

from fedfraud.config import RunConfig
from fedfraud.errors import BudgetExceededError
from fedfraud.models.mlp import FraudMLP
from fedfraud.privacy import (
    UNIFORM_WEIGHT,
    BankRound,
    clip_update,
    make_privatizer,
    privatize_update,
)
from fedfraud.privacy.accountant import Mechanism, record_mechanism
from fedfraud.privacy.dp import noise_generator
from fedfraud.train import ModelInputs, get_weights, train_local

SHAPES = [(64, 12), (64,), (1, 64), (1,)]


def norm(arrays) -> float:
    return math.sqrt(sum(float(np.square(np.asarray(a, np.float64)).sum()) for a in arrays))


@pytest.mark.parametrize("scale", [1e-4, 0.3, 1.0, 7.0, 1e3])
@pytest.mark.parametrize("bound", [0.1, 1.0, 5.0])
def test_clipped_update_never_exceeds_the_bound_and_small_updates_pass_unchanged(scale, bound):
    rng = np.random.default_rng(int(scale * 1e4) + int(bound * 10))
    delta = [rng.normal(0, scale, s) for s in SHAPES]
    clipped, original = clip_update(delta, bound)
    assert original == pytest.approx(norm(delta))
    assert norm(clipped) <= bound * (1 + 1e-12)
    if original <= bound:
        assert all(np.array_equal(c, d) for c, d in zip(clipped, delta, strict=True))
    else:  # only scaled, never rotated
        factor = bound / original
        assert all(np.allclose(c, d * factor) for c, d in zip(clipped, delta, strict=True))


def test_released_update_is_start_plus_clipped_delta_plus_seeded_noise():
    rng = np.random.default_rng(0)
    start = [rng.normal(0, 0.1, s).astype(np.float32) for s in SHAPES]
    new = [(s + rng.normal(0, 1.0, s.shape)).astype(np.float32) for s in start]
    clip, sigma, banks, seed = 1.0, 2.0, 4, 1234
    out = privatize_update(start, new, clip, sigma, banks, seed=seed)
    noise_rng = noise_generator(seed)
    noise = [noise_rng.normal(0, sigma * clip / math.sqrt(banks), s) for s in SHAPES]
    delta = [np.float64(o) - s - z for o, s, z in zip(out, start, noise, strict=True)]
    assert norm(delta) <= clip + 1e-4  # float32 rounding of the sent model only
    assert [o.dtype for o in out] == [np.float32] * len(SHAPES)


def test_noise_std_is_sigma_c_over_sqrt_n():
    zeros = [np.zeros(200_000, np.float64)]
    out = privatize_update(zeros, zeros, clip=0.5, noise_multiplier=3.0, num_banks=9)
    assert np.std(out[0]) == pytest.approx(3.0 * 0.5 / 3, rel=0.01)


def test_noise_is_fresh_unless_a_test_seed_is_given():
    zeros = [np.zeros(1000)]
    a = privatize_update(zeros, zeros, 1.0, 1.0, 3)[0]
    b = privatize_update(zeros, zeros, 1.0, 1.0, 3)[0]
    assert not np.array_equal(a, b)
    c = privatize_update(zeros, zeros, 1.0, 1.0, 3, seed=5)[0]
    d = privatize_update(zeros, zeros, 1.0, 1.0, 3, seed=5)[0]
    assert np.array_equal(c, d)


def test_non_float_buffers_are_sent_unchanged():
    start = [np.zeros(3, np.float32), np.array([7], np.int64)]
    new = [np.ones(3, np.float32), np.array([9], np.int64)]
    out = privatize_update(start, new, 1.0, 1.0, 2, seed=0)
    assert out[1].tolist() == [7] and out[1].dtype == np.int64


def _inputs(n: int = 600) -> ModelInputs:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 12, generator=g)
    y = (torch.rand(n, generator=g) < 0.1).float()
    return ModelInputs("mlp", x, y, torch.zeros(n, dtype=torch.int64))


def test_privatizer_runs_poisson_sampled_dp_sgd_at_the_planned_rate():
    cfg = RunConfig(dp_epsilon=3.0, batch_size=100, local_epochs=2)
    plan = record_mechanism(cfg, 600)
    seen = {}
    privatize = make_privatizer(plan, max_grad_norm=1.0, seed=3)

    def spy(model, optimizer, loader):
        model, optimizer, loader = privatize(model, optimizer, loader)
        seen.update(loader=loader, optimizer=optimizer)
        return model, optimizer, loader

    model = FraudMLP(12, 16)
    before = get_weights(model)
    stats = train_local(model, _inputs(), cfg, privatizer=spy)
    assert isinstance(seen["loader"], DPDataLoader)
    assert seen["loader"].batch_sampler.sample_rate == plan.sample_rate == 1 / 6
    assert seen["optimizer"].noise_multiplier == plan.noise_multiplier
    assert seen["optimizer"].max_grad_norm == 1.0
    assert stats.steps <= plan.steps == 12  # empty Poisson batches are skipped, still accounted
    assert any(not np.array_equal(a, b) for a, b in zip(before, get_weights(model), strict=True))


def test_privatizer_refuses_a_plan_that_does_not_match_the_loader():
    cfg = RunConfig(dp_epsilon=3.0, batch_size=100)
    wrong = Mechanism(1.0, 0.5, 2)  # the loader has 6 batches, not 2
    with pytest.raises(RuntimeError, match="accounting assumed"):
        train_local(FraudMLP(12, 8), _inputs(), cfg, privatizer=make_privatizer(wrong, 1.0))


def test_bank_level_release_uses_uniform_weight_and_record_level_keeps_sample_counts(tmp_path):
    start = [np.zeros(4, np.float32)]
    new = [np.full(4, 10.0, np.float32)]
    both = RunConfig(dp_epsilon=3.0, dp_level="both", num_banks=3)
    rnd = BankRound.start(both, {}, tmp_path, "bank-00", "r", 1, 600, seed=1)
    weights, weight = rnd.release(start, new, 600.0)
    assert weight == UNIFORM_WEIGHT and not np.array_equal(weights[0], new[0])
    record = RunConfig(dp_epsilon=3.0, num_banks=3)
    rnd = BankRound.start(record, {}, tmp_path / "b", "bank-00", "r", 1, 600)
    weights, weight = rnd.release(start, new, 600.0)
    assert weight == 600.0 and np.array_equal(weights[0], new[0])


def test_without_dp_nothing_changes_and_nothing_is_written(tmp_path):
    rnd = BankRound.start(RunConfig(), {}, tmp_path, "bank-00", "r", 1, 600)
    assert rnd.privatizer is None and rnd.metrics() == {}
    new = [np.ones(2)]
    assert rnd.release([np.zeros(2)], new, 5.0) == (new, 5.0)
    assert list(tmp_path.iterdir()) == []


def test_a_bank_with_a_budget_refuses_a_run_without_dp(tmp_path):
    with pytest.raises(BudgetExceededError, match="DP off"):
        BankRound.start(RunConfig(), {"privacy-budget": 5}, tmp_path, "bank-00", "r", 1, 600)


def test_dp_sgd_clips_at_the_grad_clip_times_the_class_weight(tmp_path):
    """The class weight multiplies fraud rows' gradients before Opacus clips them; a bound of
    dp-grad-clip alone would cut them back and undo it."""
    cfg = RunConfig(dp_epsilon=3.0, batch_size=100, dp_grad_clip=0.5, num_banks=3)
    rnd = BankRound.start(cfg, {}, tmp_path, "bank-00", "r", 1, 600, class_weight=8.0)
    assert rnd.grad_clip == 4.0
    seen = {}

    def spy(model, optimizer, loader):
        model, optimizer, loader = rnd.privatizer(model, optimizer, loader)
        seen["optimizer"] = optimizer
        return model, optimizer, loader

    train_local(FraudMLP(12, 8), _inputs(), cfg, privatizer=spy)
    assert seen["optimizer"].max_grad_norm == 4.0
    assert seen["optimizer"].noise_multiplier == rnd.record.noise_multiplier
