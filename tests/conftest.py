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


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process (fast: heavy imports are shared) as `fedfraud ARGS` would:
    (exit code, stdout, stderr). A bug's traceback propagates and fails the test."""
    import logging

    from fedfraud.cli import main

    capsys.readouterr()
    argv, logger = sys.argv, logging.getLogger("fedfraud")
    handlers, propagate = list(logger.handlers), logger.propagate
    sys.argv = ["fedfraud", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:  # the CLI's logging set-up must not leak into other tests' caplog
        sys.argv = argv
        logger.handlers[:], logger.propagate = handlers, propagate
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(result: tuple[int, str, str], *fragments: str) -> str:
    """Exit code 2 and exactly one line on stderr, naming every fragment; returns the line."""
    code, out, err = result
    assert code == 2, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: compare before/after to prove nothing changed."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


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
