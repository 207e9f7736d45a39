"""A real 3-bank, 2-round Flower simulation per model; results.json follows the contract."""

import json
from pathlib import Path

import pytest
import torch

from fedfraud.config import RunConfig
from simulations.runner import simulate

CONTRACT_ROUND_KEYS = {
    "round",
    "wall_s",
    "train_s",
    "aggregate_s",
    "bytes_up",
    "bytes_plain",
    "num_results",
    "num_failures",
    "metrics",
    "epsilon",
}


@pytest.mark.parametrize("model", ["mlp", "gnn"])
def test_three_bank_two_round_simulation_writes_contract_results(small_consortium, tmp_path, model):
    cfg = RunConfig(
        num_banks=3,
        num_rounds=2,
        model=model,
        data_format="banks",
        data_path=str(small_consortium),
    )
    out = tmp_path / "run"
    results = simulate(cfg, out)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == results
    assert results["model"] == model and results["secure_agg"] == "none"
    assert results["num_banks"] == 3
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    for r in results["rounds"]:
        assert set(r) >= CONTRACT_ROUND_KEYS
        assert r["num_results"] == 3 and r["num_failures"] == 0
        # plaintext sends fp32 [weights..., weight] + a small header: ~1x fp32 bytes
        assert 1.0 <= r["bytes_up"] / r["bytes_plain"] < 1.01
        assert 0.0 <= r["metrics"]["pooled"]["pr_auc"] <= 1.0
    assert "per_bank" not in results["final"]  # banks keep their own figures
    assert set(results["analysis"]["per_bank"]) == {"bank-00", "bank-01", "bank-02"}
    assert {"pr_auc", "roc_auc", "recall_at_1pct_fpr"} <= set(results["final"]["pooled"])
    assert results["final"]["selected_round"] in (1, 2)
    assert set(results["baselines"]["local_only"]["per_bank"]) == {"bank-00", "bank-01", "bank-02"}
    for arm in ("local_only", "centralized", "centralized_same_features"):
        assert 0.0 <= results["baselines"][arm]["pooled"]["pr_auc"] <= 1.0
    # Every arm is scored on the same rows: the union of the banks' test splits.
    rows = {results["baselines"][a]["pooled"]["n_rows"] for a in results["baselines"]}
    assert rows == {results["final"]["pooled"]["n_rows"]}
    assert results["privacy"]["dp"] is False
    assert (out / "report.md").read_text().startswith("# fedfraud run")
    state = torch.load(out / "model.pt")
    assert all(torch.isfinite(v).all() for v in state.values())


def test_federated_model_equals_researcher_side_evaluation(small_consortium, tmp_path):
    """The securely pooled metrics and the researcher's exact re-evaluation of the saved
    selected model agree: what the operator aggregated is what the banks evaluated."""
    # Half a CPU per bank: Ray runs all three banks at once on two cores.
    cfg = RunConfig(
        num_banks=3,
        num_rounds=1,
        data_format="banks",
        data_path=str(small_consortium),
        client_cpus=0.5,
    )
    results = simulate(cfg, tmp_path / "run", baselines=False)
    assert "baselines" not in results
    per_bank = results["analysis"]["per_bank"]
    assert all(0 <= m["roc_auc"] <= 1 for m in per_bank.values())
    for key in ("pr_auc", "roc_auc"):
        assert results["analysis"]["exact_pooled"][key] == pytest.approx(
            results["final"]["pooled"][key], abs=0.002
        )
    assert results["final"]["pooled"]["n_rows"] == sum(m["n_rows"] for m in per_bank.values())


def test_fewer_bank_folders_than_banks_is_a_clear_error(small_consortium, tmp_path):
    from fedfraud.errors import DataError

    cfg = RunConfig(num_banks=4, num_rounds=1, data_format="banks", data_path=str(small_consortium))
    with pytest.raises(DataError, match="holds 3 banks but --banks is 4"):
        simulate(cfg, Path(tmp_path / "run"))


def test_client_cpus_reaches_the_simulation_engine(monkeypatch):
    import flwr.simulation

    from simulations.runner import run_federation

    seen = {}

    def fake_run_simulation(**kwargs):
        seen.update(kwargs["backend_config"]["client_resources"])

    monkeypatch.setattr(flwr.simulation, "run_simulation", fake_run_simulation)
    with pytest.raises(Exception, match="ended without results"):
        run_federation(RunConfig(num_banks=3, client_cpus=0.25), {})
    assert seen == {"num_cpus": 0.25, "num_gpus": 0.0}


def test_a_bank_without_test_fraud_is_named_before_federation_starts(small_consortium, tmp_path):
    from fedfraud.data.store import read_bank, write_banks
    from simulations.runner import load_banks, split_warnings

    frames = {b: read_bank(small_consortium / b) for b in ("bank-00", "bank-01", "bank-02")}
    late = frames["bank-01"]["timestamp"] >= frames["bank-01"]["timestamp"].quantile(0.75)
    frames["bank-01"].loc[late, "is_fraud"] = 0  # no fraud in its test period any more
    write_banks(frames, tmp_path / "banks")
    cfg = RunConfig(num_banks=3, data_format="banks", data_path=str(tmp_path / "banks"))
    _, tables = load_banks(cfg, tmp_path / "banks")
    warnings = split_warnings(tables)
    assert len(warnings) == 1 and warnings[0].startswith("bank-01 has no fraud in its test split")
