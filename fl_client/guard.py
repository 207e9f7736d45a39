"""What a bank checks before it contributes or reveals: its pinned policy, the consortium
roster and the signatures over every aggregate it is asked to open.

Contribute: the operator announces the run label and the participant set of the stage; the bank
answers only if that set lists itself, only roster banks and at least its policy's
min-contributors, and signs `statement(run, round, stage, sha256(payload), participants)`.

Reveal: an aggregate must come with a proof naming the signed contributions it combines: at
least min-contributors distinct roster banks, every signature valid over the same participant
set, run, round and stage. For the additive backends ("none", "ckks") the operator forwards the
contributions themselves and the bank re-aggregates them: the aggregate must be byte for byte
their sum (aggregation there is deterministic slot-wise addition), so nothing but exactly those
contributions can be in it. A bank opens at most one aggregate per (run, round, stage): it
records the digest of each aggregate it opened in `opened-aggregates.json` beside its identity
file, since a deployed SuperNode starts a fresh ClientApp process for every message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fedfraud.errors import PayloadError
from fedfraud.policy import BankPolicy, PolicyRefusal
from fl_client.bundle import running_app_hash
from secure_agg import Payload, SecureAggregator, StageContext, is_interactive
from secure_agg.consortium import CONSORTIUM_DIR_KEY, policy_file
from secure_agg.roster import BankIdentity, Roster, statement

log = logging.getLogger("fedfraud.client")

# Backends whose aggregate is a deterministic sum a bank can recompute from the contributions.
REAGGREGABLE = frozenset({"none", "ckks"})
OPENED_FILE = "opened-aggregates.json"
# Aggregates already verified in this process (simulations run several banks in one process).
_verified: dict[tuple[str, str, int, str, str], StageContext] = {}


def payload_sha256(payload: Payload) -> str:
    """The digest banks sign: SHA-256 of the payload's self-describing bytes."""
    return hashlib.sha256(payload.to_bytes()).hexdigest()


@dataclass(frozen=True)
class BankGuard:
    """A bank's policy, the roster it pinned and its own identity."""

    policy: BankPolicy
    roster: Roster
    identity: BankIdentity

    @classmethod
    def for_node(
        cls, node_config: Mapping[str, Any], options: Mapping[str, Any], bank_id: str
    ) -> BankGuard:
        """Deployment: node-config `policy-path` (or policy keys). Simulation only (a node
        with a partition-id and no data-path): the policy the runner wrote for this bank."""
        default = None
        simulated = "partition-id" in node_config and "data-path" not in node_config
        if simulated and options.get(CONSORTIUM_DIR_KEY):
            default = policy_file(Path(str(options[CONSORTIUM_DIR_KEY])), bank_id)
        items = tuple(sorted((str(k), str(v)) for k, v in node_config.items()))
        return _load_guard(items, str(default or ""), bank_id)

    # -- what the operator asks for --------------------------------------------------------
    def check_run(self, config: RunConfig) -> None:
        self.policy.check_run(config)
        if self.policy.app_hash is not None:
            running = running_app_hash()
            if running != self.policy.app_hash:
                raise PolicyRefusal(
                    f"this node runs app bundle {running[:16]}..., the policy pins "
                    f"{self.policy.app_hash[:16]}...: other code than the bank reviewed"
                )

    def stage(self, content: Any, stage: str, rnd: int) -> StageContext:
        """The announced stage, checked: this bank in it, roster banks only, enough of them."""
        try:
            record = content[rm.STAGE]
            run = str(record[rm.RUN])
            announced = record[rm.STAGE_NAME]
            participants = tuple(sorted({str(p) for p in record[rm.PARTICIPANTS]}))
        except (KeyError, TypeError) as exc:
            raise PolicyRefusal(f"message has no valid stage announcement ({exc})") from exc
        if announced != stage:
            raise PolicyRefusal(f"stage announced as {announced!r} in a {stage!r} message")
        self._check_participants(participants, f"{stage} {rnd}")
        if self.identity.bank_id not in participants:
            raise PolicyRefusal(f"{stage} {rnd}: this bank is not in the announced set")
        return StageContext(run, int(rnd), stage, participants, self.identity.bank_id)

    def _check_participants(self, participants: tuple[str, ...], where: str) -> None:
        outsiders = [p for p in participants if p not in self.roster]
        if outsiders:
            raise PolicyRefusal(f"{where}: participants not in the roster: {outsiders}")
        if len(participants) < self.policy.min_contributors:
            raise PolicyRefusal(
                f"{where}: {len(participants)} participant(s) announced, this bank's policy "
                f"needs at least {self.policy.min_contributors}"
            )

    # -- contributing ----------------------------------------------------------------------
    def sign(self, context: StageContext, payload: Payload) -> dict[str, Any]:
        """The BANK-record fields that bind this contribution to its stage."""
        digest = payload_sha256(payload)
        message = statement(
            run=context.run,
            round=context.round,
            stage=context.stage,
            digest=digest,
            participants=context.participants,
        )
        return {rm.DIGEST: digest, rm.SIGNATURE: self.identity.sign(message)}

    # -- revealing -------------------------------------------------------------------------
    def aggregate(
        self,
        content: Any,
        key: str,
        agg: SecureAggregator,
        current: StageContext,
        rnd: int,
        stage: str,
    ) -> tuple[Payload, StageContext]:
        """The aggregate under `key` and the stage it came from, after checking it combines
        exactly >= min-contributors validly signed contributions of stage (run, rnd, stage) of
        the `current` message's run; refuses otherwise."""
        run = current.run
        try:
            payload = Payload.from_record(content[key])
        except (KeyError, PayloadError) as exc:
            raise PolicyRefusal(f"{key}: no readable aggregate ({exc})") from exc
        digest = payload_sha256(payload)
        where = f"{key} of {stage} {rnd}"
        if is_interactive(agg):
            # SecAgg+ sums inside Flower's own protocol: no per-bank payload reaches the
            # operator to forward; its hardening (signed keys) is the backends' issue.
            self._once((current.bank_id, run, rnd, stage), digest, where)
            return payload, StageContext(run, rnd, stage, current.participants, current.bank_id)
        key_seen = (current.bank_id, run, rnd, stage, digest)
        if key_seen in _verified:
            return payload, _verified[key_seen]  # checked before
        signed, participants = self._signed_contributions(content, key, run, rnd, stage, where)
        if agg.name in REAGGREGABLE:
            self._check_sum(content, key, agg, signed, digest, where)
        self._once((current.bank_id, run, rnd, stage), digest, where)
        opened = StageContext(run, rnd, stage, participants, current.bank_id)
        _verified[key_seen] = opened
        return payload, opened

    def _signed_contributions(
        self, content: Any, key: str, run: str, rnd: int, stage: str, where: str
    ) -> tuple[dict[str, str], tuple[str, ...]]:
        try:
            proof = content[key + rm.PROOF_SUFFIX]
            participants = tuple(sorted({str(p) for p in proof[rm.PARTICIPANTS]}))
            claimed = (str(proof[rm.RUN]), int(proof[rm.ROUND]), str(proof[rm.STAGE_NAME]))
            banks = [str(b) for b in proof[rm.PROOF_BANKS]]
            digests = [str(d) for d in proof[rm.PROOF_DIGESTS]]
            signatures = list(proof[rm.PROOF_SIGNATURES])
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyRefusal(f"{where}: no valid contribution proof ({exc})") from exc
        if claimed != (run, rnd, stage):
            raise PolicyRefusal(f"{where}: proof is for {claimed}, expected {(run, rnd, stage)}")
        if not len(banks) == len(digests) == len(signatures) or len(set(banks)) != len(banks):
            raise PolicyRefusal(f"{where}: proof lists contributions inconsistently")
        self._check_participants(participants, where)
        for bank, digest, signature in zip(banks, digests, signatures, strict=True):
            message = statement(
                run=run, round=rnd, stage=stage, digest=digest, participants=participants
            )
            if bank not in participants or not self.roster.verify(bank, message, signature):
                raise PolicyRefusal(f"{where}: contribution of {bank!r} is not validly signed")
        if len(banks) < self.policy.min_contributors:
            raise PolicyRefusal(
                f"{where}: {len(banks)} signed contribution(s), the policy needs "
                f"{self.policy.min_contributors}"
            )
        return dict(zip(banks, digests, strict=True)), participants

    @staticmethod
    def _check_sum(
        content: Any, key: str, agg: SecureAggregator, signed: dict[str, str], digest: str, where
    ) -> None:
        contributions = {}
        for bank, expected in signed.items():
            try:
                payload = Payload.from_record(content[f"{key}{rm.CONTRIBUTION_INFIX}{bank}"])
            except (KeyError, PayloadError) as exc:
                raise PolicyRefusal(f"{where}: contribution of {bank} missing ({exc})") from exc
            if payload_sha256(payload) != expected:
                raise PolicyRefusal(f"{where}: contribution of {bank} is not the one it signed")
            contributions[bank] = payload
        try:
            recomputed = agg.server_aggregate(contributions)
        except PayloadError as exc:
            raise PolicyRefusal(f"{where}: contributions do not aggregate ({exc})") from exc
        if recomputed.rejected or payload_sha256(recomputed.payload) != digest:
            raise PolicyRefusal(f"{where}: aggregate is not the sum of the signed contributions")

    def _once(self, stage_key: tuple[str, str, int, str], digest: str, where: str) -> None:
        """Record that this bank opens `digest` for the stage; refuse a second, different one."""
        path = self.policy.identity_path.parent / OPENED_FILE
        try:
            opened = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError) as exc:
            raise PolicyRefusal(f"{path} is unreadable ({exc}); restore or remove it") from exc
        key = "|".join(str(k) for k in stage_key)
        if key in opened:
            if opened[key] != digest:
                raise PolicyRefusal(f"{where}: a different aggregate was already opened for it")
            return
        opened[key] = digest
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(opened, indent=0, sort_keys=True))
        os.replace(tmp, path)


@lru_cache(maxsize=64)
def _load_guard(node_items: tuple[tuple[str, str], ...], default: str, bank_id: str) -> BankGuard:
    policy = BankPolicy.from_node_config(dict(node_items), Path(default) if default else None)
    if policy.bank_id != bank_id:
        raise PolicyRefusal(f"policy is for {policy.bank_id!r}, this node serves {bank_id!r}")
    roster = Roster.load(policy.roster_path)
    if policy.roster_fingerprint and roster.fingerprint() != policy.roster_fingerprint:
        raise PolicyRefusal(
            f"roster {policy.roster_path} has fingerprint {roster.fingerprint()[:16]}..., the "
            "policy pins another: the roster file changed"
        )
    identity = BankIdentity.load(policy.identity_path)
    if identity.bank_id != bank_id or bank_id not in roster:
        raise PolicyRefusal(f"identity {identity.bank_id!r} / roster do not list {bank_id!r}")
    if roster.entry(bank_id) != identity.entry():
        raise PolicyRefusal(f"identity of {bank_id} does not match its roster entry")
    return BankGuard(policy, roster, identity)
