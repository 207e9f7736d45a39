"""What a bank node keeps between messages: its data, features and aggregator (per process)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fedfraud.config import RunConfig
from fedfraud.data.features import TRAIN, BankTable, build_bank_table
from fedfraud.data.scaling import Scaler, stats_shapes
from fedfraud.data.schema import require_fraud
from fedfraud.data.store import list_banks, read_bank
from fedfraud.errors import ConfigError
from fedfraud.train import ModelInputs, make_inputs
from secure_agg import Payload, SecureAggregator, StageContext, get


@dataclass(frozen=True)
class BankNode:
    """Where this node's data lives and what it calls itself."""

    bank_id: str
    data_path: Path

    @classmethod
    def from_configs(cls, node_config: Mapping[str, Any], config: RunConfig) -> BankNode:
        """Deployment: node-config `data-path` (+ optional `bank-id`). Simulation:
        run-config `data-dir` and the node's `partition-id`."""
        if "data-path" in node_config:
            path = Path(str(node_config["data-path"]))
            return cls(str(node_config.get("bank-id", path.name)), path)
        if not config.data_dir or "partition-id" not in node_config:
            raise ConfigError(
                "this node has no data: set node-config data-path=DIR (the bank's folder) "
                "or run-config data-dir with a simulation partition-id"
            )
        banks = list_banks(Path(config.data_dir))
        pid = int(node_config["partition-id"])
        if pid >= len(banks):
            raise ConfigError(
                f"partition-id {pid} but {config.data_dir} holds only {len(banks)} banks; "
                "use as many supernodes as bank folders"
            )
        return cls(banks[pid], Path(config.data_dir) / banks[pid])


@lru_cache(maxsize=64)
def load_table(data_path: Path, bank_id: str) -> BankTable:
    """Read and featurize a bank once per process (Ray actors serve many rounds)."""
    table = build_bank_table(read_bank(data_path), bank_id)
    require_fraud(table.y[table.mask(TRAIN)], f"{bank_id} ({data_path})")
    return table


@lru_cache(maxsize=16)
def _aggregator(name: str, frozen_options: tuple[tuple[str, Any], ...]) -> SecureAggregator:
    return get(name, "client", dict(frozen_options))


def aggregator(config: RunConfig, options: Mapping[str, Any]) -> SecureAggregator:
    """The run's secure aggregator in the bank role (built once per process and options)."""
    return _aggregator(config.secure_agg, tuple(sorted(options.items())))


_scalers: dict[str, Scaler] = {}
_inputs: dict[tuple[str, str, str], ModelInputs] = {}


def payload_digest(payload: Payload) -> str:
    return hashlib.sha256(b"".join(payload.chunks)).hexdigest()


def revealed_scaler(
    agg: SecureAggregator, payload: Payload, table: BankTable, context: StageContext | None = None
) -> Scaler:
    """Reveal the consortium's feature moments and fraud rate once per aggregate."""
    key = payload_digest(payload)
    if key not in _scalers:
        shapes = stats_shapes(table)
        _scalers[key] = Scaler.from_moments(agg.client_reveal(payload, shapes, context=context))
    return _scalers[key]


def model_inputs(model: str, table: BankTable, scaler_key: str, scaler: Scaler) -> ModelInputs:
    """Scaled inputs for `model`, cached per (bank, model, scaler)."""
    key = (table.name, model, scaler_key)
    if key not in _inputs:
        _inputs[key] = make_inputs(model, table, scaler)
    return _inputs[key]
