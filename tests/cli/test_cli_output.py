"""What the CLI prints besides errors: help texts and library logs kept out of the way."""

import json
import logging
import os
import subprocess
import sys

import pytest

from tests.conftest import assert_user_error, fedfraud


@pytest.mark.parametrize(
    "command, text",
    [("simulate", "TOML config ([fedfraud] table)"), ("sweep", "(default: [sweep] out)")],
)
def test_help_keeps_toml_table_names(command, text):
    # Rich reads an unescaped [sweep] as a markup tag and drops it from the help.
    proc = fedfraud(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert text in proc.stdout


def test_user_errors_keep_the_toml_table_names_they_mention(tmp_path):
    sweep_file = tmp_path / "grid.toml"
    sweep_file.write_text("[fedfraud]\nnum-rounds = 2\n")
    assert_user_error(fedfraud("sweep", str(sweep_file), "--dry-run"), "add a [sweep] table")


def test_flower_debug_logs_stay_off_without_v_once_flower_is_imported():
    # `simulate` quiets the libraries before it imports the runner (and with it Flower, which
    # sets its logger to DEBUG on import); run in a fresh interpreter so Flower is not loaded yet.
    code = (
        "import logging; from fedfraud.cli import _quiet_libraries; _quiet_libraries(False); "
        "import simulations.runner; print(logging.getLogger('flwr').getEffectiveLevel())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) >= logging.ERROR


def test_report_table_is_never_cut_to_a_narrow_terminal(tmp_path):
    results = {
        "model": "mlp",
        "secure_agg": "ckks",
        "final": {
            "selected_round": 1,
            "pooled": {"pr_auc": 0.6612, "roc_auc": 0.9391, "recall_at_1pct_fpr": 0.7411},
        },
        "baselines": {
            "local_only": {"pooled": {"pr_auc": 0.5901}},
            "centralized": {"pooled": {"pr_auc": 0.8543}},
        },
        "privacy": {"epsilon_per_bank": {"bank-00": 2.99}},
        "timing": {"mean_round_s": 2.24},
        "rounds": [{"bytes_up": 950, "bytes_plain": 100}],
    }
    for name in ("run-a", "run-b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results))
    env = {**os.environ, "COLUMNS": "60"}
    for runs in (["run-a"], ["run-a", "run-b"]):
        proc = subprocess.run(
            [sys.executable, "-m", "fedfraud.cli", "report", *runs],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        for text in ("centralized PR-AUC", "0.661", "0.854", "9.50", "2.99", *runs):
            assert text in proc.stdout, (runs, text, proc.stdout)
