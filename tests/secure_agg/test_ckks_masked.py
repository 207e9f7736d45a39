"""Masked CKKS: pairwise masks from roster keys cancel only in the whole stage's sum."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import secure_agg
from fedfraud.errors import ConfigError, PayloadError
from secure_agg import keys
from secure_agg.base import StageContext
from secure_agg.ckks import AggregateRejected, CKKSAggregator
from secure_agg.roster import IDENTITY_FILE, ROSTER_FILE, init_roster

BANKS = ("bank-00", "bank-01", "bank-02")
SHAPES = [(200, 249), (200,), (50,)]  # 50,050 parameters
WEIGHTS = {"bank-00": 1_200.0, "bank-01": 35_000.0, "bank-02": 64_000.0}
TOL = 1e-5


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    root = tmp_path_factory.mktemp("consortium")
    key_dir = keys.init_keys(root / "ckks").secret.parent
    init_roster(list(BANKS), root / "roster")
    return root, key_dir


def bank_options(consortium, bank: str) -> dict[str, str]:
    root, key_dir = consortium
    return {
        "keys-dir": str(key_dir),
        "identity-path": str(root / "roster" / bank / IDENTITY_FILE),
        "roster-path": str(root / "roster" / ROSTER_FILE),
    }


def fresh_banks(consortium) -> dict[str, CKKSAggregator]:
    # A new aggregator per test: banks remember halted runs and used stages.
    return {b: secure_agg.ckks._factory("client", bank_options(consortium, b)) for b in BANKS}


def stage(bank: str, participants=BANKS, run: str = "run-1", rnd: int = 1) -> StageContext:
    return StageContext(run, rnd, "train", tuple(participants), bank)


@pytest.fixture(scope="module")
def operator(consortium) -> CKKSAggregator:
    return secure_agg.get("ckks", "server", {"keys-dir": str(consortium[1])})


@pytest.fixture(scope="module")
def updates() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(11)
    return {b: [rng.uniform(-10, 10, s) for s in SHAPES] for b in BANKS}


def weighted_mean(updates, banks=BANKS) -> list[np.ndarray]:
    total = sum(WEIGHTS[b] for b in banks)
    return [sum(WEIGHTS[b] * updates[b][i] for b in banks) / total for i in range(len(SHAPES))]


def max_diff(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - y))) for x, y in zip(a, b, strict=True)
    )


def protect_all(banks, updates, participants=BANKS, run="run-1"):
    return {
        b: banks[b].client_protect(updates[b], WEIGHTS[b], 1, context=stage(b, participants, run))
        for b in participants
    }


def test_masked_aggregate_equals_weighted_fedavg_within_1e5(consortium, operator, updates):
    banks = fresh_banks(consortium)
    agg = operator.server_aggregate(protect_all(banks, updates))
    mean = banks["bank-00"].client_reveal(agg.payload, SHAPES, context=stage("bank-00"))
    assert max_diff(mean, weighted_mean(updates)) <= TOL


def test_two_encryptions_of_the_same_updates_release_identical_values(
    consortium, operator, updates
):
    first = fresh_banks(consortium)
    second = fresh_banks(consortium)  # the same updates, encrypted again (fresh CKKS noise)
    a = operator.server_aggregate(protect_all(first, updates)).payload
    b = operator.server_aggregate(protect_all(second, updates)).payload
    assert a.chunks != b.chunks
    ctx = stage("bank-01")
    for x, y in zip(
        first["bank-01"].client_reveal(a, SHAPES, context=ctx),
        second["bank-01"].client_reveal(b, SHAPES, context=ctx),
        strict=True,
    ):
        np.testing.assert_array_equal(x, y)


def test_a_sum_missing_one_participant_is_rejected_and_a_rerun_with_survivors_works(
    consortium, operator, updates
):
    banks = fresh_banks(consortium)
    payloads = protect_all(banks, updates)
    del payloads["bank-02"]  # dropped out after the others sent
    agg = operator.server_aggregate(payloads).payload
    with pytest.raises(AggregateRejected):
        banks["bank-00"].client_reveal(agg, SHAPES, context=stage("bank-00"))
    # The operator re-runs the stage with the surviving set: fresh masks, a sum that unmasks
    # (a four-bank roster would leave three survivors; here a new run shows the mechanism).
    survivors = fresh_banks(consortium)
    agg = operator.server_aggregate(protect_all(survivors, updates, run="run-2")).payload
    mean = survivors["bank-01"].client_reveal(agg, SHAPES, context=stage("bank-01", run="run-2"))
    assert max_diff(mean, weighted_mean(updates)) <= TOL


def test_a_bank_never_masks_two_vectors_with_the_same_stage_masks(consortium, updates):
    bank = fresh_banks(consortium)["bank-00"]
    bank.client_protect(updates["bank-00"], 1.0, 1, context=stage("bank-00"))
    with pytest.raises(PayloadError, match="already contributed"):
        bank.client_protect(updates["bank-01"], 1.0, 1, context=stage("bank-00"))


def test_fewer_than_three_participants_or_strangers_are_refused(consortium, updates):
    bank = fresh_banks(consortium)["bank-00"]
    with pytest.raises(ConfigError, match="at least 3"):
        bank.client_protect(updates["bank-00"], 1.0, 1, context=stage("bank-00", BANKS[:2]))
    with pytest.raises(ConfigError, match="not in the consortium roster"):
        bank.client_protect(
            updates["bank-00"], 1.0, 1, context=stage("bank-00", (*BANKS, "mallory"))
        )


def test_masked_bank_refuses_to_run_without_a_stage_context(consortium, updates):
    bank = fresh_banks(consortium)["bank-00"]
    with pytest.raises(ConfigError, match="stage context"):
        bank.client_protect(updates["bank-00"], 1.0, 1)


def test_identity_that_is_not_in_the_pinned_roster_is_refused(consortium, tmp_path):
    init_roster(list(BANKS), tmp_path)  # other keys under the same names
    options = {**bank_options(consortium, "bank-00"), "roster-path": str(tmp_path / ROSTER_FILE)}
    with pytest.raises(ConfigError, match="does not match"):
        secure_agg.ckks._factory("client", options)


def test_mask_bits_follow_the_participant_count(consortium):
    bank = fresh_banks(consortium)["bank-00"]
    three, ten = bank.fixed_point(3), bank.fixed_point(10)
    assert three.mod_bits > ten.mod_bits and three.frac_bits >= ten.frac_bits >= 9
    assert dataclasses.asdict(three)["slot_shift"] == bank.layout.scale_bits - 15
