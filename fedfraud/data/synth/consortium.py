"""Entry points: check the arguments, generate a consortium, write it to disk."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedfraud.data import store
from fedfraud.data.schema import TYPOLOGIES
from fedfraud.data.synth.assemble import assemble_frames
from fedfraud.data.synth.constants import FRAUD_TYPES, MAX_BANKS, MIN_TX_PER_BANK, STATUS_NAMES
from fedfraud.data.synth.fraud import add_fraud
from fedfraud.data.synth.legit import add_legit
from fedfraud.data.synth.rows import Rows
from fedfraud.data.synth.schedule import schedule_typologies
from fedfraud.data.synth.world import bank_sizes, build_world
from fedfraud.errors import ConfigError

log = logging.getLogger(__name__)


def generate_consortium(
    num_banks: int, transactions: int, seed: int = 0
) -> dict[str, pd.DataFrame]:
    """Generate `transactions` rows split over `num_banks` banks, keyed bank-00, bank-01, ..."""
    return _generate(num_banks, transactions, seed)[0]


def write_consortium(out_dir: Path, num_banks: int, transactions: int, seed: int = 0) -> dict:
    """Generate a consortium and write DIR/bank-XX/transactions.parquet + DIR/manifest.json.

    The manifest also records which typologies each bank sees ("always", "late", "absent").
    """
    out_dir = Path(out_dir)
    check_args(num_banks, transactions, seed)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file; give --out a folder (new or empty).")
    keep = {store.bank_name(b) for b in range(num_banks)}
    stale = sorted(p.parent.name for p in out_dir.glob(f"*/{store.TRANSACTIONS_FILE}"))
    stale = [name for name in stale if name not in keep]
    if stale:  # they would be read as members of the new consortium
        listed = ", ".join(stale[:3]) + (", ..." if len(stale) > 3 else "")
        raise ConfigError(
            f"{out_dir} already holds other bank folders ({listed}); "
            "write to a new folder or delete the old data first."
        )
    frames, schedule = _generate(num_banks, transactions, seed)
    meta = {
        "generator": "fedfraud.synth",
        "seed": seed,
        "num_banks": num_banks,
        "transactions": transactions,
        "typology_schedule": schedule,
    }
    return store.write_banks(frames, out_dir, meta=meta)


def check_args(num_banks: Any, transactions: Any, seed: Any) -> None:
    """Raise ConfigError unless the arguments give every bank fraud in train and test."""

    def is_int(v: Any) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if not is_int(num_banks) or not 1 <= num_banks <= MAX_BANKS:
        raise ConfigError(
            f"num_banks must be an integer from 1 to {MAX_BANKS} (got {num_banks!r})."
        )
    need = MIN_TX_PER_BANK * num_banks
    if not is_int(transactions) or transactions < need:
        raise ConfigError(
            f"transactions={transactions!r} is too small for {num_banks} banks; use at least "
            f"{need} ({MIN_TX_PER_BANK} per bank) so every bank gets fraud in train and test."
        )
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer (got {seed!r}).")


def _generate(
    num_banks: int, transactions: int, seed: int
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, str]]]:
    """Frames per bank and the typology schedule; four independent streams from one seed."""
    check_args(num_banks, transactions, seed)
    world_rng, sched_rng, fraud_rng, legit_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    sizes = bank_sizes(world_rng, num_banks, transactions)
    world = build_world(world_rng, sizes)
    status = schedule_typologies(sched_rng, num_banks)
    rows = Rows()
    add_fraud(fraud_rng, world, status, rows)
    fraud = rows.concat()
    # Fraud rows beyond the time range are dropped, then legit rows fill each bank exactly.
    fraud_per_bank = np.bincount(fraud["bank"].astype(np.int64), minlength=num_banks)
    for b, bank_rng in enumerate(legit_rng.spawn(num_banks)):
        add_legit(bank_rng, world, b, int(sizes[b] - fraud_per_bank[b]), rows)
    frames = assemble_frames(world_rng, world, rows.concat())
    assert sum(len(df) for df in frames.values()) == transactions  # legit rows fill exactly
    schedule = {
        store.bank_name(b): {
            TYPOLOGIES[k]: STATUS_NAMES[status[b, i]] for i, k in enumerate(FRAUD_TYPES)
        }
        for b in range(num_banks)
    }
    log.debug("generated %d rows over %d banks (seed %d)", transactions, num_banks, seed)
    return frames, schedule
