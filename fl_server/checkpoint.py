"""Operator checkpoints: the RunState after every completed stage, in `<out-dir>/checkpoint/`.

Payloads (scaler, global model) are files named by their content hash and written before
`state.json`, which names them; `state.json` is replaced atomically (temp file + rename), so a
crash at any point leaves the previous or the new checkpoint, never a mix of two rounds. Files
are only ever protected payloads: under CKKS the operator cannot read its own checkpoint either.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fedfraud
from fedfraud.audit import sha256_hex
from fedfraud.config import RunConfig
from fedfraud.errors import ConfigError, PayloadError
from fedfraud.io import atomic_write
from fedfraud.metrics import json_safe
from fl_server.federation import RunState
from secure_agg import Payload

log = logging.getLogger("fedfraud.server")

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
FORMAT = 1
# Settings a resumed run may change: more rounds, other timeouts, moved folders. Any other
# difference (model, backend, seed, DP, ...) would mix two federations in one model.
RESUMABLE_CHANGES = frozenset(
    {"num_rounds", "round_timeout", "min_banks", "out_dir", "data_dir", "keys_dir", "data_path"}
)


class Checkpoint:
    """Save and load the operator's RunState in one folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @property
    def state_file(self) -> Path:
        return self.directory / STATE_FILE

    def exists(self) -> bool:
        return self.state_file.is_file()

    def save(self, state: RunState, config: RunConfig, audit_head: dict[str, Any]) -> Path:
        """Write `state` (after len(state.rounds) completed rounds) and return state.json."""
        self.directory.mkdir(parents=True, exist_ok=True)
        payloads: dict[str, dict[str, str]] = {}
        values: dict[str, Any] = {}
        for f in fields(state):
            value = getattr(state, f.name)
            if isinstance(value, Payload):
                blob = value.to_bytes()
                digest = sha256_hex(blob)
                name = f"{f.name}-{digest[:16]}.payload"
                if not (self.directory / name).exists():
                    atomic_write(self.directory / name, blob)
                payloads[f.name] = {"file": name, "sha256": digest}
            else:
                values[f.name] = value
        doc = {
            "format": FORMAT,
            "fedfraud_version": fedfraud.__version__,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "completed_rounds": len(state.rounds),
            "config": config.to_dict(),
            "payloads": payloads,
            "state": json_safe(values),
            "audit": audit_head,
        }
        atomic_write(self.state_file, json.dumps(doc, indent=2).encode())
        self._remove_unreferenced({p["file"] for p in payloads.values()})
        return self.state_file

    def read(self) -> dict[str, Any]:
        """The raw state.json document."""
        try:
            doc = json.loads(self.state_file.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"no checkpoint in {self.directory}") from exc
        except ValueError as exc:
            raise ConfigError(
                f"checkpoint {self.state_file} is not valid JSON ({exc}); restore it from a "
                "backup or start a new run with resume=false in another out-dir"
            ) from exc
        if doc.get("format") != FORMAT:
            raise ConfigError(
                f"checkpoint {self.state_file} has unknown format {doc.get('format')}"
            )
        return doc

    def load(self, config: RunConfig) -> tuple[RunState, dict[str, Any]]:
        """The saved RunState (payloads checked against their hashes) and the document."""
        doc = self.read()
        check_resumable(doc["config"], config, self.state_file)
        known = {f.name for f in fields(RunState)}
        values: dict[str, Any] = {k: v for k, v in doc["state"].items() if k in known}
        for name, ref in doc["payloads"].items():
            path = self.directory / ref["file"]
            try:
                blob = path.read_bytes()
            except FileNotFoundError as exc:
                raise ConfigError(f"checkpoint payload {path} is missing") from exc
            if sha256_hex(blob) != ref["sha256"]:
                raise ConfigError(f"checkpoint payload {path} does not match its SHA-256")
            try:
                values[name] = Payload.from_bytes(blob)
            except PayloadError as exc:
                raise ConfigError(f"checkpoint payload {path}: {exc}") from exc
        ignored = set(doc["state"]) - known
        if ignored:
            log.warning("checkpoint fields not used by this version: %s", sorted(ignored))
        return RunState(**values), doc

    def _remove_unreferenced(self, keep: set[str]) -> None:
        for path in self.directory.glob("*.payload"):
            if path.name not in keep:
                path.unlink(missing_ok=True)


def check_resumable(saved: dict[str, Any], config: RunConfig, where: Path) -> None:
    """Refuse to resume when a setting that shapes the model or its privacy has changed."""
    current = config.to_dict()
    changed = sorted(
        k
        for k in set(saved) | set(current)
        if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)
    )
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ConfigError(
            f"cannot resume from {where}: the run config changed ({diffs}); resume with the "
            "saved settings or start a new run in another out-dir"
        )
