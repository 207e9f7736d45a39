"""The bank's copy of every audit-log head the operator showed it (evidence against rewriting).

Each message from the operator carries the head of its audit log (entry count, hash, operator
key). The bank appends it, with the run id, to a JSON Lines file in its own state folder:
node-config `audit-heads`, else next to its privacy ledger. `fedfraud audit verify --bank-heads`
then checks that the operator's log still contains every one of them, signed by the same key.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedfraud.privacy.budget import ledger_path

log = logging.getLogger("fedfraud.client")
HEADS_FILE = "audit-heads.jsonl"


def heads_path(node_config: Mapping[str, Any], data_path: Path) -> Path:
    configured = str(node_config.get("audit-heads", "") or "")
    return (
        Path(configured) if configured else ledger_path(node_config, data_path).parent / HEADS_FILE
    )


def keep_head(
    head: Mapping[str, Any], run: str, node_config: Mapping[str, Any], data_path: Path
) -> None:
    """Append one head; a head that is not well-formed is logged and not kept."""
    try:
        row = {
            "run": str(run),
            "seq": int(head["seq"]),
            "sha256": str(head["sha256"]),
            "operator_key": str(head["operator_key"]),
        }
    except (KeyError, TypeError, ValueError):
        log.warning("the operator sent a malformed audit head; not kept")
        return
    if row["seq"] < 1 or len(row["sha256"]) != 64:
        log.warning("the operator sent an audit head without entries; not kept")
        return
    path = heads_path(node_config, data_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
