"""`fedfraud simulate` with cross-bank=sketch (Flower's simulation engine): the sketch stage
runs, the model takes the cross-bank columns, every arm is scored on the same rows, and
results.json says what the sketch cost and how far it is from exact consortium counts."""

import json

import pytest
import torch

from fedfraud.config import RunConfig
from fedfraud.crossbank.sketch import FEATURES
from fl_client.bank import load_table
from simulations.runner import simulate


@pytest.mark.parametrize(
    "backend, baselines",
    [
        ("none", True),
        pytest.param("ckks", False, marks=pytest.mark.e2e),
        pytest.param("secagg+", False, marks=pytest.mark.e2e),
    ],
)
def test_simulation_with_cross_bank_sketch(small_consortium, tmp_path, backend, baselines):
    cfg = RunConfig(
        num_banks=3,
        num_rounds=1,
        secure_agg=backend,
        data_format="banks",
        data_path=str(small_consortium),
        cross_bank="sketch",
        sketch_width=1024,
        client_cpus=0.5,
    )
    results = simulate(cfg, tmp_path / "run", baselines=baselines)
    xb = results["analysis"]["cross_bank"]
    assert xb["size_floats"] == 32 * 3 * 2 * 1024 and xb["shape"] == [32, 3, 2, 1024]
    assert (xb["depth"], xb["width"], xb["windows"]) == (2, 1024, 32)
    assert xb["epsilon"] is None
    assert set(xb["mean_abs_error"]) == {"inflow_count", "distinct_senders", "inflow_log_amount"}
    assert all(0 <= e < 1.0 for e in xb["mean_abs_error"].values())
    assert 0.05 < xb["rows_with_cross_bank_activity"] < 1
    assert sorted(results["sketch_stage"]["banks"]) == ["bank-00", "bank-01", "bank-02"]
    assert results["sketch_stage"]["bytes_up"] > 3 * 4 * xb["size_floats"] * 0.9
    # The federated model takes the bank-local features plus the cross-bank columns.
    base = load_table(small_consortium / "bank-00", "bank-00").x.shape[1]
    first = next(iter(torch.load(tmp_path / "run" / "model.pt").values()))
    assert first.shape[1] == base + len(FEATURES)
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert tuple(card["feature_names"][-len(FEATURES) :]) == FEATURES
    # What the banks evaluated securely is what the researcher re-scores in the clear.
    assert results["analysis"]["binned_pooled"]["n_rows"] == results["final"]["pooled"]["n_rows"]
    assert results["analysis"]["binned_pooled"]["pr_auc"] == pytest.approx(
        results["final"]["pooled"]["pr_auc"], abs=0.02
    )
    assert "typology_recall" in results["final"]["pooled"]
    if baselines:
        rows = {results["baselines"][a]["pooled"]["n_rows"] for a in results["baselines"]}
        assert rows == {results["final"]["pooled"]["n_rows"]}
