"""Attack 2 (issue 14): the operator forges a CKKS "aggregate" to use a bank as a decryption
oracle, and colludes with one bank (which holds the shared CKKS secret key) to read another.

Before masking (main at 14ae96a): bank B accepted bank A's ciphertext alone, relayed with
`count=1`, and returned A's exact update; the operator could add chosen plaintexts to A's
ciphertext and read B's accept/reject reason (~40 queries recovered A's weight, then single
coordinates); B decrypting A's ciphertext read A's update directly; and 95 % of released fp32
weights differed between two encryptions of the same updates. Now every contribution is
one-time padded with pairwise roster masks: B rejects the forgery with one fixed message and
stops answering for the run, and B's key opens A's ciphertext to noise.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tenseal as ts

import secure_agg
from secure_agg import keys
from secure_agg.base import Payload, StageContext
from secure_agg.ckks import AggregateRejected
from secure_agg.roster import IDENTITY_FILE, ROSTER_FILE, init_roster

BANKS = ("bank-a", "bank-b", "bank-c")
SHAPES = [(64, 30), (64,)]
WEIGHT = 5_000.0


@pytest.fixture()
def consortium(tmp_path):
    key_dir = keys.init_keys(tmp_path / "ckks").secret.parent
    init_roster(list(BANKS), tmp_path / "roster")

    def bank(name: str):
        return secure_agg.get(
            "ckks",
            "client",
            {
                "keys-dir": str(key_dir),
                "identity-path": str(tmp_path / "roster" / name / IDENTITY_FILE),
                "roster-path": str(tmp_path / "roster" / ROSTER_FILE),
            },
        )

    operator = secure_agg.get("ckks", "server", {"keys-dir": str(key_dir)})
    return {b: bank(b) for b in BANKS}, operator


def stage(bank: str) -> StageContext:
    return StageContext("run-1", 1, "train", BANKS, bank)


def a_update() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.uniform(-1, 1, s) for s in SHAPES]


def plus_plaintext(payload: Payload, ctx: ts.Context, value: float) -> Payload:
    """What the operator can do with the parameters alone: ciphertext + chosen plaintext."""
    chunks = []
    for chunk in payload.chunks:
        vec = ts.ckks_vector_from(ctx, chunk)
        chunks.append((vec + [value] * vec.size()).serialize())
    return dataclasses.replace(payload, chunks=tuple(chunks), meta={**payload.meta, "count": 3})


def test_bank_a_ciphertext_relayed_as_the_aggregate_is_rejected(consortium):
    banks, operator = consortium
    payload_a = banks["bank-a"].client_protect(a_update(), WEIGHT, 1, context=stage("bank-a"))
    forged = dataclasses.replace(payload_a, meta={**payload_a.meta, "count": 3})
    with pytest.raises(AggregateRejected) as info:
        banks["bank-b"].client_reveal(forged, SHAPES, context=stage("bank-b"))
    assert str(info.value) == "aggregate rejected; this bank stops for the run"


def test_chosen_plaintext_queries_get_one_fixed_answer_then_nothing(consortium):
    banks, operator = consortium
    payloads = {b: banks[b].client_protect(a_update(), WEIGHT, 1, context=stage(b)) for b in BANKS}
    honest = operator.server_aggregate(payloads).payload
    answers = []
    for value in (0.0, 1e-3, -5.0, 2.0**-21):
        probe = plus_plaintext(payloads["bank-a"], operator.keys.context, value)
        with pytest.raises(AggregateRejected) as info:
            banks["bank-b"].client_reveal(probe, SHAPES, context=stage("bank-b"))
        answers.append(str(info.value))
    assert len(set(answers)) == 1  # no bit depends on the probe
    # After the first forgery B answers nothing more in this run, not even the honest sum.
    with pytest.raises(AggregateRejected):
        banks["bank-b"].client_reveal(honest, SHAPES, context=stage("bank-b"))
    with pytest.raises(AggregateRejected):
        banks["bank-b"].client_protect(a_update(), WEIGHT, 2, context=stage("bank-b"))
    # An honest bank that saw no forgery still reveals the honest sum.
    mean = banks["bank-c"].client_reveal(honest, SHAPES, context=stage("bank-c"))
    assert max(float(np.max(np.abs(m - u))) for m, u in zip(mean, a_update(), strict=True)) <= 1e-5


def test_operator_with_one_banks_secret_key_reads_only_noise_of_another(consortium):
    banks, _ = consortium
    payload_a = banks["bank-a"].client_protect(a_update(), WEIGHT, 1, context=stage("bank-a"))
    # Bank B colludes: it decrypts A's contribution with the shared CKKS secret key.
    secret = banks["bank-b"].keys.context
    slots = np.concatenate([ts.ckks_vector_from(secret, c).decrypt() for c in payload_a.chunks])
    fixed = banks["bank-b"].fixed_point(len(BANKS))
    truth = np.concatenate([u.ravel() for u in a_update()]) * WEIGHT
    guess = np.ldexp(np.rint(np.ldexp(slots, fixed.slot_shift)), -fixed.frac_bits)[: truth.size]
    # A one-time pad mod 2^k: the decryption is uncorrelated with A's weighted update.
    assert abs(np.corrcoef(guess, truth)[0, 1]) < 0.1
    # Residues spread over the whole modulus (~2^(k-1-f) = 8e6), three orders above |w x u|.
    assert np.median(np.abs(guess - truth)) > 100 * np.max(np.abs(truth))
