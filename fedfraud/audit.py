"""Hash-chained audit log of a federated run (JSON Lines, one entry per line).

Each entry carries its sequence number, the SHA-256 of the previous entry (`prev`) and its own
SHA-256 (`sha256`, over the canonical JSON of every other field). Editing an entry breaks its own
hash; dropping, inserting or reordering entries breaks a `prev` link or the numbering, so
`verify` names the first entry where the chain no longer holds. Truncating the tail leaves a
valid shorter chain: compare the head hash with one recorded elsewhere (the operator's checkpoint
keeps it, and `verify(..., head=...)` checks it).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedfraud.errors import FedfraudError

GENESIS = "0" * 64  # `prev` of the first entry
FORMAT = 1


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
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "sha256"})).hexdigest()


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


def verify(path: Path, head: str | None = None, anchors: Sequence[Head] = ()) -> Head:
    """Check the whole chain; if given, that it ends at `head` and that each anchor (an entry
    number and hash recorded elsewhere, e.g. by the checkpoint) is in it. Raise AuditError."""
    path = Path(path)
    prev = GENESIS
    entries = read_entries(path)
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
    for anchor in anchors:
        if anchor.entries > len(entries):
            raise AuditError(
                path,
                len(entries) + 1,
                f"the log ends after {len(entries)} entries but entry {anchor.entries} was "
                "recorded elsewhere (entries dropped at the end)",
            )
        if anchor.entries > 0 and entries[anchor.entries - 1]["sha256"] != anchor.sha256:
            raise AuditError(
                path, anchor.entries, "differs from the hash recorded elsewhere for this entry"
            )
    if head is not None and head != prev:
        raise AuditError(
            path,
            len(entries) + 1,
            f"chain ends at {prev[:16]}… but the expected head is {head[:16]}… "
            "(entries missing at the end, or another log)",
        )
    return Head(len(entries), prev)


class AuditLog:
    """Append-only writer; each append is flushed and fsynced before it returns."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
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
        entry["sha256"] = entry_hash(entry)
        line = canonical(entry) + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.head = Head(entry["seq"], entry["sha256"])
        return entry
