"""The one-run ε lower bound (Steinke, Nasr & Jagielski 2023, Corollary 5.4) against values
derived by hand, and its validity and power on randomized response simulated at a known ε."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedfraud.privacy.membership import advantage, null_advantage, tpr_at_fpr
from fedfraud.privacy.one_run import epsilon_lower_bound, one_run_audit, p_value


def test_p_value_without_delta_is_the_binomial_tail():
    # r = 4 guesses at q = e^ε/(1+e^ε) = 3/4 (ε = ln 3): P[B >= 3] = 4·(3/4)³·(1/4) + (3/4)⁴
    assert p_value(10, 4, 3, math.log(3), 0.0) == pytest.approx(0.73828125, rel=1e-12)


def test_p_value_delta_term_by_hand():
    # m = 10, r = 2, v = 1, ε = 0 (q = 1/2): β = P[B >= 1] = 3/4; α = P[B = 0] / 1 = 1/4;
    # p = β + 2mδα = 0.75 + 20 · 0.01 · 0.25 = 0.8
    assert p_value(10, 2, 1, 0.0, 0.01) == pytest.approx(0.8, rel=1e-12)


def test_all_correct_bound_by_hand():
    # 10 of 10 right, δ = 0: p(ε) = q^10 < 0.05 iff q < 0.05^(1/10), so ε* = logit(0.05^(1/10)).
    q = 0.05 ** (1 / 10)
    assert epsilon_lower_bound(10, 10, 10, 0.0, 0.05) == pytest.approx(
        math.log(q / (1 - q)), abs=1e-5
    )


def test_chance_guessing_proves_nothing():
    assert epsilon_lower_bound(1000, 200, 100, 1e-5) == 0.0


def _randomized_response(rng, m: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Each canary's score reports its membership truthfully with probability e^ε/(1+e^ε):
    exactly ε-DP per canary, the worst case the bound is tight for."""
    included = rng.random(m) < 0.5
    truthful = rng.random(m) < 1 / (1 + math.exp(-eps))
    scores = np.where(truthful, included, ~included).astype(float) + 1e-3 * rng.random(m)
    return scores, included


def test_bound_is_valid_and_has_power_on_randomized_response():
    rng = np.random.default_rng(0)
    eps, trials = 2.0, 200
    bounds = [
        one_run_audit(*_randomized_response(rng, 1000, eps), delta=0.0).epsilon_lower_bound
        for _ in range(trials)
    ]
    # A valid 95 % lower bound exceeds the true ε in at most 5 % of runs (+3 sd of 200 trials).
    assert np.mean(np.array(bounds) > eps) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)
    assert np.median(bounds) > 0.5 * eps  # and not a trivial one


def test_membership_metrics_on_a_perfect_and_a_blind_attack():
    members = np.array([True] * 500 + [False] * 1500)
    perfect = members.astype(float)
    assert advantage(perfect, members) == 1.0
    assert tpr_at_fpr(perfect, members) == 1.0
    blind = np.random.default_rng(1).random(2000)
    assert advantage(blind, members) <= null_advantage(members, 0.99)
    assert tpr_at_fpr(blind, members) <= 0.02
