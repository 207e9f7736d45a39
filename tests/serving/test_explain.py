"""`fedfraud explain`: SHAP of a bank's alerts (local accuracy, order, outputs, errors)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fedfraud.errors import FedfraudError
from fedfraud.explain import GRAPH_PLAYERS, explain_bank, gnn_head_inputs, write_explanation
from fedfraud.run_model import load_run_model
from fedfraud.scoring import bank_table, read_bank_dir
from fedfraud.train import make_inputs
from tests.serving.conftest import bank_frame, make_run, write_bank


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    frame = bank_frame()
    bank = write_bank(root / "banks", frame)
    return {m: make_run(root / m, frame, m) for m in ("mlp", "gnn")}, bank


@pytest.mark.parametrize("model", ["mlp", "gnn"])
def test_shap_values_add_up_to_each_rows_logit(runs, model):
    run, bank = runs[0][model], runs[1]
    expl = explain_bank(run, bank, "test", 0.05, max_alerts=10, sample=30)
    logit = np.log(expl.probability / (1 - expl.probability))
    np.testing.assert_allclose(expl.values.sum(1) + expl.base_value, logit, atol=1e-3)
    assert expl.values.shape == (expl.num_alerts + 30, len(expl.feature_names))
    assert (GRAPH_PLAYERS[0] in expl.feature_names) == (model == "gnn")


def test_alerts_are_above_threshold_highest_first_with_top_features(runs):
    expl = explain_bank(runs[0]["mlp"], runs[1], "all", 0.05, max_alerts=8, sample=5)
    alerts = expl.alerts(top=4)
    assert 0 < len(alerts) <= 8 and expl.num_alerts == len(alerts)
    probs = [a["fraud_probability"] for a in alerts]
    assert probs == sorted(probs, reverse=True) and min(probs) > expl.threshold
    for a in alerts:
        shap_abs = [abs(f["shap"]) for f in a["top_features"]]
        assert len(shap_abs) == 4 and shap_abs == sorted(shap_abs, reverse=True)


def test_gnn_head_inputs_reproduce_the_models_scores(runs):
    model, card = load_run_model(runs[0]["gnn"])
    table = bank_table(read_bank_dir(runs[1]), runs[1], card)
    graph = make_inputs("gnn", table, card.scaler).graph
    with torch.no_grad():
        torch.testing.assert_close(
            model.score(gnn_head_inputs(model, graph)).squeeze(-1), model(graph)
        )


def test_write_explanation_gives_json_and_summary_png(runs, tmp_path):
    expl = explain_bank(runs[0]["gnn"], runs[1], "test", 0.05, max_alerts=5, sample=20)
    json_path, png_path = write_explanation(expl, tmp_path / "out", top=3)
    doc = json.loads(json_path.read_text())
    assert doc["bank"] == "bank-00" and len(doc["alerts"]) == expl.num_alerts
    assert set(doc["mean_abs_shap"]) == set(expl.feature_names)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"split": "future"}, "--split must be one of"),
        ({"max_alerts": 0}, "--max-alerts"),
        ({"target_fpr": 0.0}, "--target-fpr"),
    ],
)
def test_bad_explain_options_are_user_errors(runs, kwargs, fragment):
    with pytest.raises(FedfraudError, match=fragment):
        explain_bank(runs[0]["mlp"], runs[1], **kwargs)


def test_explain_cli_prints_alerts_and_writes_outputs(runs, tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    base = [sys.executable, "-m", "fedfraud.cli", "explain", str(runs[0]["mlp"])]
    proc = subprocess.run(
        [
            *base,
            "--data",
            str(runs[1]),
            "--split",
            "all",
            "--target-fpr",
            "0.05",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "alerts on bank-00's all split" in proc.stdout
    assert (tmp_path / "explanations.json").is_file() and (tmp_path / "shap_summary.png").is_file()
    bad = subprocess.run(
        [*base, "--data", str(runs[1]), "--top", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert bad.returncode == 2 and "--top must be at least 1" in bad.stderr
    assert "Traceback" not in bad.stderr
