"""A bank's side of the cross-bank sketch stage (run-config cross-bank=sketch).

Contribute: the bank encodes its own rows into the keyed count-min sketch and protects it with
the run's aggregator (weight 1), like its feature moments. Reveal: every later train/evaluate
message carries the consortium aggregate and its proof; the bank opens it only through
`BankGuard.aggregate` (signed contributions, once per run), multiplies the revealed mean by
the number of contributors and appends its cross-bank features to its model inputs.

The sketch key comes from the bank's own policy (`sketch-key-path`), never from the operator:
without it the operator cannot tell which cell belongs to which account.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fedfraud.crossbank.features import bank_sketch, cross_bank_scaler, cross_bank_table
from fedfraud.data.features import BankTable
from fedfraud.data.scaling import Scaler
from fedfraud.data.store import read_bank
from fedfraud.errors import ConfigError
from fedfraud.policy import BankPolicy, PolicyRefusal
from fl_client.guard import BankGuard, payload_sha256
from secure_agg import SecureAggregator, StageContext

_opened: dict[tuple[str, str], np.ndarray] = {}  # (bank, aggregate digest) -> consortium sketch
_tables: dict[tuple[str, str], BankTable] = {}


def sketch_key(policy: BankPolicy) -> bytes:
    """The consortium sketch key named by the bank's policy (shared by the banks only)."""
    if policy.sketch_key_path is None:
        raise PolicyRefusal(
            "cross-bank=sketch, but this bank's policy names no sketch-key-path: the bank "
            "does not take part in cross-bank sketches (docs/cross-bank.md)"
        )
    try:
        key = Path(policy.sketch_key_path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"sketch key {policy.sketch_key_path}: {exc.strerror}") from exc
    if len(key) < 16:
        raise ConfigError(f"sketch key {policy.sketch_key_path} holds fewer than 16 bytes")
    return key


@lru_cache(maxsize=64)
def _frame(data_path: Path) -> pd.DataFrame:
    return read_bank(data_path)


def own_sketch(data_path: Path, bank_id: str, config: RunConfig, policy: BankPolicy):
    """This bank's flat sketch vector (what the sketch stage protects)."""
    if config.cross_bank == "off":
        raise PolicyRefusal("sketch stage asked for, but the run-config has cross-bank=off")
    return bank_sketch(_frame(data_path), sketch_key(policy), config.sketch_spec(), bank_id)


def with_cross_bank(
    content: Any,
    config: RunConfig,
    data_path: Path,
    guard: BankGuard,
    agg: SecureAggregator,
    current: StageContext,
    table: BankTable,
    scaler: Scaler,
) -> tuple[BankTable, Scaler, str]:
    """(table with cross-bank columns, its scaler, the sketch aggregate's digest) once the
    message's sketch aggregate checks out; the inputs unchanged when cross-bank is off."""
    if config.cross_bank == "off":
        return table, scaler, ""
    payload, opened = guard.aggregate(content, rm.SKETCH, agg, current, 0, rm.SKETCH)
    spec = config.sketch_spec()
    contributors = int(content[rm.CONFIG][rm.SKETCH_CONTRIBUTORS])
    if contributors < guard.policy.min_contributors:
        raise PolicyRefusal(f"sketch said to sum {contributors} banks, fewer than the policy's")
    digest = payload_sha256(payload)
    key = (guard.identity.bank_id, digest)
    if key not in _opened:
        # The backends reveal the weighted mean; every bank sent weight 1.
        mean = agg.client_reveal(payload, [(spec.size,)], context=opened)[0]
        _opened[key] = (mean.astype(np.float64) * contributors).reshape(spec.shape)
    if key not in _tables:
        frame = _frame(data_path)
        _tables[key] = cross_bank_table(table, frame, _opened[key], sketch_key(guard.policy), spec)
    xtable = _tables[key]
    return xtable, cross_bank_scaler(scaler, xtable), hashlib.sha256(digest.encode()).hexdigest()
