"""What leaves a bank in the cross-bank sketch stage, byte for byte: under CKKS the bank's
clear sketch cells (its per-account activity) never appear in what its SuperNode pushes; the
plaintext backend is the control that shows the search would find them."""

from __future__ import annotations

import secrets

import numpy as np
import pytest

import fl_client.app as client_app
from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from secure_agg import Payload
from tests.fl.conftest import bank_consortium
from tests.fl.test_what_a_bank_sends import BANK, BANKS, Spy, backend_options, found, send
from tests.fl.test_what_a_bank_sends import wire_bytes as wire

pytestmark = pytest.mark.usefixtures("task_identity")


def sketch_reply(banks, tmp_path, backend: str, monkeypatch):
    """BANK's reply to the sketch stage, the clear sketch it protected and the reply."""
    bank_options, _ = backend_options(backend, tmp_path)
    config = RunConfig(num_banks=3, num_rounds=1, secure_agg=backend, cross_bank="sketch")
    policies = bank_consortium(tmp_path / "consortium", BANKS)
    spy: list[Spy] = []
    real_aggregator = client_app.aggregator

    def spying_aggregator(cfg, options):
        spy.append(Spy(real_aggregator(cfg, options)))
        return spy[-1]

    monkeypatch.setattr(client_app, "aggregator", spying_aggregator)
    options = {**bank_options, **policies[BANK]}
    run = secrets.token_hex(8)
    reply = send(
        client_app.sketch, banks, BANK, config, options, "query.sketch", run, None, "sketch"
    )
    assert Payload.from_record(reply.content[rm.UPDATE]).backend == backend
    ((vector, weight),) = spy[-1].protected
    assert weight == 1.0 and vector.size == config.sketch_spec().size
    return wire(reply), vector, reply


def cell_patterns(vector: np.ndarray) -> dict[str, list[bytes]]:
    """Windows of 4 consecutive cells around the bank's busy cells (16+ bytes each)."""
    busy = np.flatnonzero(vector)
    starts = busy[np.linspace(0, busy.size - 1, num=min(40, busy.size), dtype=int)]
    return {
        f"sketch cells ({dtype})": [vector[s : s + 4].astype(dtype).tobytes() for s in starts]
        for dtype in ("<f4", "<f8")
    }


@pytest.mark.skipif("ckks" not in __import__("secure_agg").available(), reason="no CKKS backend")
def test_ckks_bank_sketch_leaves_only_as_ciphertext(small_consortium, tmp_path, monkeypatch):
    blob, vector, reply = sketch_reply(small_consortium, tmp_path, "ckks", monkeypatch)
    assert np.count_nonzero(vector) > 100  # the bank did encode its accounts ...
    assert len(blob) > 100_000  # ... and sent ciphertexts of them
    assert set(found(blob, cell_patterns(vector)).values()) == {0}
    assert set(reply.content[rm.METRICS]) == {"protect_s"}  # only a timing in the clear


def test_control_plaintext_bank_visibly_sends_its_sketch(small_consortium, tmp_path, monkeypatch):
    blob, vector, _ = sketch_reply(small_consortium, tmp_path, "none", monkeypatch)
    patterns = cell_patterns(vector)
    assert found(blob, patterns)["sketch cells (<f4)"] == len(patterns["sketch cells (<f4)"])
