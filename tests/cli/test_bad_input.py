"""Bad input at every command (issue 17): exit code 2, one line naming the problem and the fix,
no traceback, and whatever was already on disk byte-identical afterwards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import assert_one_line_error, random_bank, run_cli, snapshot

UNWRITABLE = "/proc/fedfraud-out"  # /proc refuses new files even to root


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    run = tmp_path / "finished"
    run.mkdir()
    (run / "results.json").write_text('{"final": {"pooled": {"pr_auc": 0.5}}}')
    (run / "report.md").write_text("# the report a researcher is reading\n")
    return run


@pytest.fixture
def csv_source(tmp_path: Path) -> Path:
    frame = random_bank(np.random.default_rng(1), 3000, 0)
    frame.insert(0, "tx_id", np.arange(5000, 5000 + len(frame)))
    path = tmp_path / "export.csv"
    frame.to_csv(path, index=False)
    return path


# --- 1. resources the machine cannot meet -----------------------------------------------------


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--client-cpus", "64"], ["client-cpus 64 is more than this machine's", "use at most"]),
        (["--transactions", "100000000000"], ["need more memory", "--transactions"]),
        (["--dp-epsilon", "inf"], ["dp-epsilon must be a finite number", "0 disables DP"]),
    ],
)
def test_simulate_refuses_what_the_machine_cannot_run_and_writes_nothing(
    capsys, tmp_path, args, fragments
):
    out = tmp_path / "run"
    result = run_cli(capsys, "simulate", "--banks", "3", "--rounds", "1", "--out", str(out), *args)
    assert_one_line_error(result, *fragments)
    assert not out.exists()


# --- 3. never overwrite ---------------------------------------------------------------------


def test_simulate_into_a_finished_run_is_refused_without_force(capsys, finished_run):
    before = snapshot(finished_run)
    result = run_cli(capsys, "simulate", "--banks", "3", "--out", str(finished_run))
    assert_one_line_error(result, "is not empty", "--force")
    assert snapshot(finished_run) == before


def test_prepare_into_a_prepared_folder_keeps_its_banks(capsys, tmp_path, small_consortium):
    source = tmp_path / "one.csv"
    random_bank(np.random.default_rng(2), 3000, 0).to_csv(source, index=False)
    before = snapshot(small_consortium)
    result = run_cli(
        capsys, "data", "prepare", str(source), "--banks", "1", "--out", str(small_consortium)
    )
    assert_one_line_error(result, "is not empty", "--force")
    assert snapshot(small_consortium) == before


def test_generate_over_real_data_is_refused(capsys, small_consortium):
    before = snapshot(small_consortium)
    result = run_cli(
        capsys, "data", "generate", "--banks", "3", "--transactions", "6000",
        "--out", str(small_consortium),
    )  # fmt: skip
    assert_one_line_error(result, "is not empty", "--force")
    assert snapshot(small_consortium) == before


def test_score_and_report_do_not_overwrite_a_file(capsys, tmp_path, finished_run):
    existing = tmp_path / "scores.csv"
    existing.write_text("tx_id,decision\n1,alert\n")
    result = run_cli(
        capsys, "score", str(finished_run), "in.csv", "--data", str(tmp_path),
        "--out", str(existing),
    )  # fmt: skip
    assert_one_line_error(result, "exists", "--force")
    table = tmp_path / "table.md"
    table.write_text("| kept |\n")
    assert_one_line_error(
        run_cli(capsys, "report", str(finished_run), "--out", str(table)), "exists", "--force"
    )
    assert existing.read_text() == "tx_id,decision\n1,alert\n" and table.read_text() == "| kept |\n"


def test_data_export_does_not_overwrite_a_file_without_force(capsys, tmp_path):
    existing = tmp_path / "paysim.csv"
    existing.write_text("step,amount\n1,2.0\n")
    args = ["data", "export", "--format", "paysim", "--out", str(existing)]
    small = ["--banks", "2", "--transactions", "4000"]
    assert_one_line_error(run_cli(capsys, *args, *small), "exists", "--force")
    assert existing.read_text() == "step,amount\n1,2.0\n"
    code, _, err = run_cli(capsys, *args, *small, "--force")
    assert code == 0, err
    assert len(pd.read_csv(existing)) == 4000


def test_report_force_replaces_the_file(capsys, tmp_path, finished_run):
    table = tmp_path / "table.md"
    table.write_text("old\n")
    code, _, err = run_cli(capsys, "report", str(finished_run), "--out", str(table), "--force")
    assert code == 0, err
    assert "finished" in table.read_text()


def test_explain_keeps_an_earlier_explanation(capsys, tmp_path, finished_run):
    earlier = finished_run / "explain-bank-00"
    earlier.mkdir()
    (earlier / "explanations.json").write_text("{}")
    before = snapshot(finished_run)
    result = run_cli(capsys, "explain", str(finished_run), "--data", str(tmp_path / "bank-00"))
    assert_one_line_error(result, "is not empty", "--force")
    assert snapshot(finished_run) == before


def test_generate_force_replaces_the_consortium_without_phantom_banks(capsys, small_consortium):
    code, _, err = run_cli(
        capsys, "data", "generate", "--banks", "2", "--transactions", "6000",
        "--out", str(small_consortium), "--force",
    )  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in small_consortium.iterdir() if p.is_dir()) == [
        "bank-00",
        "bank-01",
    ]


# --- 4. --out an existing file or an unwritable place ----------------------------------------


def _commands(out: str, source: Path, run: Path, tmp: Path) -> dict[str, list[str]]:
    return {
        "data prepare": ["data", "prepare", str(source), "--banks", "3", "--out", out],
        "data generate": [
            "data",
            "generate",
            "--banks",
            "3",
            "--transactions",
            "6000",
            "--out",
            out,
        ],
        "simulate": ["simulate", "--banks", "3", "--out", out],
        "keys init": ["keys", "init", "--out", out],
        "keys parties": ["keys", "parties", "--out", out],
        "explain": ["explain", str(run), "--data", str(tmp / "bank-00"), "--out", out],
        "certs init": ["certs", "init", "--out", out],
    }


@pytest.mark.parametrize(
    "command",
    [
        "data prepare",
        "data generate",
        "simulate",
        "keys init",
        "keys parties",
        "explain",
        "certs init",
    ],
)
@pytest.mark.parametrize("where", ["file", "unwritable"])
def test_out_that_is_a_file_or_unwritable_is_one_line(
    capsys, tmp_path, csv_source, finished_run, command, where
):
    target = tmp_path / "a-file"
    target.write_text("mine\n")
    out = str(target) if where == "file" else UNWRITABLE
    result = run_cli(capsys, *_commands(out, csv_source, finished_run, tmp_path)[command])
    line = assert_one_line_error(result, "--out")
    assert ("is a file" in line) if where == "file" else ("not writable" in line)
    assert target.read_text() == "mine\n"


@pytest.mark.parametrize("command", ["score", "report"])
def test_out_file_in_an_unwritable_place_is_one_line(capsys, tmp_path, finished_run, command):
    args = {
        "score": ["score", str(finished_run), "in.csv", "--data", str(tmp_path)],
        "report": ["report", str(finished_run)],
    }[command]
    result = run_cli(capsys, *args, "--out", f"{UNWRITABLE}/scores.csv")
    assert_one_line_error(result, "not writable")


# --- 7. certs init ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--san", "localhost"], "is not TYPE:VALUE; write e.g. --san DNS:localhost"),
        (["--san", "IP:999.1.1.1"], "is not TYPE:VALUE"),
        (["--days", "-5"], "--days must be 1..3650"),
        (["--banks", "-3"], "--banks must be 0 or more"),
        (["--bank", "bank 07"], "may only hold letters"),
    ],
)
def test_certs_init_checks_its_options_before_making_anything(capsys, tmp_path, args, fragment):
    out = tmp_path / "certs"
    assert_one_line_error(run_cli(capsys, "certs", "init", "--out", str(out), *args), fragment)
    assert not out.exists()


# --- 8. silent coercion / ranges -------------------------------------------------------------


@pytest.mark.parametrize(
    "toml, fragment",
    [
        ("num-rounds = 1.5", "num-rounds must be a whole number, got 1.5"),
        ("num-banks = true", "num-banks must be a whole number, got True"),
        ('lr = "fast"', "lr must be a finite number, got 'fast'"),
        ("model = 3", "model must be text, got 3"),
    ],
)
def test_config_values_are_not_coerced(capsys, tmp_path, toml, fragment):
    config = tmp_path / "run.toml"
    config.write_text(f"[fedfraud]\n{toml}\n")
    out = tmp_path / "run"
    assert_one_line_error(
        run_cli(capsys, "simulate", "--config", str(config), "--out", str(out)), fragment
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--secure-agg-option", "foo=1"], "not an option of secure-agg none"),
        (
            ["--secure-agg", "ckks", "--secure-agg-option", "secagg-num-shares=3"],
            "its options: ckks-poly-modulus",
        ),
        (["--mapping", "map.json"], "--mapping applies to a CSV/Parquet file"),
    ],
)
def test_options_that_would_be_ignored_are_errors(capsys, tmp_path, args, fragment):
    out = tmp_path / "run"
    result = run_cli(capsys, "simulate", "--banks", "3", "--out", str(out), *args)
    assert_one_line_error(result, fragment)
    assert not out.exists()


@pytest.mark.parametrize(
    "column, value, fragment",
    [
        ("amount", 1e300, "'amount' must be in 0..1e+12"),
        ("timestamp", 1e18, "'timestamp' must be in 0..1e+07"),
        ("timestamp", -5.0, "'timestamp' must be in 0..1e+07"),
        ("channel", 99, "'channel' must be in 0..4 (whole numbers)"),
        ("tx_id", 5000, "column 'tx_id' has 2 rows sharing an id (e.g. 5000)"),
    ],
)
def test_out_of_range_values_and_duplicate_ids_in_data_are_errors(
    capsys, tmp_path, csv_source, column, value, fragment
):
    frame = pd.read_csv(csv_source)
    frame.loc[7, column] = value
    frame.to_csv(csv_source, index=False)
    out = tmp_path / "banks"
    result = run_cli(capsys, "data", "prepare", str(csv_source), "--banks", "3", "--out", str(out))
    assert_one_line_error(result, fragment)
    assert not out.exists()


# --- 9. messages ------------------------------------------------------------------------------


def test_one_bank_is_too_few_names_the_flag_to_change(capsys, tmp_path):
    result = run_cli(capsys, "simulate", "--banks", "1", "--out", str(tmp_path / "r"))
    assert_one_line_error(result, "1 bank is too few", "pass --banks 3 or more")


def test_one_banks_folder_as_data_suggests_its_parent(capsys, tmp_path, small_consortium):
    out = tmp_path / "r"
    result = run_cli(
        capsys, "simulate", "--banks", "3", "--rounds", "1", "--no-baselines",
        "--data", str(small_consortium / "bank-00"), "--out", str(out),
    )  # fmt: skip
    line = assert_one_line_error(result, "is one bank's folder", f"--data {small_consortium}")
    assert "bank-00/bank-00" not in line
    assert "1 round" in result[1] and "1 rounds" not in result[1]
    assert not out.exists()  # refused before federating: nothing left behind


def test_prepare_says_accounts_were_not_kept_and_warns_of_banks_without_test_fraud(
    capsys, tmp_path
):
    rng = np.random.default_rng(4)
    frame = random_bank(rng, 3000, 0, accounts=False)
    late = frame["timestamp"] > frame["timestamp"].quantile(0.5)
    frame.loc[late, "is_fraud"] = 0  # all fraud in the older half: no bank's test split has any
    source = tmp_path / "cards.csv"
    frame.to_csv(source, index=False)
    code, _, err = run_cli(
        capsys, "data", "prepare", str(source), "--banks", "3", "--partition", "iid",
        "--out", str(tmp_path / "banks"),
    )  # fmt: skip
    assert code == 0, err
    text = " ".join(err.split())
    assert "no sender/receiver account columns" in text and "--model gnn" in text
    assert "no fraud in the test split" in text


def test_plurals_read_right(capsys, tmp_path):
    sweep = tmp_path / "grid.toml"
    sweep.write_text(f'[fedfraud]\nnum-banks = 3\n[sweep]\nout = "{tmp_path / "g"}"\nseed = [1]\n')
    code, out, err = run_cli(capsys, "sweep", str(sweep), "--dry-run")
    assert code == 0, err
    assert "1 cell into" in out


# --- 10. first run ----------------------------------------------------------------------------


def test_progress_is_printed_when_stdout_is_not_a_terminal(capsys, tmp_path, small_consortium):
    result = run_cli(
        capsys, "simulate", "--banks", "3", "--rounds", "1", "--client-cpus", "99",
        "--data", str(small_consortium), "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert_one_line_error(result, "client-cpus 99")
    code, out, err = run_cli(
        capsys, "data", "generate", "--banks", "3", "--transactions", "6000",
        "--out", str(tmp_path / "gen"),
    )  # fmt: skip
    assert code == 0, err
    assert "generating 6,000 transactions for 3 banks ..." in out  # a pipe shows the step


def test_readme_first_run_passes_the_generated_data_to_simulate():
    readme = (Path(__file__).parents[2] / "README.md").read_text().replace("\\\n", " ")
    generate = next(line for line in readme.splitlines() if "data generate" in line)
    folder = generate.split("--out")[1].split()[0]
    simulate = next(line for line in readme.splitlines() if "fedfraud simulate --banks" in line)
    assert f"--data {folder}" in simulate


def test_gnn_imports_print_no_torch_jit_deprecation():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", "import fedfraud.models.gnn"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_library_notices_print_as_clean_lines(capsys):
    import logging

    from fedfraud.cli import _plain_notices

    logger = logging.getLogger("fedfraud")
    handlers, propagate = list(logger.handlers), logger.propagate
    try:
        _plain_notices()
        logging.getLogger("fedfraud.server").warning("kept the previous run's audit log as x.jsonl")
        err = capsys.readouterr().err
    finally:
        logger.handlers[:], logger.propagate = handlers, propagate
    assert err == "note: kept the previous run's audit log as x.jsonl\n"


def test_manifest_counts_test_fraud_per_bank(small_consortium):
    manifest = json.loads((small_consortium / "manifest.json").read_text())
    assert all(isinstance(b["test_fraud"], int) for b in manifest["banks"])


def test_certs_init_failure_shows_the_real_error_and_leaves_no_half_made_ca(
    capsys, tmp_path, monkeypatch
):
    # An openssl that writes its output file, then fails: what a broken openssl or a full disk
    # does half-way through the CA.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "openssl").write_text(
        "#!/bin/sh\n"
        'while [ $# -gt 0 ]; do [ "$1" = -out ] && echo partial > "$2"; shift; done\n'
        "echo 'error: simulated openssl failure' >&2\nexit 1\n"
    )
    (fake / "openssl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    out = tmp_path / "certs"
    result = run_cli(capsys, "certs", "init", "--out", str(out))
    assert_one_line_error(result, "certs init failed: simulated openssl failure")
    assert not out.exists()
    # An existing folder keeps what it had and loses what the failed run made.
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    before = snapshot(out)
    assert_one_line_error(run_cli(capsys, "certs", "init", "--out", str(out)), "simulated")
    assert snapshot(out) == before
