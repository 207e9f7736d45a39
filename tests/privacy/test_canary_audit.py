"""The canary audit has teeth: without DP the loss-threshold attack on the released model
finds the canaries (advantage above its noise floor, a positive one-run ε lower bound); under
DP-SGD the empirical bound stays below the ε the canary bank accounted. Also the CLI verb."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedfraud.config import RunConfig
from fedfraud.data.features import build_bank_table
from fedfraud.data.store import list_banks, read_bank
from fedfraud.data.synth import write_consortium
from fedfraud.privacy.canary_audit import canary_audit
from tests.conftest import assert_user_error, fedfraud

SETTINGS = {"num_banks": 3, "num_rounds": 3, "batch_size": 256, "lr": 0.01, "local_epochs": 3}


@pytest.fixture(scope="module")
def consortium(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("audit") / "data"
    write_consortium(data, 3, 30_000, seed=11)
    return data


def _tables(data: Path):
    return {b: build_bank_table(read_bank(data / b), b) for b in list_banks(data)}


def test_without_dp_the_attack_finds_the_canaries(consortium):
    audit = canary_audit(RunConfig(**SETTINGS), _tables(consortium), canaries=400)
    assert audit["dp"] is False and audit["accounted_epsilon"] is None
    assert audit["advantage"] > audit["advantage_null_95"] + 0.05
    assert audit["empirical_epsilon_lower_bound"] > 0.2
    assert audit["one_run"]["correct"] > audit["one_run"]["guesses"] / 2


def test_under_dp_sgd_the_empirical_bound_stays_below_the_accounted_epsilon(
    consortium, monkeypatch
):
    draws = iter(range(10**6))  # reproducible noise and Poisson samples (tests only)
    monkeypatch.setattr("fedfraud.privacy.dp.secure_seed", lambda bits=128: next(draws))
    audit = canary_audit(RunConfig(dp_epsilon=1.0, **SETTINGS), _tables(consortium), 400)
    assert 0.9 <= audit["accounted_epsilon"] <= 1.0
    assert audit["empirical_epsilon_lower_bound"] <= audit["accounted_epsilon"]


def test_privacy_audit_verb_writes_the_audit_into_results_json(consortium, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config = RunConfig(data_dir=str(consortium), data_format="banks", **SETTINGS)
    (run / "results.json").write_text(json.dumps({"config": config.to_dict(), "privacy": {}}))
    done = fedfraud("privacy-audit", str(run), "--canaries", "200")
    assert done.returncode == 0, done.stderr
    audit = json.loads((run / "results.json").read_text())["privacy"]["audit"]
    assert audit["canaries"] == 200 and "empirical_epsilon_lower_bound" in audit
    assert "empirical ε" in done.stdout


def test_privacy_audit_of_a_folder_without_results_is_a_user_error(tmp_path):
    assert_user_error(fedfraud("privacy-audit", str(tmp_path)), "results.json not found")
