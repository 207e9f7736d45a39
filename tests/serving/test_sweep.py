"""`fedfraud sweep`: grid expansion, validation up front, resume, tables and report.html.
Cells run through a stub `simulate` (the real one is covered by tests/fl/test_simulation.py)
except one real 1-cell sweep through the CLI."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedfraud.errors import ConfigError, FedfraudError
from simulations.sweep import load_sweep, run_sweep, write_tables
from simulations.sweep_report import write_html

SCENARIOS = Path(__file__).resolve().parents[2] / "simulations" / "scenarios"

GRID = """
[fedfraud]
num-rounds = 2
transactions = 2000

[sweep]
model = ["mlp", "gnn"]
secure-agg = ["none", "ckks"]
dp-epsilon = [0.0, 3.0]
num-banks = [3]
"""


def fake_results(config) -> dict:
    eps = {f"bank-{i:02d}": config.dp_epsilon for i in range(config.num_banks)}
    pr = 0.5 + (0.1 if config.model == "gnn" else 0) - (0.05 if config.dp else 0)
    rounds = [
        {
            "round": r,
            "bytes_up": 1000 * (8 if config.secure_agg == "ckks" else 1),
            "bytes_plain": 1000,
            "aggregate_s": 0.1,
            "metrics": {"pooled": {"pr_auc": pr * r / 2}},
        }
        for r in (1, 2)
    ]
    return {
        "final": {
            "selected_round": 2,
            "pooled": {"pr_auc": pr, "roc_auc": 0.9, "recall_at_1pct_fpr": 0.4},
        },
        "rounds": rounds,
        "privacy": {"epsilon_per_bank": eps if config.dp else {}},
        "timing": {"mean_round_s": 2.0 if config.secure_agg == "ckks" else 1.0},
        "baselines": {
            "local_only": {"pooled": {"pr_auc": 0.3}},
            "centralized": {"pooled": {"pr_auc": 0.7}},
        },
    }


class StubSimulate:
    def __init__(self, fail: str = ""):
        self.calls, self.fail = [], fail

    def __call__(self, config, run_dir, baselines, options):
        self.calls.append(Path(run_dir).name)
        if self.fail and Path(run_dir).name == self.fail:
            raise FedfraudError("backend exploded")
        Path(run_dir).mkdir(parents=True)
        (Path(run_dir) / "results.json").write_text(json.dumps(fake_results(config)))


def write_grid(tmp_path, text=GRID) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def test_grid_expands_every_combination_with_readable_names(tmp_path):
    plan = load_sweep(write_grid(tmp_path), tmp_path / "out")
    assert len(plan.cells) == 8
    assert plan.cells[0].name == "mlp-none-nodp-3banks"
    assert plan.cells[-1].name == "gnn-ckks-eps3-3banks"
    assert plan.cells[-1].config.dp_epsilon == 3.0 and plan.cells[-1].config.num_rounds == 2


def test_sweep_resumes_skipping_finished_cells(tmp_path):
    plan = load_sweep(write_grid(tmp_path), tmp_path / "out")
    first = StubSimulate(fail="gnn-none-eps3-3banks")
    rows = run_sweep(plan, simulate=first)
    assert len(first.calls) == 8
    assert [r["status"] for r in rows].count("failed") == 1
    second = StubSimulate()
    rows = run_sweep(plan, simulate=second)
    assert second.calls == ["gnn-none-eps3-3banks"]
    assert {r["status"] for r in rows} == {"done", "done (resumed)"}
    status = json.loads((tmp_path / "out" / "sweep.json").read_text())["cells"]
    assert status["mlp-none-nodp-3banks"]["secure_agg"] == "none"


def test_synthetic_cells_of_one_size_share_their_data(tmp_path):
    plan = load_sweep(write_grid(tmp_path), tmp_path / "out")
    seen = []
    run_sweep(plan, simulate=lambda config, run_dir, **_: seen.append(config.data_dir))
    assert len(set(seen)) == 1 and seen[0].endswith("data/3banks-2000tx-seed0")


def test_tables_and_html_report(tmp_path):
    plan = load_sweep(write_grid(tmp_path), tmp_path / "out")
    rows = run_sweep(plan, simulate=StubSimulate())
    md, csv_path = write_tables(rows, plan.out)
    assert "| mlp-ckks-eps3-3banks | mlp | ckks | 3 | 3.00 | 3 | 0.450 |" in md.read_text()
    with csv_path.open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8 and float(table[0]["pr_auc"]) == 0.5
    page = write_html(rows, plan.out, "test sweep").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "gnn-ckks-eps3-3banks" in page


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[fedfraud]\nnum-rounds = 2\n", "add a [sweep] table"),
        ("[sweep]\nmodel = 'mlp'\n", "must be a non-empty list"),
        ("[sweep]\nmodel = []\n", "must be a non-empty list"),
        ("[sweep]\nmodels = ['mlp']\n", "unknown key(s) models"),
        ("[sweep]\nmodel = ['mlp', 'transformer']\n", "cell transformer: model must be one of"),
        ("[sweep]\nsecure-agg = ['none', 'rot13']\n", "unknown secure aggregation backend"),
        ("[sweep]\nmodel = ['mlp', 'mlp']\n", "repeats a cell"),
        ("[sweep\n", "not valid TOML"),
    ],
)
def test_bad_sweep_files_fail_before_any_cell_runs(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        load_sweep(write_grid(tmp_path, text), tmp_path / "out")
    assert fragment in str(err.value)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_scenarios_are_valid(scenario):
    plan = load_sweep(scenario)
    assert plan.cells and str(plan.out).startswith("runs/")


def test_sweep_cli_runs_a_real_cell_then_resumes(tmp_path, small_consortium):
    grid = f"""
[fedfraud]
num-rounds = 1
data-format = "banks"
data-path = "{small_consortium}"

[sweep]
baselines = false
num-banks = [3]
"""
    cmd = [
        sys.executable,
        "-m",
        "fedfraud.cli",
        "sweep",
        str(write_grid(tmp_path, grid)),
        "--out",
        str(tmp_path / "out"),
    ]
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out" / "cells" / "3banks" / "results.json").is_file()
    assert (tmp_path / "out" / "report.html").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and "already done, skipped" in again.stdout
    bad = subprocess.run(
        [*cmd[:4], str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr
