"""Key material of the CrypTen compute-party committee, and sealing shares for one party.

Each compute party k holds an X25519 private key (`party-k.key`, PEM, mode 0600); the public
keys are in `parties.json`, which banks and the operator get. A bank seals the share for party k
with an ephemeral X25519 key: HKDF-SHA256 of the shared secret gives a ChaCha20-Poly1305 key, and
the share's context (committee, party, round, size, precision, contribution id) is authenticated
as associated data. The operator, which relays shares, can neither read nor alter them unnoticed,
and a share cannot be replayed under another party, round or committee.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedfraud.errors import ConfigError, PayloadError

PARTIES_FILE = "parties.json"
FORMAT = "fedfraud-crypten-committee/1"
SCHEME = "X25519+HKDF-SHA256+ChaCha20-Poly1305"
SEAL_OVERHEAD = 32 + 12 + 16  # ephemeral public key, nonce, authentication tag
SEED_BYTES = 32
_HKDF_INFO = b"fedfraud/crypten/share/v1"


def key_file(directory: Path, party: int) -> Path:
    """Where party `party` keeps its private key."""
    return Path(directory) / f"party-{party}.key"


@dataclass(frozen=True)
class Committee:
    """The public view of the committee: one X25519 public key per compute party."""

    directory: Path
    public_keys: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return len(self.public_keys)

    @property
    def fingerprint(self) -> str:
        """Names this committee in payloads, so shares for another committee are spotted."""
        canon = json.dumps(
            {"scheme": SCHEME, "public_keys": [k.hex() for k in self.public_keys]},
            sort_keys=True,
        )
        return hashlib.sha256(canon.encode()).hexdigest()[:32]


def init_parties(out_dir: Path, parties: int = 3, overwrite: bool = False) -> Committee:
    """Create key pairs for `parties` compute parties in `out_dir` (private keys 0600)."""
    if parties < 2:
        raise ConfigError(f"a CrypTen committee needs at least 2 parties, got {parties}")
    out = Path(out_dir)
    if (out / PARTIES_FILE).exists() and not overwrite:
        raise ConfigError(
            f"{out / PARTIES_FILE} already exists; use that committee or choose an empty folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    public = []
    for k in range(parties):
        private = X25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = key_file(out, k)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        public.append(private.public_key().public_bytes_raw())
    doc = {
        "format": FORMAT,
        "scheme": SCHEME,
        "parties": [
            {"index": k, "public_key": base64.b64encode(key).decode()}
            for k, key in enumerate(public)
        ],
    }
    (out / PARTIES_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    return Committee(out, tuple(public))


def load_committee(directory: Path) -> Committee:
    """Read `parties.json` from `directory`; ConfigError naming the fix when it is unusable."""
    path = Path(directory) / PARTIES_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path} not found: crypten-parties-dir must hold the committee's {PARTIES_FILE}; "
            "create one with secure_agg.crypten_committee.init_parties(DIR, 3)"
        )
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT or doc.get("scheme") != SCHEME:
            raise ValueError(f"expected format {FORMAT} and scheme {SCHEME}")
        entries = sorted(doc["parties"], key=lambda p: int(p["index"]))
        if [int(p["index"]) for p in entries] != list(range(len(entries))):
            raise ValueError("party indices must be 0..K-1")
        keys = tuple(base64.b64decode(p["public_key"], validate=True) for p in entries)
        for key in keys:
            X25519PublicKey.from_public_bytes(key)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a valid committee file ({exc}); re-create it") from exc
    if len(keys) < 2:
        raise ConfigError(f"{path} lists {len(keys)} party; a committee needs at least 2")
    return Committee(Path(directory), keys)


def load_party_key(committee: Committee, party: int) -> X25519PrivateKey:
    """Party `party`'s private key, checked against the committee's public key for it."""
    path = key_file(committee.directory, party)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the private key of compute party {party}: {exc}") from exc
    if not isinstance(key, X25519PrivateKey):
        raise ConfigError(f"{path} is not an X25519 private key")
    if key.public_key().public_bytes_raw() != committee.public_keys[party]:
        raise ConfigError(f"{path} does not match party {party}'s public key in {PARTIES_FILE}")
    return key


def share_context(
    committee: str, party: int, round: int, size: int, precision: int, cid: str
) -> bytes:
    """Associated data binding a sealed share to where and when it may be used."""
    return f"fedfraud-crypten-v1|{committee}|{party}|{round}|{size}|{precision}|{cid}".encode()


def _aead(shared: bytes, ephemeral: bytes, recipient: bytes) -> ChaCha20Poly1305:
    hkdf = HKDF(hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO + ephemeral + recipient)
    return ChaCha20Poly1305(hkdf.derive(shared))


def seal(public_key: bytes, plaintext: bytes, context: bytes) -> bytes:
    """Encrypt `plaintext` for the holder of `public_key` (ephemeral-static X25519)."""
    ephemeral = X25519PrivateKey.generate()
    eph_pub = ephemeral.public_key().public_bytes_raw()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public_key))
    nonce = os.urandom(12)
    return eph_pub + nonce + _aead(shared, eph_pub, public_key).encrypt(nonce, plaintext, context)


def open_sealed(private_key: X25519PrivateKey, sealed: bytes, context: bytes) -> bytes:
    """Inverse of `seal`; PayloadError if the share was tampered with or sealed elsewhere."""
    if len(sealed) < SEAL_OVERHEAD:
        raise PayloadError(f"sealed share is {len(sealed)} bytes, shorter than its header")
    eph_pub, nonce, body = sealed[:32], sealed[32:44], sealed[44:]
    own = private_key.public_key().public_bytes_raw()
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        return _aead(shared, eph_pub, own).decrypt(nonce, body, context)
    except (InvalidTag, ValueError) as exc:
        raise PayloadError(
            "share failed authentication (tampered with, or sealed for another party, round "
            "or committee)"
        ) from exc


def expand_mask(seed: bytes, size: int) -> np.ndarray:
    """`size` uniform int64 ring elements from a 32-byte seed (ChaCha20 keystream as a PRG)."""
    if len(seed) != SEED_BYTES:
        raise PayloadError(f"mask seed is {len(seed)} bytes, expected {SEED_BYTES}")
    # Each seed is fresh from os.urandom and used once, so a fixed nonce is safe.
    stream = Cipher(algorithms.ChaCha20(seed, b"\0" * 16), mode=None).encryptor()
    return np.frombuffer(stream.update(b"\0" * (8 * size)), dtype="<i8")
