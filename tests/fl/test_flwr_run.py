"""The same Flower app runs under `flwr run` (local SuperLink, simulation) as under simulate."""

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedfraud.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_app_config_declares_every_run_config_field():
    # Flower rejects --run-config keys the app does not declare, so they must stay in sync.
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert set(RunConfig().to_run_config()) <= set(declared)
    RunConfig.from_mapping(declared)  # the declared defaults are valid


@pytest.mark.e2e
def test_flwr_run_local_simulation_writes_results(small_consortium, tmp_path):
    flwr_home = tmp_path / "flwr-home"
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "FLWR_HOME": str(flwr_home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        # Never let Flower `uv sync` the app: it would pull a CUDA torch build.
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    out = tmp_path / "out"
    # Simulated banks read the policies written for them (issue 13); allow this run's backend.
    from secure_agg.consortium import provision_consortium

    banks = sorted(p.name for p in small_consortium.iterdir() if p.is_dir())
    consortium = provision_consortium(tmp_path / "consortium", banks, allowed_backends=["none"])
    run_config = (
        f"data-dir='{small_consortium}' out-dir='{out}' num-rounds=2 num-banks=3 "
        f"consortium-dir='{consortium}'"
    )
    try:
        proc = subprocess.run(
            [
                shutil.which("flwr", path=env["PATH"]),
                "run",
                str(ROOT),
                "--run-config",
                run_config,
                "--federation-config",
                "num-supernodes=3",
                "--stream",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert (out / "results.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
        results = json.loads((out / "results.json").read_text())
        assert [r["num_results"] for r in results["rounds"]] == [3, 3]
    finally:
        # `flwr run` leaves a detached local SuperLink whose database lives under FLWR_HOME.
        subprocess.run(["pkill", "-f", str(flwr_home)], check=False)
