"""In a deployment a bank keeps the federated model for scoring: with node-config `model-dir`,
the final (test) evaluation leaves model.pt + model.json there, equal to the selected global
model the bank can decrypt, while the operator's folder only ever holds the encrypted aggregate;
the bank's own metrics stay beside it (bank_metrics.json), never sent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedfraud.config import RunConfig
from fedfraud.data.store import read_bank
from fedfraud.run_model import MODEL_CARD_FILE, MODEL_WEIGHTS_FILE, load_run_model
from fedfraud.scoring import Scorer
from fedfraud.train import weight_shapes
from fl_client.app import BANK_METRICS_FILE
from fl_server.app import GLOBAL_MODEL_FILE, run_operator
from secure_agg import Payload, get, provision
from simulations.runner import bank_options, open_round_model
from tests.fl.conftest import RecordingGrid

pytestmark = pytest.mark.usefixtures("task_identity")


def test_each_bank_keeps_the_decrypted_global_model_and_can_score_with_it(unequal_banks, tmp_path):
    banks = sorted(p.name for p in unequal_banks.iterdir() if p.is_dir())
    shared = provision("ckks", tmp_path / "keys", len(banks))
    cfg = RunConfig(
        num_banks=len(banks), num_rounds=2, secure_agg="ckks", out_dir=str(tmp_path / "operator")
    )
    grid = RecordingGrid(unequal_banks, banks)
    for context in grid.contexts.values():
        bank = context.node_config["bank-id"]
        context.node_config["model-dir"] = str(tmp_path / "models" / bank)
    results = run_operator(grid, cfg, grid.options, shared_options=shared)

    saved = Payload.from_bytes((tmp_path / "operator" / GLOBAL_MODEL_FILE).read_bytes())
    assert saved.backend == "ckks"
    assert not list((tmp_path / "operator").rglob(MODEL_WEIGHTS_FILE))  # no clear model there
    first, _ = load_run_model(tmp_path / "models" / banks[0])
    agg = get("ckks", "client", bank_options(cfg, {**shared, **grid.options}, banks[0]))
    rnd = results["final"]["selected_round"]
    expected = open_round_model(agg, results, banks[0], saved, rnd, weight_shapes(first))
    for bank in banks:
        model_dir = tmp_path / "models" / bank
        assert sorted(p.name for p in model_dir.iterdir()) == sorted(
            [BANK_METRICS_FILE, MODEL_CARD_FILE, MODEL_WEIGHTS_FILE]
        )
        kept = json.loads((model_dir / BANK_METRICS_FILE).read_text())
        assert [e["round"] for e in kept["val"]] == [1, 2]
        assert kept["test"]["n_rows"] > 0 and "pr_auc" in kept["test"]
        model, card = load_run_model(model_dir)
        for got, want in zip(model.state_dict().values(), expected, strict=True):
            np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
        assert card.model == "mlp"

    bank = banks[0]
    scorer = Scorer(tmp_path / "models" / bank, unequal_banks / bank)
    rows = read_bank(unequal_banks / bank).drop(columns="is_fraud").tail(5)
    scored = scorer.score_frame(rows)
    assert len(scored) == 5
    assert scored["fraud_probability"].between(0, 1).all()


def test_unwritable_model_dir_is_a_clear_bank_error(unequal_banks, tmp_path, caplog):
    # Changed with issue 13: the reply carries the generic bank error code only; the message
    # naming the fix is in the bank's own log.
    banks = sorted(p.name for p in unequal_banks.iterdir() if p.is_dir())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    grid = RecordingGrid(unequal_banks, banks)
    next(iter(grid.contexts.values())).node_config["model-dir"] = str(blocker / "models")
    cfg = RunConfig(num_banks=3, num_rounds=1, out_dir=str(tmp_path / "op"))
    with pytest.raises(AssertionError, match="code=4000") as failed:
        run_operator(grid, cfg, grid.options)
    assert "not writable" not in str(failed.value)  # nothing local reaches the operator
    assert "model-dir" in caplog.text and "is not writable" in caplog.text
