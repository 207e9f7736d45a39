"""The federated model's pooled metrics come from per-score-bin counts that travel through the
run's secure aggregation: under every backend they equal the counts of the banks' rows taken
in the clear (researcher side, all keys at hand) and the exact metrics within the bin tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedfraud.config import RunConfig
from fedfraud.data.store import write_banks
from fedfraud.metrics import ScoreCounts, json_safe, pooled_metrics, sum_counts
from fl_server.app import run_operator
from secure_agg import get, provision
from simulations.runner import analyse_final_model, load_banks, simulate
from tests.conftest import random_bank
from tests.fl.conftest import RecordingGrid

BANKS = ["bank-00", "bank-01", "bank-02"]


@pytest.fixture
def typed_banks(tmp_path: Path) -> Path:
    """Three unequal banks whose frauds carry typologies (mule rings: the shared receivers)."""
    rng = np.random.default_rng(21)
    frames = {}
    for i, (bank, n) in enumerate(zip(BANKS, (2000, 3500, 5000), strict=True)):
        df = random_bank(rng, n, 100_000 * (i + 1))
        fraud = df["is_fraud"].to_numpy() == 1
        kind = np.where(df["receiver"].to_numpy() < 10, "mule_ring", "card_testing")
        df["typology"] = np.where(fraud, kind, "legit")
        frames[bank] = df
    write_banks(frames, tmp_path / "banks")
    return tmp_path / "banks"


def assert_pooled_equals_clear_rows(results: dict, view: dict, tol: float = 0.0) -> None:
    final = results["final"]["pooled"]
    # The researcher's scores differ from the banks' only by the backend's noise on the model
    # and scaler (CKKS ~1e-6), which moves a row to the next bin now and then.
    for key in ("pr_auc", "roc_auc", "recall_at_1pct_fpr"):
        assert final[key] == pytest.approx(view["binned_pooled"][key], abs=tol)
    assert final["typology_frauds"] == view["binned_pooled"]["typology_frauds"]
    for key in ("pr_auc", "roc_auc"):
        assert abs(final[key] - view["exact_pooled"][key]) <= 0.002
    assert final["n_rows"] == sum(m["n_rows"] for m in view["per_bank"].values())
    assert set(final["typology_frauds"]) == {"mule_ring", "card_testing"}
    assert sum(final["typology_frauds"].values()) == final["n_frauds"]
    # No bank's own figures in the operator's results.
    assert "per_bank" not in results["final"]


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize(
    "backend", ["none", "ckks", pytest.param("crypten", marks=pytest.mark.e2e)]
)
def test_secure_pooled_metrics_equal_the_pooled_metrics_of_the_rows(
    typed_banks, tmp_path, monkeypatch, backend
):
    shared = provision(backend, tmp_path / "keys", len(BANKS))
    out = tmp_path / "out"
    cfg = RunConfig(num_banks=3, num_rounds=2, secure_agg=backend, out_dir=str(out))
    grid = RecordingGrid(typed_banks, BANKS)
    sent: list[tuple[str, np.ndarray]] = []  # score counts as each bank handed them to protect
    cls = type(get(backend, "client", shared))
    protect = cls.client_protect

    def recording(self, update, weight, round, **kw):
        if sum(np.size(u) for u in update) == ScoreCounts.vector_size():
            sent.append((grid.current_bank, np.concatenate([np.ravel(u) for u in update])))
        return protect(self, update, weight, round, **kw)

    monkeypatch.setattr(cls, "client_protect", recording)
    results = run_operator(grid, cfg, grid.options, shared_options=shared)
    # Exactly: the revealed pooled counts are the sum of what the banks protected (last: test).
    final_counts = [ScoreCounts.from_vector(v) for _, v in sent[-len(BANKS) :]]
    assert sorted(b for b, _ in sent[-len(BANKS) :]) == BANKS
    assert results["final"]["pooled"] == json_safe(pooled_metrics(sum_counts(final_counts)))
    _, tables = load_banks(cfg, typed_banks)
    view = analyse_final_model(cfg, out, {**shared, **grid.options}, tables, {}, results)
    assert_pooled_equals_clear_rows(results, view, tol=0.0 if backend == "none" else 1e-3)
    # Validation is pooled the same way, over every bank's validation rows.
    val_rows = sum(int((t.split == 1).sum()) for t in tables.values())
    assert all(r["metrics"]["pooled"]["n_rows"] == val_rows for r in results["rounds"])


@pytest.mark.e2e
def test_secaggplus_pooled_metrics_equal_the_pooled_metrics_of_the_rows(typed_banks, tmp_path):
    # SecAgg+ is interactive: the evaluate stage runs as a SecAgg+ exchange of 'train' messages
    # inside Flower's simulation engine.
    cfg = RunConfig(
        num_banks=3,
        num_rounds=1,
        secure_agg="secagg+",
        data_format="banks",
        data_path=str(typed_banks),
        client_cpus=0.5,
    )
    results = simulate(cfg, tmp_path / "run", baselines=False)
    assert_pooled_equals_clear_rows(results, results["analysis"], tol=1e-3)
