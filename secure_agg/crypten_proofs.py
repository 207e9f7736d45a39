"""Roster-signed CrypTen contributions and the rules each compute party enforces on its own.

A bank with a roster identity signs, per contribution, the SHA-256 of every sealed share (one per
party) bound to the run, round, stage and participant set (`roster.statement`). A compute party
that pinned the roster opens only shares whose hash matches a valid signature of the bank they
are attributed to, so the operator cannot fabricate a contribution (sealing needs only the
parties' public keys) to isolate one bank's update. Each party also keeps its own floor on the
number of contributors (never below three) and reveals at most one sum per run, round and stage,
whatever the operator's job says.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedfraud.errors import ConfigError, PayloadError
from secure_agg.base import StageContext
from secure_agg.masking import MIN_PARTICIPANTS
from secure_agg.roster import BankIdentity, Roster, statement


def share_digest(share_hashes: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(share_hashes)).encode()).hexdigest()


def sign_contribution(
    identity: BankIdentity, context: StageContext, chunks: Sequence[bytes]
) -> dict[str, str]:
    """Metadata fields proving `identity` made these sealed shares for this stage."""
    if context.bank_id != identity.bank_id:
        raise ConfigError(f"identity is {identity.bank_id}, the stage names {context.bank_id}")
    hashes = [hashlib.sha256(c).hexdigest() for c in chunks]
    message = statement(
        run=context.run,
        round=context.round,
        stage=context.stage,
        digest=share_digest(hashes),
        participants=context.participants,
    )
    return {
        "bank": identity.bank_id,
        "run": context.run,
        "stage": context.stage,
        "participants": json.dumps(sorted(context.participants)),
        "share_sha256": json.dumps(hashes),
        "signature": base64.b64encode(identity.sign(message)).decode(),
    }


PROOF_KEYS = ("bank", "run", "stage", "participants", "share_sha256", "signature")


def proof_of(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The proof fields of a payload's metadata (None for an unsigned contribution)."""
    if "signature" not in meta:
        return None
    return {k: meta.get(k) for k in PROOF_KEYS}


@dataclass
class PartyRules:
    """What one compute party enforces itself (from its own command line, not the job)."""

    min_contributors: int = MIN_PARTICIPANTS
    roster: Roster | None = None
    served: set[tuple[str, int, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.min_contributors < MIN_PARTICIPANTS:
            raise ConfigError(
                f"a compute party reveals no sum of fewer than {MIN_PARTICIPANTS} banks; "
                f"--min-contributors {self.min_contributors} is below that floor"
            )

    def check_share(
        self, party: int, bank: str, rnd: int, proof: Mapping[str, Any] | None, sealed: bytes
    ) -> tuple[str, str, tuple[str, ...]] | None:
        """(run, stage, participants) of a valid signed share; PayloadError if it is not.
        Without a pinned roster (simulation) every share passes and None is returned."""
        if self.roster is None:
            return None
        if not proof or proof.get("bank") != bank:
            raise PayloadError("contribution is not signed by the bank it is attributed to")
        try:
            hashes = list(json.loads(str(proof["share_sha256"])))
            people = tuple(sorted(json.loads(str(proof["participants"]))))
            signature = base64.b64decode(str(proof["signature"]), validate=True)
        except (ValueError, TypeError, KeyError) as exc:
            raise PayloadError(f"malformed contribution proof ({exc})") from exc
        if not 0 <= party < len(hashes) or hashes[party] != hashlib.sha256(sealed).hexdigest():
            raise PayloadError("share does not match the hash its bank signed")
        if bank not in people:
            raise PayloadError("signing bank is not among the participants it signed")
        message = statement(
            run=str(proof["run"]),
            round=rnd,
            stage=str(proof["stage"]),
            digest=share_digest(hashes),
            participants=people,
        )
        if not self.roster.verify(bank, message, signature):
            raise PayloadError("roster signature does not verify")
        return str(proof["run"]), str(proof["stage"]), people

    def check_sum(
        self,
        rnd: int,
        job_min: int,
        banks: Sequence[str],
        stages: Sequence[tuple[str, str, tuple[str, ...]] | None],
    ) -> None:
        """Refuse a sum below this party's floor, of mixed stages, or a second one per stage."""
        floor = max(self.min_contributors, job_min)
        if len(banks) < floor or len(set(banks)) != len(banks):
            raise PayloadError(
                f"only {len(set(banks))} distinct contribution(s) could be opened by every compute"
                f" party; the committee reveals no sum of fewer than {floor} banks"
            )
        if self.roster is None:
            return
        if len(set(stages)) != 1 or stages[0] is None:
            raise PayloadError("contributions were signed for different stages or participants")
        run, stage, people = stages[0]
        if not set(banks) <= set(people):
            raise PayloadError("a contribution comes from a bank outside the signed participants")
        key = (run, rnd, stage)
        if key in self.served:
            raise PayloadError(
                f"this party already revealed the sum of run {run} round {rnd} {stage}; one sum "
                "per stage"
            )
        self.served.add(key)
