"""Shared fixtures: small deterministic consortia written to tmp folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedfraud.data.schema import validate_transactions
from fedfraud.data.store import write_banks


def fedfraud(
    *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """Run the CLI as a user would (a fresh process, wide terminal so messages stay on one line)."""
    return subprocess.run(
        [sys.executable, "-m", "fedfraud.cli", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


def assert_user_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    """A user mistake: exit code 2, no traceback, a message containing `fragment`."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert fragment in " ".join(proc.stderr.split())


def random_bank(
    rng: np.random.Generator, n: int, offset: int, accounts: bool = True
) -> pd.DataFrame:
    """A small bank where fraud goes to a few mule receivers with larger amounts."""
    y = (rng.random(n) < 0.03).astype(np.int8)
    df = pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, n) * (1 + 4 * y),
            "timestamp": np.sort(rng.uniform(0, 2000, n)),
            "is_fraud": y,
            "channel": rng.integers(0, 5, n),
            "mcc": rng.integers(0, 10, n),
            "device_new": (rng.random(n) < 0.05 + 0.5 * y).astype(np.int8),
            "geo_km": rng.exponential(10, n),
        }
    )
    if accounts:
        df["sender"] = rng.integers(0, n // 3, n) + offset
        df["receiver"] = np.where(y == 1, rng.integers(0, 20, n), rng.integers(100, 100 + n, n))
    return validate_transactions(df, "fixture")


@pytest.fixture
def small_consortium(tmp_path: Path) -> Path:
    """Three banks of 3000 transactions in tmp_path/banks."""
    rng = np.random.default_rng(7)
    frames = {f"bank-{i:02d}": random_bank(rng, 3000, 100_000 * (i + 1)) for i in range(3)}
    write_banks(frames, tmp_path / "banks")
    return tmp_path / "banks"
