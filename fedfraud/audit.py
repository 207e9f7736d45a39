"""Hash-chained audit log of a federated run (JSON Lines, one entry per line).

Each entry carries its sequence number, the SHA-256 of the previous entry (`prev`) and its own
SHA-256 (`sha256`, over the canonical JSON of every other field). Editing an entry breaks its own
hash; dropping, inserting or reordering entries breaks a `prev` link or the numbering, so
`verify` names the first entry where the chain no longer holds. Truncating the tail leaves a
valid shorter chain: compare the head hash with one recorded elsewhere (the operator's checkpoint
keeps it, and `verify(..., head=...)` checks it).

A hash chain alone is only as good as the last head someone kept: the operator can rewrite the
whole log and re-chain it. So (issue 14) every entry also carries the operator's Ed25519
signature (`op_sig`, over its hash; the key is named in the start entry), round entries carry the
contributing banks' roster signatures over their contributions and participant set, and the banks
keep every head the operator showed them (fl_client/audit_heads.py). `verify` checks all three:
a rewritten entry no longer matches a head a bank kept, a dropped bank breaks the participant set
the banks signed, a log without its `finish` entry was cut off, and an empty log is no log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedfraud.errors import FedfraudError

GENESIS = "0" * 64  # `prev` of the first entry
FORMAT = 1
SIGNATURE = "op_sig"  # the operator's signature; outside the hashed fields (it signs the hash)
MIN_CONTRIBUTORS = 3
# bank-signature check: (bank, message, signature) -> valid; statement builder (roster.statement)
Verifier = Callable[[str, bytes, bytes], bool]
Statement = Callable[..., bytes]


class AuditError(FedfraudError):
    """The audit log does not verify; `entry` is the 1-based number of the first bad entry."""

    def __init__(self, path: Path, entry: int, reason: str) -> None:
        super().__init__(f"audit log {path}: entry {entry}: {reason}")
        self.entry = entry
        self.reason = reason


@dataclass(frozen=True)
class Head:
    """Where a chain ends: the number of entries and the last entry's hash."""

    entries: int
    sha256: str


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash is taken over: sorted keys, no spaces, no NaN."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 of an entry without its own `sha256` field."""
    fields = {k: v for k, v in entry.items() if k not in ("sha256", SIGNATURE)}
    return hashlib.sha256(canonical(fields)).hexdigest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_entries(path: Path) -> list[dict[str, Any]]:
    """Parse every line; a line that is not a JSON object is reported with its number."""
    path = Path(path)
    if not path.is_file():
        raise FedfraudError(f"audit log {path} not found; pass <out-dir>/audit.jsonl of a run")
    entries = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                entry = json.loads(raw)
            except ValueError as exc:
                raise AuditError(path, number, f"not valid JSON ({exc})") from exc
            if not isinstance(entry, dict):
                raise AuditError(path, number, "not a JSON object")
            entries.append(entry)
    return entries


def verify(
    path: Path,
    head: str | None = None,
    anchors: Sequence[Head] = (),
    *,
    signed: bool = False,
    finished: bool = False,
    bank_heads: Sequence[Head] = (),
    operator_key: str | None = None,
    banks: tuple[Verifier, Statement] | None = None,
) -> Head:
    """Check the whole chain; if given, that it ends at `head` and that each anchor (an entry
    number and hash recorded elsewhere, e.g. by the checkpoint) is in it. Raise AuditError.

    signed: every entry carries a valid operator signature under the start entry's key (and that
    key is `operator_key`, when a bank pinned one). finished: the log ends with `finish`.
    bank_heads: heads banks kept, each must be in the chain. banks: check the roster signatures
    on every round entry's contributions."""
    path = Path(path)
    prev = GENESIS
    entries = read_entries(path)
    if not entries:
        raise AuditError(path, 1, "the log is empty (no start entry): not a run's audit log")
    for number, entry in enumerate(entries, start=1):
        if entry.get("seq") != number:
            raise AuditError(
                path,
                number,
                f"sequence number is {entry.get('seq')!r}, expected {number} "
                "(an entry was dropped, inserted or moved)",
            )
        if entry.get("prev") != prev:
            raise AuditError(
                path,
                number,
                "previous-entry hash does not match entry "
                f"{number - 1 if number > 1 else '(start)'} (an entry before it was edited, "
                "dropped or reordered)",
            )
        try:
            actual = entry_hash(entry)
        except ValueError as exc:  # NaN/inf smuggled in: not canonical JSON
            raise AuditError(path, number, f"not canonical JSON ({exc})") from exc
        if entry.get("sha256") != actual:
            raise AuditError(path, number, "content does not match its SHA-256 (entry edited)")
        prev = actual
    if signed:
        _check_operator_signatures(path, entries, operator_key)
    if banks is not None:
        for number, entry in enumerate(entries, start=1):
            if entry.get("event") in ("round", "stats"):
                _check_bank_signatures(path, number, entry, entries[0], *banks)
    for anchor in anchors:
        _check_anchor(path, entries, anchor, "recorded elsewhere")
    for seen in bank_heads:
        _check_anchor(path, entries, seen, "kept by a bank")
    if head is not None and head != prev:
        raise AuditError(
            path,
            len(entries) + 1,
            f"chain ends at {prev[:16]}… but the expected head is {head[:16]}… "
            "(entries missing at the end, or another log)",
        )
    if finished and entries[-1].get("event") != "finish":
        raise AuditError(
            path,
            len(entries) + 1,
            f"the log ends after entry {len(entries)} ({entries[-1].get('event')!r}) without a "
            "finish entry: its final entries were cut off, or the run has not finished "
            "(--allow-unfinished checks a run in progress)",
        )
    return Head(len(entries), prev)


def _check_anchor(path: Path, entries: list[dict[str, Any]], anchor: Head, where: str) -> None:
    if anchor.entries > len(entries):
        raise AuditError(
            path,
            len(entries) + 1,
            f"the log ends after {len(entries)} entries but entry {anchor.entries} was "
            f"{where} (entries dropped at the end)",
        )
    if anchor.entries > 0 and entries[anchor.entries - 1]["sha256"] != anchor.sha256:
        raise AuditError(
            path,
            anchor.entries,
            f"differs from the hash {where} for this entry (the log was rewritten)",
        )


def _check_operator_signatures(
    path: Path, entries: list[dict[str, Any]], pinned: str | None
) -> None:
    key_text = entries[0].get("operator_key")
    if not isinstance(key_text, str):
        raise AuditError(path, 1, "the start entry names no operator key: the log is unsigned")
    if pinned is not None and key_text != pinned:
        raise AuditError(
            path, 1, "signed with another operator key than the one the banks saw (rewritten)"
        )
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(key_text, validate=True))
    except ValueError as exc:
        raise AuditError(path, 1, f"operator key is not an Ed25519 key ({exc})") from exc
    for number, entry in enumerate(entries, start=1):
        try:
            key.verify(
                base64.b64decode(str(entry.get(SIGNATURE, "")), validate=True),
                bytes.fromhex(entry["sha256"]),
            )
        except (InvalidSignature, ValueError) as exc:
            raise AuditError(path, number, "operator signature missing or invalid") from exc


def _check_bank_signatures(
    path: Path,
    number: int,
    entry: Mapping[str, Any],
    start: Mapping[str, Any],
    verifier: Verifier,
    statement: Statement,
) -> None:
    contributions = entry.get("contributions")
    participants = entry.get("participants")
    if not isinstance(contributions, dict) or not isinstance(participants, list):
        raise AuditError(path, number, "no bank signatures on this stage (contributions missing)")
    people = sorted(set(map(str, participants)))
    if sorted(contributions) != people or len(people) < MIN_CONTRIBUTORS:
        raise AuditError(
            path,
            number,
            f"signed contributions {sorted(contributions)} do not match the participants "
            f"{people} (at least {MIN_CONTRIBUTORS}): a bank was dropped or added",
        )
    banks = entry.get("banks")
    if isinstance(banks, list) and sorted(map(str, banks)) != people:
        raise AuditError(path, number, f"banks {sorted(banks)} are not the signers {people}")
    run = entry.get("run", start.get("run", ""))
    stage = str(entry.get("stage", "stats" if entry.get("event") == "stats" else "train"))
    for bank in people:
        item = contributions[bank]
        try:
            message = statement(
                run=str(run),
                round=int(entry.get("round", 0)),
                stage=stage,
                digest=str(item["digest"]),
                participants=people,
            )
            good = verifier(bank, message, base64.b64decode(item["signature"], validate=True))
        except (KeyError, TypeError, ValueError):
            good = False
        if not good:
            raise AuditError(path, number, f"{bank}'s roster signature does not verify")


def read_bank_heads(path: Path, run: str | None = None) -> tuple[list[Head], set[str]]:
    """Heads one bank kept (fl_client/audit_heads.py), for run `run` if given, and the operator
    keys it saw with them."""
    path = Path(path)
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise FedfraudError(f"bank heads file {path} cannot be read as JSON lines: {exc}") from exc
    rows = [r for r in rows if isinstance(r, dict) and (run is None or r.get("run") == run)]
    if not rows:
        raise FedfraudError(
            f"bank heads file {path} holds no head of run {run!r}; pass the file this bank's "
            "node kept for the run being checked"
        )
    try:
        heads = [Head(int(r["seq"]), str(r["sha256"])) for r in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise FedfraudError(f"bank heads file {path}: malformed line ({exc})") from exc
    return heads, {str(r.get("operator_key")) for r in rows}


class OperatorSigner:
    """The operator's Ed25519 audit key, kept in a file (PKCS#8 PEM, mode 0600)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key

    @classmethod
    def load_or_create(cls, path: Path) -> OperatorSigner:
        path = Path(path)
        if path.is_file():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise FedfraudError(f"{path} is not an Ed25519 private key")
            return cls(key)
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        return cls(key)

    @property
    def public_b64(self) -> str:
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode()

    def sign(self, sha256: str) -> str:
        return base64.b64encode(self.key.sign(bytes.fromhex(sha256))).decode()


class AuditLog:
    """Append-only writer; each append is flushed and fsynced before it returns. With a signer,
    every entry carries the operator's signature over its hash."""

    def __init__(self, path: Path, signer: OperatorSigner | None = None) -> None:
        self.path = Path(path)
        self.signer = signer
        self.head = verify(self.path) if self.path.exists() else Head(0, GENESIS)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Add one entry (`event` plus JSON-able `fields`) and return it."""
        entry: dict[str, Any] = {
            "format": FORMAT,
            "seq": self.head.entries + 1,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": event,
            **fields,
            "prev": self.head.sha256,
        }
        if self.signer is not None and entry["seq"] == 1:
            entry["operator_key"] = self.signer.public_b64
        entry["sha256"] = entry_hash(entry)
        if self.signer is not None:
            entry[SIGNATURE] = self.signer.sign(entry["sha256"])
        line = canonical(entry) + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.head = Head(entry["seq"], entry["sha256"])
        return entry
