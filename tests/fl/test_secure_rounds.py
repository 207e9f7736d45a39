"""Over real rounds of training, the aggregate the operator builds under CKKS and under CrypTen
secret sharing equals the plaintext sample-weighted FedAvg of the very updates the banks
protected (max-abs error <= 1e-5; CrypTen's fixed point is finer still).

The banks are the real ClientApp handlers, called in-process through a recording Grid; each
bank's clear update is recorded inside its own handler (where it legitimately exists) so the
test can compute the exact mean the protected aggregate must equal."""

from __future__ import annotations

import numpy as np
import pytest

from fedfraud.config import RunConfig
from fedfraud.train import build_model, weight_shapes
from fl_client.bank import load_table
from fl_server.app import GLOBAL_MODEL_FILE, run_operator
from secure_agg import Payload, get, provision
from secure_agg.ckks import CKKSAggregator
from secure_agg.crypten_mpc import CryptenAggregator
from simulations.runner import bank_options, open_round_model
from tests.fl.conftest import RecordingGrid

AGGREGATORS = {"ckks": CKKSAggregator, "crypten": CryptenAggregator}


pytestmark = pytest.mark.usefixtures("task_identity")


@pytest.mark.parametrize(
    "backend, model",
    [("ckks", "mlp"), ("ckks", "gnn"), pytest.param("crypten", "mlp", marks=pytest.mark.e2e)],
)
def test_secure_aggregate_equals_plaintext_weighted_fedavg_every_round(
    unequal_banks, tmp_path, monkeypatch, backend, model
):
    banks = sorted(p.name for p in unequal_banks.iterdir() if p.is_dir())
    shared = provision(backend, tmp_path / "keys", len(banks))
    rounds = 3
    cfg = RunConfig(
        num_banks=len(banks),
        num_rounds=rounds,
        model=model,
        secure_agg=backend,
        out_dir=str(tmp_path / "out"),
    )
    grid = RecordingGrid(unequal_banks, banks)
    cls = AGGREGATORS[backend]
    monkeypatch.setattr(cls, "client_protect", grid.recording(cls.client_protect))
    results = run_operator(grid, cfg, grid.options, shared_options=shared)

    bank_side = get(backend, "client", bank_options(cfg, {**shared, **grid.options}, banks[0]))
    table = load_table(unequal_banks / banks[0], banks[0])
    shapes = weight_shapes(build_model(cfg, table))
    aggregates = grid.evaluated  # each round's aggregate, as the operator sent it
    for rnd in range(1, rounds + 1):
        sent = grid.protected[rnd]
        assert set(sent) == set(banks)
        total = sum(weight for _, weight in sent.values())
        assert len({w for _, w in sent.values()}) == len(banks)  # sample counts, all different
        revealed = open_round_model(bank_side, results, banks[0], aggregates[rnd], rnd, shapes)
        for i in range(len(shapes)):
            expected = sum(w * update[i] for update, w in sent.values()) / total
            assert np.abs(revealed[i] - expected).max() <= 1e-5, (rnd, i)
    # The operator's files never held a clear model: the saved global is still protected.
    saved = Payload.from_bytes((tmp_path / "out" / GLOBAL_MODEL_FILE).read_bytes())
    assert saved.backend == backend
    assert saved.to_bytes() == aggregates[results["final"]["selected_round"]].to_bytes()
