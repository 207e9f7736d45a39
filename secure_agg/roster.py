"""The consortium roster: who the banks are, as keys every bank pins.

Each bank holds one identity (`BankIdentity`): an Ed25519 signing key (contributions, aggregates
and audit entries are signed with it) and an X25519 key-agreement key (pairwise secrets with
every other bank, e.g. masks that cancel in a sum). The roster (`Roster`) lists each bank's two
public keys; a bank trusts only the roster file it pinned itself (by path and fingerprint in its
own node-config), never one the operator sends. Registering a node at the SuperLink therefore
cannot add a bank: a node without a roster key cannot produce a valid signature.

Files are explicit: the roster is JSON with base64 raw public keys; an identity is two PKCS#8 PEM
keys in one file (mode 0600), generated into a git-ignored folder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedfraud.errors import ConfigError
from fedfraud.io import atomic_write

ROSTER_FILE = "roster.json"
IDENTITY_FILE = "identity.pem"
_FORMAT = "fedfraud-roster-v1"
_SEED_DOMAIN = b"fedfraud-pairwise-seed-v1"
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"roster: {what} is not base64") from exc
    if len(raw) != 32:
        raise ConfigError(f"roster: {what} must be a 32-byte key, got {len(raw)} bytes")
    return raw


@dataclass(frozen=True)
class RosterEntry:
    """One bank's public keys (raw 32-byte Ed25519 and X25519 keys)."""

    bank_id: str
    sign_key: bytes
    kex_key: bytes

    def to_json(self) -> dict[str, str]:
        return {"bank_id": self.bank_id, "sign": _b64(self.sign_key), "kex": _b64(self.kex_key)}

    @classmethod
    def from_json(cls, item: Any) -> RosterEntry:
        """Inverse of `to_json` (what a bank sends the consortium in the key ceremony)."""
        try:
            bank = str(item["bank_id"])
            return cls(
                bank, _unb64(item["sign"], f"{bank} sign"), _unb64(item["kex"], f"{bank} kex")
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"roster: malformed entry {item!r}") from exc


@dataclass(frozen=True)
class Roster:
    """The consortium's banks, each with the public keys every other bank pins."""

    entries: Mapping[str, RosterEntry]

    def __post_init__(self) -> None:
        keys = [e.sign_key for e in self.entries.values()]
        if len(set(keys)) != len(keys):
            raise ConfigError("roster: two banks share a signing key; give each bank its own")

    @property
    def banks(self) -> tuple[str, ...]:
        return tuple(sorted(self.entries))

    def __contains__(self, bank_id: object) -> bool:
        return bank_id in self.entries

    def entry(self, bank_id: str) -> RosterEntry:
        if bank_id not in self.entries:
            raise ConfigError(f"bank {bank_id!r} is not in the consortium roster")
        return self.entries[bank_id]

    def canonical(self) -> bytes:
        body = {"format": _FORMAT, "banks": [self.entries[b].to_json() for b in self.banks]}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def fingerprint(self) -> str:
        """SHA-256 of the canonical roster: what banks compare out of band in the key ceremony."""
        return hashlib.sha256(self.canonical()).hexdigest()

    def verify(self, bank_id: str, message: bytes, signature: bytes) -> bool:
        """Whether `signature` is `bank_id`'s Ed25519 signature of `message` (False if unknown)."""
        if bank_id not in self.entries or not isinstance(signature, bytes | bytearray):
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.entries[bank_id].sign_key).verify(
                bytes(signature), message
            )
        except InvalidSignature:
            return False
        return True

    def with_entry(self, entry: RosterEntry) -> Roster:
        """A roster with `entry` added (a bank id already listed is an error)."""
        if entry.bank_id in self.entries:
            raise ConfigError(f"roster already lists {entry.bank_id}; remove it first to replace")
        return Roster({**self.entries, entry.bank_id: entry})

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(json.loads(self.canonical()), indent=2).encode() + b"\n")

    @classmethod
    def load(cls, path: Path) -> Roster:
        path = Path(path)
        try:
            body = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(
                f"roster {path} not found; create it with `fedfraud roster init`"
            ) from exc
        except (OSError, ValueError) as exc:
            raise ConfigError(f"roster {path} cannot be read as JSON: {exc}") from exc
        if not isinstance(body, dict) or body.get("format") != _FORMAT:
            raise ConfigError(f"roster {path} is not a {_FORMAT} file")
        entries: dict[str, RosterEntry] = {}
        for item in body.get("banks", []):
            entry = RosterEntry.from_json(item)
            bank = entry.bank_id
            if bank in entries:
                raise ConfigError(f"roster {path} lists {bank} twice")
            entries[bank] = entry
        return cls(entries)


@dataclass(frozen=True)
class BankIdentity:
    """A bank's private keys. Stays at the bank; only `entry()` goes into the roster."""

    bank_id: str
    sign_private: Ed25519PrivateKey
    kex_private: X25519PrivateKey

    @classmethod
    def generate(cls, bank_id: str) -> BankIdentity:
        return cls(bank_id, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    def entry(self) -> RosterEntry:
        return RosterEntry(
            self.bank_id,
            self.sign_private.public_key().public_bytes(*_RAW),
            self.kex_private.public_key().public_bytes(*_RAW),
        )

    def sign(self, message: bytes) -> bytes:
        return self.sign_private.sign(message)

    def pairwise_seed(self, peer: RosterEntry, context: bytes) -> bytes:
        """A 32-byte secret only this bank and `peer` can compute, bound to `context`
        (X25519 agreement, then HKDF-SHA256; both sides get the same bytes)."""
        shared = self.kex_private.exchange(X25519PublicKey.from_public_bytes(peer.kex_key))
        pair = b"|".join(sorted([self.bank_id.encode(), peer.bank_id.encode()]))
        info = _SEED_DOMAIN + b"\0" + pair + b"\0" + context
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)

    def save(self, path: Path) -> None:
        """Write both private keys (PKCS#8 PEM, mode 0600); refuses to overwrite."""
        path = Path(path)
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite a bank's private keys")
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
        none = serialization.NoEncryption()
        body = (
            f"# fedfraud bank identity: {self.bank_id}\n".encode()
            + self.sign_private.private_bytes(*pem, none)
            + self.kex_private.private_bytes(*pem, none)
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)

    @classmethod
    def load(cls, path: Path) -> BankIdentity:
        path = Path(path)
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"bank identity {path} cannot be read ({exc.strerror}); "
                "create it with `fedfraud roster init` or `fedfraud roster new-bank`"
            ) from exc
        header, _, rest = text.partition(b"\n")
        prefix = b"# fedfraud bank identity: "
        if not header.startswith(prefix):
            raise ConfigError(f"{path} is not a fedfraud bank identity file")
        end = b"-----END PRIVATE KEY-----"
        blocks = [b + end for b in rest.split(end) if b.strip()]
        if len(blocks) != 2:
            raise ConfigError(f"{path} must hold two private keys (signing, key agreement)")
        try:
            sign = serialization.load_pem_private_key(blocks[0].strip(), password=None)
            kex = serialization.load_pem_private_key(blocks[1].strip(), password=None)
        except ValueError as exc:
            raise ConfigError(f"{path}: unreadable private key: {exc}") from exc
        if not isinstance(sign, Ed25519PrivateKey) or not isinstance(kex, X25519PrivateKey):
            raise ConfigError(f"{path} must hold an Ed25519 and an X25519 private key")
        return cls(header[len(prefix) :].decode().strip(), sign, kex)


def statement(
    *, run: str, round: int, stage: str, digest: str, participants: Iterable[str]
) -> bytes:
    """The canonical bytes a bank signs for one contribution or aggregate: which run, round and
    stage, the SHA-256 of the payload, and the exact set of banks it is combined with."""
    body = {
        "domain": "fedfraud-contribution-v1",
        "run": str(run),
        "round": int(round),
        "stage": str(stage),
        "digest": str(digest),
        "participants": sorted(set(participants)),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def init_roster(bank_ids: Sequence[str], out: Path) -> Roster:
    """A new consortium in `out`: one identity file per bank (`out/BANK/identity.pem`) and the
    roster of their public keys (`out/roster.json`). For simulations and key ceremonies."""
    out = Path(out)
    roster = Roster({})
    for bank in bank_ids:
        identity = BankIdentity.generate(bank)
        identity.save(out / bank / IDENTITY_FILE)
        roster = roster.with_entry(identity.entry())
    roster.save(out / ROSTER_FILE)
    return roster
