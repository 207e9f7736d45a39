"""The sketch stage in a real federation (the operator's Federation and the banks' ClientApp,
in process): under the plaintext and the CKKS backend the banks open the consortium sketch and
train and evaluate on their cross-bank columns, which equal what the researcher computes from
the clear sketch (the secure sum is that sum)."""

from __future__ import annotations

import numpy as np
import pytest

import fl_client.app as client_app
from fedfraud.config import RunConfig
from fedfraud.crossbank.features import bank_features, clear_consortium
from fedfraud.crossbank.sketch import FEATURES
from fedfraud.data.store import list_banks, read_bank
from fl_server.app import run_operator
from secure_agg import provision
from secure_agg.consortium import SKETCH_KEY_FILE
from tests.fl.conftest import RecordingGrid

pytestmark = pytest.mark.usefixtures("task_identity")


@pytest.mark.parametrize("backend", ["none", "ckks"])
def test_banks_train_and_evaluate_on_the_consortium_sketch(
    small_consortium, tmp_path, monkeypatch, backend
):
    banks = list_banks(small_consortium)
    shared = provision(backend, tmp_path / "keys", len(banks)) if backend != "none" else {}
    cfg = RunConfig(
        num_banks=3, num_rounds=1, secure_agg=backend, cross_bank="sketch", sketch_width=512
    )
    grid = RecordingGrid(small_consortium, banks)
    seen: dict[str, set] = {}
    real_inputs = client_app.model_inputs

    def spying_inputs(model, table, key, scaler):
        seen.setdefault(table.name, set()).add(grid.current_type)
        inputs[table.name] = table
        return real_inputs(model, table, key, scaler)

    inputs: dict = {}
    monkeypatch.setattr(client_app, "model_inputs", spying_inputs)
    results = run_operator(grid, cfg, grid.options, shared_options=shared)

    assert results["sketch_stage"]["banks"] == banks
    assert results["rounds"][0]["num_results"] == 3
    assert all(seen[b] == {"train", "evaluate"} for b in banks)
    key = (small_consortium.parent / "consortium" / SKETCH_KEY_FILE).read_bytes()
    frames = {b: read_bank(small_consortium / b) for b in banks}
    clear = clear_consortium(frames, key, cfg.sketch_spec())
    for bank in banks:
        table = inputs[bank]
        assert table.feature_names[-len(FEATURES) :] == FEATURES
        got = table.x[:, -len(FEATURES) :]
        want = bank_features(frames[bank], clear, key, cfg.sketch_spec())
        np.testing.assert_allclose(got, want, atol=1e-3)
        assert (got > 0).any(axis=1).mean() > 0.05  # the columns carry other banks' activity


def test_cross_bank_off_runs_no_sketch_stage(small_consortium, tmp_path, monkeypatch):
    banks = list_banks(small_consortium)
    grid = RecordingGrid(small_consortium, banks)
    sent = []
    real = grid.send_and_receive
    monkeypatch.setattr(
        grid, "send_and_receive", lambda m, timeout=None: sent.extend(m) or real(m, timeout)
    )
    results = run_operator(grid, RunConfig(num_banks=3, num_rounds=1), grid.options)
    assert "sketch_stage" not in results
    assert {m.metadata.message_type for m in sent} == {
        "query.stats",
        "train",
        "evaluate",
        "query.pooled",
    }
