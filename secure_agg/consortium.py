"""A simulated (or test) consortium's bank-side files: one roster, and for every bank its
identity and its pinned policy, in one folder:

    DIR/roster.json              the consortium roster (public keys)
    DIR/BANK/identity.pem        the bank's private keys (mode 0600)
    DIR/BANK/policy.toml         the bank's policy, pinning the roster by path and fingerprint
    DIR/sketch.key               the banks' shared cross-bank sketch key (32 random bytes, 0600;
                                 never the operator's: deployed banks share it out of band)

A simulated bank reads `DIR/BANK/policy.toml` (run-config `consortium-dir` names DIR; only
simulations use it: a deployed bank names its own `policy-path` in its node-config).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomli_w

from fedfraud.policy import BankPolicy
from secure_agg.roster import IDENTITY_FILE, ROSTER_FILE, init_roster

POLICY_FILE = "policy.toml"
CONSORTIUM_DIR_KEY = "consortium-dir"  # run-config key of simulations (never a deployment's)
SKETCH_KEY_FILE = "sketch.key"


def policy_file(directory: Path, bank_id: str) -> Path:
    return Path(directory) / bank_id / POLICY_FILE


def write_policy(path: Path, policy: BankPolicy) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps({"policy": policy.to_toml_dict()}))
    return path


def provision_consortium(directory: Path, bank_ids: Sequence[str], **policy: Any) -> Path:
    """Roster, identities and one policy per bank in `directory`; `policy` holds the policy
    values every bank shares (allowed-backends, min-contributors, app-hash, ...)."""
    directory = Path(directory)
    roster = init_roster(list(bank_ids), directory)
    sketch_key = write_sketch_key(directory / SKETCH_KEY_FILE)
    values = {k.replace("_", "-"): v for k, v in policy.items() if v is not None}
    for bank in bank_ids:
        bank_policy = BankPolicy.from_mapping(
            {
                **values,
                "bank-id": bank,
                "roster-path": directory / ROSTER_FILE,
                "identity-path": directory / bank / IDENTITY_FILE,
                "roster-fingerprint": roster.fingerprint(),
                "sketch-key-path": sketch_key,
            }
        )
        write_policy(policy_file(directory, bank), bank_policy)
    return directory


def write_sketch_key(path: Path) -> Path:
    """32 random bytes for the banks' keyed sketch hashes, readable by the owner only (kept if
    the file exists: every bank of a consortium must hash with the same key)."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path
