"""MLflow tracking (fedfraud/tracking.py): one real 3-bank DP simulation through the CLI, whose
MLflow server is unreachable (results stay, exit 2), then `fedfraud track` into a file store
read back with MlflowClient; the sweep hook and the missing-mlflow path run on stubs."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedfraud.data.store import write_banks
from fedfraud.errors import FedfraudError
from fedfraud.tracking import client as mlflow_client  # an MlflowClient, file stores allowed
from tests.conftest import assert_user_error, fedfraud, random_bank

pytest.importorskip("mlflow")

ROUNDS = 2


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fedfraud_env(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedfraud.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", **env},
    )


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A real DP run whose tracking server is down, then `fedfraud track` into a file store."""
    root = tmp_path_factory.mktemp("tracked")
    rng = np.random.default_rng(7)
    frames = {f"bank-{i:02d}": random_bank(rng, 3000, 100_000 * (i + 1)) for i in range(3)}
    write_banks(frames, root / "banks")
    run, store = root / "run", root / "mlruns"
    down = f"http://127.0.0.1:{closed_port()}"
    simulated = fedfraud_env(
        *("simulate", "--out", str(run), "--data", str(root / "banks"), "--banks", "3"),
        *("--rounds", str(ROUNDS), "--dp-epsilon", "3", "--mlflow-uri", down),
        cwd=root,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",  # MLflow's default retries for minutes
    )
    tracked = fedfraud_env("track", str(run), "--mlflow-uri", str(store), cwd=root)
    results = json.loads((run / "results.json").read_text()) if run.exists() else None
    return simulated, tracked, run, results, mlflow_client(str(store))


def logged_run(tracked):
    _, proc, run, _, client = tracked
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exp = client.get_experiment_by_name("fedfraud")
    (found,) = client.search_runs([exp.experiment_id])
    return found, client


def test_unreachable_mlflow_server_exits_2_and_keeps_the_results(tracked):
    simulated, _, run, results, _ = tracked
    assert_user_error(simulated, "results are kept in")
    (error,) = [line for line in simulated.stderr.splitlines() if "error:" in line]
    assert "Connection refused" in error and f"fedfraud track {run}" in error
    assert results is not None and len(results["rounds"]) == ROUNDS
    assert (run / "model.pt").is_file() and (run / "report.md").is_file()


def test_params_are_the_run_config(tracked):
    found, _ = logged_run(tracked)
    results = tracked[3]
    assert found.data.params == {k: str(v) for k, v in results["config"].items()}
    assert found.data.params["dp_epsilon"] == "3.0"
    assert found.info.status == "FINISHED" and found.info.run_name == "run"


def test_per_round_history_equals_results_json(tracked):
    found, client = logged_run(tracked)
    rounds = tracked[3]["rounds"]
    expected = {
        "pooled/pr_auc": [r["metrics"]["pooled"]["pr_auc"] for r in rounds],
        "pooled/roc_auc": [r["metrics"]["pooled"]["roc_auc"] for r in rounds],
        "wall_s": [r["wall_s"] for r in rounds],
        "bytes_up": [r["bytes_up"] for r in rounds],
        "bytes_down": [r["bytes_down"] for r in rounds],
        "epsilon/bank-01": [r["epsilon"]["bank-01"] for r in rounds],
        "epsilon_max": [max(r["epsilon"].values()) for r in rounds],
    }
    for key, values in expected.items():
        history = sorted(client.get_metric_history(found.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(1, ROUNDS + 1)), key
        assert [m.value for m in history] == pytest.approx(values, rel=1e-12), key


def test_final_baselines_and_epsilon_per_bank_are_logged(tracked):
    found, _ = logged_run(tracked)
    results, metrics = tracked[3], found.data.metrics
    final = results["final"]["pooled"]["pr_auc"]
    assert metrics["final/pooled/pr_auc"] == pytest.approx(final)
    assert metrics["final/selected_round"] == results["final"]["selected_round"]
    local = results["baselines"]["local_only"]["pooled"]["pr_auc"]
    assert metrics["baselines/local_only/pooled/pr_auc"] == pytest.approx(local)
    central = results["baselines"]["centralized"]["pooled"]["pr_auc"]
    assert metrics["baselines/centralized/pooled/pr_auc"] == pytest.approx(central)
    spent = results["privacy"]["epsilon_per_bank"]
    assert set(spent) == {"bank-00", "bank-01", "bank-02"}
    for bank, eps in spent.items():
        assert metrics[f"privacy/epsilon/{bank}"] == pytest.approx(eps)
    assert metrics["privacy/epsilon_max"] == pytest.approx(max(spent.values()))
    assert 0 < metrics["privacy/epsilon_max"] <= 3.0 + 1e-6


def test_model_and_results_artifacts_equal_the_run_files(tracked, tmp_path):
    found, client = logged_run(tracked)
    run = tracked[2]
    for artifact in ("model/model.pt", "model/model.json", "results.json", "report.md"):
        local = client.download_artifacts(found.info.run_id, artifact, str(tmp_path))
        assert Path(local).read_bytes() == (run / Path(artifact).name).read_bytes(), artifact
    marker = json.loads((run / "mlflow.json").read_text())
    assert marker["run_id"] == found.info.run_id


def test_unknown_uri_scheme_fails_before_the_run(tmp_path):
    proc = fedfraud("simulate", "--out", "r", "--mlflow-uri", "htp://localhost:5000", cwd=tmp_path)
    assert_user_error(proc, "--mlflow-uri htp://localhost:5000")
    assert not (tmp_path / "r").exists()


def test_without_mlflow_simulate_says_how_to_install_before_running(tmp_path):
    blocked = (  # import mlflow -> ImportError, as where the extra is not installed
        "import sys; sys.modules['mlflow'] = None; from fedfraud.cli import main; "
        "sys.argv = ['fedfraud', 'simulate', '--out', 'r', '--mlflow-uri', 'mlruns']; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", blocked], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert_user_error(proc, "pip install 'fedfraud[mlflow]'")
    assert not (tmp_path / "r").exists()


def test_metric_keys_are_sanitized_and_non_finite_values_skipped():
    from fedfraud.tracking import run_metrics

    results = {
        "rounds": [
            {
                "round": 1,
                "metrics": {"pooled": {"pr_auc": 0.5, "roc_auc": math.nan}},
                "bytes_up": 10,
            }
        ],
        "baselines": {"local_only": {"per_bank": {"bank #1": {"pr_auc": 0.25}}}},
        "final": {"pooled": {"pr_auc": None}},
    }
    assert sorted(run_metrics(results)) == [
        ("baselines/local_only/per_bank/bank _1/pr_auc", 0.25, 0),
        ("bytes_up", 10.0, 1),
        ("pooled/pr_auc", 0.5, 1),
    ]


def test_sweep_logs_each_finished_cell_once_tagged_with_sweep_and_cell(tmp_path):
    from simulations.sweep import load_sweep, mlflow_tracker, run_sweep
    from tests.serving.test_sweep import fake_results

    grid = tmp_path / "grid.toml"
    grid.write_text("[fedfraud]\nnum-rounds = 2\n\n[sweep]\nmodel = ['mlp', 'gnn']\n")
    plan = load_sweep(grid, tmp_path / "out")

    def stub(config, run_dir, baselines, options):
        run_dir.mkdir(parents=True)
        results = {**fake_results(config), "config": config.to_dict()}
        (run_dir / "results.json").write_text(json.dumps(results))

    store = str(tmp_path / "mlruns")
    run_sweep(plan, simulate=stub, track=mlflow_tracker(store, "grids", "grid"))
    run_sweep(plan, simulate=stub, track=mlflow_tracker(store, "grids", "grid"))  # resumed
    client = mlflow_client(store)
    runs = client.search_runs([client.get_experiment_by_name("grids").experiment_id])
    assert sorted(r.data.tags["fedfraud.cell"] for r in runs) == ["gnn", "mlp"]
    assert {r.data.tags["fedfraud.sweep"] for r in runs} == {"grid"}
    assert {r.info.run_name for r in runs} == {"gnn", "mlp"}
    gnn = next(r for r in runs if r.info.run_name == "gnn")
    assert gnn.data.params["model"] == "gnn"
    history = client.get_metric_history(gnn.info.run_id, "pooled/pr_auc")
    assert [m.value for m in history] == pytest.approx([0.3, 0.6])


def test_sweep_stops_tracking_after_the_first_failure_and_reports_untracked_cells(tmp_path):
    from simulations.sweep import load_sweep, run_sweep
    from tests.serving.test_sweep import fake_results

    grid = tmp_path / "grid.toml"
    grid.write_text("[sweep]\nmodel = ['mlp', 'gnn']\n")
    plan = load_sweep(grid, tmp_path / "out")
    calls = []

    def stub(config, run_dir, baselines, options):
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps(fake_results(config)))

    def down(cell, run_dir):
        calls.append(cell.name)
        raise FedfraudError("MLflow at http://x: unreachable")

    rows = run_sweep(plan, simulate=stub, track=down)
    assert calls == ["mlp"]
    assert [r["status"] for r in rows] == ["done", "done"]
    assert [r["tracking_error"] for r in rows] == ["MLflow at http://x: unreachable"] * 2
