"""The operator's side of signed contributions: announce each stage's participants, keep only
contributions validly signed by roster banks, and forward with every aggregate the proof banks
check before opening it (fl_client/guard.py).

The operator pins the same public roster as the banks (run-config `roster-path`, or a
simulation's `consortium-dir`). Dropping an unsigned contribution here is the honest operator's
courtesy; what protects a bank is that every other bank re-checks the proof itself.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord

from fedfraud import round_messages as rm
from fedfraud.errors import ConfigError
from secure_agg import Payload
from secure_agg.consortium import CONSORTIUM_DIR_KEY
from secure_agg.roster import ROSTER_FILE, Roster, statement

ROSTER_PATH_KEY = "roster-path"
REAGGREGABLE = frozenset({"none", "ckks"})  # as fl_client/guard.py: banks re-add these


def payload_sha256(payload: Payload) -> str:
    return hashlib.sha256(payload.to_bytes()).hexdigest()


def operator_roster(options: Mapping[str, Any]) -> Roster:
    """The consortium roster the operator announces participants from."""
    if options.get(ROSTER_PATH_KEY):
        return Roster.load(Path(str(options[ROSTER_PATH_KEY])))
    if options.get(CONSORTIUM_DIR_KEY):
        return Roster.load(Path(str(options[CONSORTIUM_DIR_KEY])) / ROSTER_FILE)
    raise ConfigError(
        "the operator needs the consortium roster: set run-config roster-path=FILE "
        "(`fedfraud roster show` prints its fingerprint to compare with the banks)"
    )


def stage_record(run: str, stage: str, participants: Sequence[str]) -> ConfigRecord:
    return ConfigRecord({rm.RUN: run, rm.STAGE_NAME: stage, rm.PARTICIPANTS: sorted(participants)})


@dataclass
class Proof:
    """Signed contributions combined into one aggregate (what banks verify before opening)."""

    run: str
    round: int
    stage: str
    participants: tuple[str, ...]
    signatures: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # bank -> (digest, sig)
    payloads: dict[str, Payload] = field(default_factory=dict)  # additive backends only

    def records(self, key: str) -> dict[str, ConfigRecord]:
        banks = sorted(self.signatures)
        out = {
            key + rm.PROOF_SUFFIX: ConfigRecord(
                {
                    rm.RUN: self.run,
                    rm.ROUND: self.round,
                    rm.STAGE_NAME: self.stage,
                    rm.PARTICIPANTS: list(self.participants),
                    rm.PROOF_BANKS: banks,
                    rm.PROOF_DIGESTS: [self.signatures[b][0] for b in banks],
                    rm.PROOF_SIGNATURES: [self.signatures[b][1] for b in banks],
                }
            )
        }
        for bank, payload in self.payloads.items():
            out[f"{key}{rm.CONTRIBUTION_INFIX}{bank}"] = ConfigRecord(payload.to_record())
        return out

    def contributions(self) -> dict[str, dict[str, str]]:
        """Round-record form (audit log): {bank: {"digest": hex, "signature": base64}}."""
        return {
            b: {"digest": d, "signature": base64.b64encode(s).decode()}
            for b, (d, s) in sorted(self.signatures.items())
        }

    def to_state(self) -> dict[str, Any]:
        """JSON form for the operator's checkpoint."""
        return {
            "run": self.run,
            "round": self.round,
            "stage": self.stage,
            "participants": list(self.participants),
            "contributions": self.contributions(),
            "payloads": {
                b: base64.b64encode(p.to_bytes()).decode() for b, p in self.payloads.items()
            },
        }

    @classmethod
    def from_state(cls, doc: Mapping[str, Any]) -> Proof:
        return cls(
            str(doc["run"]),
            int(doc["round"]),
            str(doc["stage"]),
            tuple(doc["participants"]),
            {
                b: (c["digest"], base64.b64decode(c["signature"]))
                for b, c in doc["contributions"].items()
            },
            {b: Payload.from_bytes(base64.b64decode(p)) for b, p in doc["payloads"].items()},
        )


def check_signature(
    roster: Roster,
    run: str,
    rnd: int,
    stage: str,
    participants: Sequence[str],
    bank: str,
    payload: Payload,
    bank_record: Mapping[str, Any],
) -> tuple[str, bytes]:
    """(digest, signature) of a valid roster-signed contribution; ValueError why not."""
    if bank not in roster:
        raise ValueError(f"{bank!r} is not in the consortium roster")
    if bank not in participants:
        raise ValueError(f"{bank!r} was not announced for this stage")
    digest, signature = payload_sha256(payload), bank_record.get(rm.SIGNATURE)
    if bank_record.get(rm.DIGEST) != digest or not isinstance(signature, bytes):
        raise ValueError("contribution carries no signature over its payload")
    message = statement(run=run, round=rnd, stage=stage, digest=digest, participants=participants)
    if not roster.verify(bank, message, signature):
        raise ValueError("contribution's signature is not valid for this stage")
    return digest, signature
