"""A malicious operator and the cross-bank sketch: banks open the consortium sketch only with
a proof that it sums at least min-contributors validly signed sketches of this run's sketch
stage, and they never open a second, different one."""

from __future__ import annotations

import pytest

from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fl_server.consortium import Proof
from fl_server.sketch_stage import run_sketch_stage, sketch_records
from tests.attacks.conftest import Consortium

pytestmark = pytest.mark.usefixtures("task_identity")


def train_with_sketch(banks: Consortium, fed, nodes):
    extra, proofs, settings = sketch_records(fed.state)
    return fed.broadcast(
        nodes,
        rm.TRAIN_STAGE,
        1,
        {rm.SCALER: fed.state.scaler, **extra},
        {rm.SCALER: fed.state.scaler_proof, **proofs},
        settings,
    )


def refused(fed, caplog, why: str) -> bool:
    """Every bank answered with the refusal code, and logged `why` (not some other reason)."""
    codes = {r.error.code if r.has_error() else None for r in fed.grid.replies[-3:]}
    return codes == {rm.REFUSED_ERROR_CODE} and why in caplog.text


@pytest.mark.parametrize("backend", ["none", "ckks"])
def test_bank_refuses_a_sketch_without_a_valid_proof(small_consortium, tmp_path, backend, caplog):
    banks = Consortium(small_consortium, tmp_path, backend=backend)
    cfg = RunConfig(
        num_banks=3, num_rounds=1, secure_agg=backend, cross_bank="sketch", sketch_width=256
    )
    fed = banks.operator(cfg)
    nodes = sorted(banks.contexts)
    banks.stats(fed)
    run_sketch_stage(fed, nodes)
    sketch, honest = fed.state.sketch, fed.state.sketch_proof

    fed.state.sketch_proof = None  # no proof at all
    assert train_with_sketch(banks, fed, nodes).payloads == {}
    assert refused(fed, caplog, "sketch of sketch 0: no valid contribution proof")

    # A proof of another stage (the statistics' valid signatures) for the sketch aggregate.
    caplog.clear()
    fed.state.sketch_proof = fed.state.scaler_proof
    assert train_with_sketch(banks, fed, nodes).payloads == {}
    assert refused(fed, caplog, "proof is for")

    # Two banks' signed sketches: their sum would show each the other's accounts.
    caplog.clear()
    doc = Proof.from_state(honest)
    two = {b: doc.signatures[b] for b in ("bank-00", "bank-01")}
    payloads = {b: p for b, p in doc.payloads.items() if b in two}
    fed.state.sketch = fed.aggregator.server_aggregate(payloads).payload
    fed.state.sketch_proof = Proof(
        doc.run, 0, rm.SKETCH, doc.participants, two, payloads
    ).to_state()
    assert train_with_sketch(banks, fed, nodes).payloads == {}
    assert refused(fed, caplog, "2 signed contribution(s)")

    # The honest aggregate and proof: every bank opens it and trains.
    fed.state.sketch, fed.state.sketch_proof = sketch, honest
    assert sorted(train_with_sketch(banks, fed, nodes).payloads) == sorted(banks.node)
