"""CKKS backend: matches plaintext FedAvg, keeps keys where they belong, rejects bad payloads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tenseal as ts

import secure_agg
from fedfraud.errors import ConfigError, PayloadError
from secure_agg import keys
from secure_agg.base import Payload
from secure_agg.ckks import MAX_BANKS, CKKSAggregator

SHAPES = [(200, 249), (200,), (50,)]  # 50,050 parameters, a realistic MLP
NUM_PARAMS = sum(int(np.prod(s)) for s in SHAPES)
WEIGHTS = {"bank-00": 1_200.0, "bank-01": 35_000.0, "bank-02": 640_000.0}
TOL = 1e-5


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory):
    return keys.init_keys(tmp_path_factory.mktemp("keys")).secret.parent


@pytest.fixture(scope="module")
def other_key_dir(tmp_path_factory):
    return keys.init_keys(tmp_path_factory.mktemp("other-keys")).secret.parent


@pytest.fixture(scope="module")
def bank(key_dir) -> CKKSAggregator:
    return secure_agg.get("ckks", "client", {"keys-dir": str(key_dir)})


@pytest.fixture(scope="module")
def operator(key_dir) -> CKKSAggregator:
    return secure_agg.get("ckks", "server", {"keys-dir": str(key_dir)})


@pytest.fixture(scope="module")
def other_bank(other_key_dir) -> CKKSAggregator:
    return secure_agg.get("ckks", "client", {"keys-dir": str(other_key_dir)})


@pytest.fixture(scope="module")
def updates() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(7)
    return {b: [rng.uniform(-10, 10, s) for s in SHAPES] for b in WEIGHTS}


@pytest.fixture(scope="module")
def payloads(bank, updates) -> dict[str, Payload]:
    return {b: bank.client_protect(updates[b], WEIGHTS[b], 3) for b in WEIGHTS}


def plaintext_mean(updates, weights) -> list[np.ndarray]:
    none_c, none_s = secure_agg.get("none", "client"), secure_agg.get("none", "server")
    protected = {b: none_c.client_protect(updates[b], w, 3) for b, w in weights.items()}
    return none_c.client_reveal(none_s.server_aggregate(protected).payload, SHAPES)


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x.astype(np.float64) - y))) for x, y in zip(a, b, strict=True))


def test_aggregate_equals_plaintext_weighted_mean(bank, operator, updates, payloads):
    agg = operator.server_aggregate(payloads)
    assert agg.included == tuple(WEIGHTS) and not agg.rejected
    mean = bank.client_reveal(agg.payload, SHAPES)
    assert [m.shape for m in mean] == SHAPES and all(m.dtype == np.float32 for m in mean)
    assert max_diff(mean, plaintext_mean(updates, WEIGHTS)) <= TOL


def test_payload_survives_flower_record_and_file_round_trips(bank, operator, payloads):
    moved = {b: Payload.from_record(p.to_record()) for b, p in payloads.items()}
    agg = operator.server_aggregate(moved).payload
    mean = bank.client_reveal(Payload.from_bytes(agg.to_bytes()), SHAPES)
    direct = bank.client_reveal(operator.server_aggregate(payloads).payload, SHAPES)
    assert max_diff(mean, direct) <= TOL


def test_whole_update_is_packed_into_few_ciphertexts(bank, payloads):
    # 50,050 values + the weight in the 1,150 free slots: ceil(50,051 / 2,048) = 25 ciphertexts.
    assert all(len(p.chunks) == 25 for p in payloads.values())
    assert bank.vector_size(2048 * 3 - 10) == 2048 * 4  # at least 64 copies of the weight


def test_upload_is_at_most_8x_fp32(payloads):
    assert all(p.nbytes() <= 8 * 4 * NUM_PARAMS for p in payloads.values())


def test_payload_metadata_reveals_no_weight(payloads):
    for bank_id, payload in payloads.items():
        assert set(payload.meta) == {"fingerprint", "params", "round"}
        assert WEIGHTS[bank_id] not in payload.meta.values()


def test_large_weights_and_values_do_not_overflow(bank, operator, updates):
    weights = {b: 1_000_000.0 for b in WEIGHTS}
    big = {b: [np.clip(a * 1.5, -15, 15) for a in u] for b, u in updates.items()}
    protected = {b: bank.client_protect(big[b], w, 1) for b, w in weights.items()}
    mean = bank.client_reveal(operator.server_aggregate(protected).payload, SHAPES)
    assert max_diff(mean, plaintext_mean(big, weights)) <= TOL


def test_max_banks_at_the_bound_do_not_overflow(bank, operator):
    # Worst case: every bank at the largest weight with the same extreme values.
    update = [np.array([16.0, -16.0, 9.5, 0.0])]
    protected = bank.client_protect(update, 2.0**20, 1)
    agg = operator.server_aggregate({f"bank-{i:04d}": protected for i in range(MAX_BANKS)})
    assert len(agg.included) == MAX_BANKS
    (mean,) = bank.client_reveal(agg.payload, [(4,)])
    np.testing.assert_allclose(mean, update[0], atol=TOL)


def test_update_beyond_the_headroom_is_refused_at_the_bank(bank):
    with pytest.raises(PayloadError, match="clip the update"):
        bank.client_protect([np.full(10, 1_000.0)], 1_000_000, 1)
    assert bank.max_weighted_value == 2.0**24
    bank.client_protect([np.full(10, 16.0)], 2.0**20, 1)  # exactly at the bound is fine
    with pytest.raises(PayloadError, match="NaN"):
        bank.client_protect([np.array([np.nan, 1.0])], 10, 1)


def test_server_context_has_no_secret_key(operator, bank, updates, payloads):
    assert not operator.keys.context.is_private()
    with pytest.raises(ConfigError, match="only banks"):
        operator.client_protect(updates["bank-00"], 1.0, 1)
    agg = operator.server_aggregate(payloads).payload
    with pytest.raises(ConfigError, match="only banks"):
        operator.client_reveal(agg, SHAPES)


def test_server_built_from_secret_context_is_refused(bank, key_dir):
    with pytest.raises(ConfigError, match="refusing to run the CKKS operator"):
        CKKSAggregator("server", bank.keys)
    secret_file = key_dir / keys.SECRET_FILE
    with pytest.raises(ConfigError, match="SECRET key"):
        secure_agg.get("ckks", "server", {"ckks-public-context": str(secret_file)})


def test_bank_needs_the_secret_context(operator, key_dir):
    with pytest.raises(ConfigError, match="needs the secret context"):
        CKKSAggregator("client", operator.keys)
    with pytest.raises(ConfigError, match="no secret key"):
        secure_agg.get("ckks", "client", {"ckks-secret-context": str(key_dir / keys.PUBLIC_FILE)})


def test_missing_key_options_say_what_to_set():
    with pytest.raises(ConfigError, match="ckks-public-context.*fedfraud keys init"):
        secure_agg.get("ckks", "server", {})


def _replace(p: Payload, i: int, chunk: bytes) -> Payload:
    chunks = list(p.chunks)
    chunks[i] = chunk
    return dataclasses.replace(p, chunks=tuple(chunks))


def _bad_payloads(good: Payload, other_bank, updates, bank) -> list[tuple[str, str, Payload]]:
    """(case, expected reason, payload) for every way a payload can be wrong."""
    small = bank.client_protect([a[:10] for a in updates["bank-00"]], 1.0, 3)
    last = len(good.chunks) - 1
    short = ts.ckks_vector(bank.keys.context, [1.0] * 10).serialize()
    return [
        ("wrong backend", "made by backend 'none'", dataclasses.replace(good, backend="none")),
        (
            "wrong fingerprint",
            "other CKKS keys",
            dataclasses.replace(good, meta={**good.meta, "fingerprint": "ab" * 32}),
        ),
        (
            "payload from another key set",
            "other CKKS keys",
            other_bank.client_protect(updates["bank-00"], 1.0, 3),
        ),
        ("wrong model size", "has 2510 parameters, expected 50050", small),
        (
            "missing ciphertext",
            "has 24 ciphertexts, expected 25",
            dataclasses.replace(good, chunks=good.chunks[:-1]),
        ),
        ("truncated ciphertext", "does not deserialize", _replace(good, 3, good.chunks[3][:-100])),
        ("garbage ciphertext", "does not deserialize", _replace(good, 0, b"\x00" * 5000)),
        ("oversized ciphertext", "above the", _replace(good, 1, good.chunks[1] + b"\0" * 70_000)),
        (
            "malformed size",
            "invalid number of parameters",
            dataclasses.replace(good, meta={**good.meta, "params": "many"}),
        ),
        ("short ciphertext", "holds 10 values, expected 2048", _replace(good, last, short)),
    ]


def test_each_bad_payload_is_rejected_and_the_others_still_aggregate(
    bank, operator, other_bank, updates, payloads
):
    honest = {b: payloads[b] for b in ("bank-01", "bank-02")}
    expected = plaintext_mean(updates, {b: WEIGHTS[b] for b in honest})  # renormalized
    for case, reason, bad in _bad_payloads(payloads["bank-00"], other_bank, updates, bank):
        agg = operator.server_aggregate({"bank-00": bad, **honest})
        assert agg.included == ("bank-01", "bank-02"), case
        assert reason in agg.rejected["bank-00"], (case, agg.rejected)
        assert max_diff(bank.client_reveal(agg.payload, SHAPES), expected) <= TOL, case


def test_a_wrong_first_payload_does_not_set_the_expected_size(bank, operator, updates, payloads):
    odd = bank.client_protect([a[:10] for a in updates["bank-00"]], 1.0, 3)
    agg = operator.server_aggregate({"bank-000": odd, **payloads})
    assert "parameters, expected 50050" in agg.rejected["bank-000"]
    assert agg.included == tuple(WEIGHTS)


def test_num_params_option_fixes_the_expected_size(key_dir, payloads):
    strict = secure_agg.get(
        "ckks", "server", {"keys-dir": str(key_dir), "ckks-num-params": NUM_PARAMS - 1}
    )
    with pytest.raises(PayloadError, match="no valid payloads"):
        strict.server_aggregate(payloads)


def test_no_valid_payload_raises(operator, payloads):
    bad = {b: dataclasses.replace(p, backend="none") for b, p in payloads.items()}
    with pytest.raises(PayloadError, match="no valid payloads to aggregate: bank-00"):
        operator.server_aggregate(bad)


def test_reveal_with_other_keys_fails_clearly(other_bank, operator, payloads):
    agg = operator.server_aggregate(payloads).payload
    with pytest.raises(PayloadError, match="other CKKS keys"):
        other_bank.client_reveal(agg, SHAPES)
    # Even with the fingerprint forged, decrypting under the wrong key is caught.
    forged = dataclasses.replace(agg, meta={**agg.meta, "fingerprint": other_bank.keys.fingerprint})
    with pytest.raises(PayloadError, match="outside what the banks could have sent"):
        other_bank.client_reveal(forged, SHAPES)


def test_reveal_of_a_tampered_aggregate_fails(bank, operator, payloads):
    agg = operator.server_aggregate(payloads).payload
    last = len(agg.chunks) - 1
    # The operator negating the sum: valid ciphertexts, impossible (negative) total weight.
    negated = [ts.ckks_vector_from(operator.keys.context, c).neg().serialize() for c in agg.chunks]
    cases = [
        ("does not deserialize", _replace(agg, 2, agg.chunks[2][:-1])),
        ("ciphertexts, expected", dataclasses.replace(agg, chunks=agg.chunks[1:])),
        ("declares 0 banks", dataclasses.replace(agg, meta={**agg.meta, "count": 0})),
        ("model has", dataclasses.replace(agg, meta={**agg.meta, "params": NUM_PARAMS - 1})),
        ("copies of the total weight disagree", _replace(agg, last, agg.chunks[0])),
        ("no positive total weight", dataclasses.replace(agg, chunks=tuple(negated))),
    ]
    for reason, case in cases:
        with pytest.raises(PayloadError, match=reason):
            bank.client_reveal(case, SHAPES)
    with pytest.raises(PayloadError, match="model has"):
        bank.client_reveal(agg, [(10,)])


def test_simulation_provisioning_points_both_roles_at_one_key_set(tmp_path):
    options = {**secure_agg.base.provision("ckks", tmp_path, num_banks=3), "keys-dir": ""}
    bank = secure_agg.get("ckks", "client", options)
    operator = secure_agg.get("ckks", "server", options)
    assert bank.keys.fingerprint == operator.keys.fingerprint
    assert not operator.keys.context.is_private()
