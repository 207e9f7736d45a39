"""`fedfraud score` on a real simulate run: files, JSON lines on stdin, and user errors."""

import json

import numpy as np
import pandas as pd
import pytest

from fedfraud.config import RunConfig
from fedfraud.data.store import write_banks
from simulations.runner import simulate
from tests.conftest import assert_user_error, fedfraud, random_bank


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """A 3-bank, 1-round MLP simulation (its model.pt + model.json) and bank-00's new rows."""
    root = tmp_path_factory.mktemp("score-cli")
    rng = np.random.default_rng(7)
    frames = {f"bank-{i:02d}": random_bank(rng, 3000, 100_000 * (i + 1)) for i in range(3)}
    write_banks(frames, root / "banks")
    cfg = RunConfig(num_banks=3, num_rounds=1, data_format="banks", data_path=str(root / "banks"))
    simulate(cfg, root / "run", baselines=False)
    new = random_bank(np.random.default_rng(8), 40, 100_000).drop(columns="is_fraud")
    new["timestamp"] += 2000  # after the history
    new.insert(0, "tx_id", range(len(new)))
    new.to_csv(root / "new.csv", index=False)
    return root


def test_simulate_writes_what_scoring_needs(mlp_run):
    card = json.loads((mlp_run / "run" / "model.json").read_text())
    assert card["model"] == "mlp" and len(card["feature_names"]) == len(card["scaler"]["mean"])
    assert (mlp_run / "run" / "model.pt").is_file()


def test_score_csv_writes_one_json_line_per_transaction(mlp_run):
    proc = fedfraud(
        "score",
        str(mlp_run / "run"),
        str(mlp_run / "new.csv"),
        "--data",
        str(mlp_run / "banks" / "bank-00"),
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 40 and [r["tx_id"] for r in lines] == list(range(40))
    assert all(
        0 <= r["fraud_probability"] <= 1 and r["decision"] in ("alert", "pass") for r in lines
    )
    assert "scored 40 transactions" in proc.stderr and "validation split" in proc.stderr


def test_score_json_lines_from_stdin_streams_results(mlp_run):
    rows = pd.read_csv(mlp_run / "new.csv").head(5).to_dict("records")
    proc = fedfraud(
        "score",
        str(mlp_run / "run"),
        "--data",
        str(mlp_run / "banks" / "bank-00"),
        stdin="\n".join(json.dumps(r) for r in rows) + "\n\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["tx_id"] for line in proc.stdout.splitlines()] == list(range(5))


def test_score_quantized_to_parquet(mlp_run, tmp_path):
    out = tmp_path / "scored.parquet"
    proc = fedfraud(
        "score",
        str(mlp_run / "run"),
        str(mlp_run / "new.csv"),
        "--quantize",
        "--target-fpr",
        "0.05",
        "--data",
        str(mlp_run / "banks" / "bank-00"),
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    scored = pd.read_parquet(out)
    assert len(scored) == 40 and {"fraud_probability", "decision", "tx_id"} <= set(scored)


@pytest.mark.parametrize(
    "args, stdin, fragment",
    [
        (["--target-fpr", "1.5"], None, "--target-fpr must be in (0, 1)"),
        (["--out", "x.txt"], None, "use a .csv or .parquet"),
        ([], '{"amount": 5}\n', "line 1: missing 'timestamp'"),
        ([], "not json\n", "line 1 is not valid JSON"),
        ([], '{"amount": 5, "timestamp": 9}\n', "missing sender and receiver"),
    ],
)
def test_score_bad_input_is_one_line_exit_2(mlp_run, args, stdin, fragment):
    proc = fedfraud(
        "score",
        str(mlp_run / "run"),
        "--data",
        str(mlp_run / "banks" / "bank-00"),
        *args,
        stdin=stdin or "",
    )
    assert_user_error(proc, fragment)


def test_score_needs_a_run_folder_and_one_bank(mlp_run, tmp_path):
    bank = str(mlp_run / "banks" / "bank-00")
    assert_user_error(
        fedfraud("score", str(tmp_path / "nope"), "--data", bank, stdin=""), "does not exist"
    )
    assert_user_error(
        fedfraud("score", str(mlp_run / "run"), "--data", str(mlp_run / "banks"), stdin=""),
        "consortium folder",
    )
    assert_user_error(
        fedfraud("score", str(mlp_run / "run"), str(tmp_path / "a.csv"), "--data", bank),
        "not found",
    )
