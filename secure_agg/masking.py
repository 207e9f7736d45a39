"""Pairwise additive masks modulo 2^k from roster key agreement; they cancel in the stage's sum.

For every pair of participants {i, j} of one stage both banks derive the same 32-byte seed
(`BankIdentity.pairwise_seed`: X25519 + HKDF-SHA256, bound to run, round, stage and the exact
participant set) and expand it with ChaCha20 (`cryptography`) into uniform 64-bit words. Bank i
adds the expansion for every peer sorted after it and subtracts it for every peer before it, all
modulo 2^k, so the masks sum to 0 mod 2^k over the participant set and only the whole set's sum
is readable. A masked vector is a one-time pad of the bank's fixed-point integers: holding the
CKKS secret key (the operator with any one bank) opens ciphertexts to uniform noise. Any other
participant set, a missing or repeated contribution, or another stage leaves masks that do not
cancel.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedfraud.errors import ConfigError
from secure_agg.base import StageContext
from secure_agg.roster import BankIdentity, Roster

MIN_PARTICIPANTS = 3  # a sum of two lets each bank read the other's update
_DOMAIN = "fedfraud-pairwise-mask-v1"
_NONCE = bytes(16)  # each seed keys exactly one keystream, so a fixed nonce is safe


def stage_bytes(context: StageContext, purpose: str) -> bytes:
    """The canonical context a pairwise seed is bound to (what, run, round, stage, who)."""
    body = {
        "domain": _DOMAIN,
        "purpose": purpose,
        "run": str(context.run),
        "round": int(context.round),
        "stage": str(context.stage),
        "participants": sorted(context.participants),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def prg_words(seed: bytes, size: int) -> np.ndarray:
    """`size` uniform uint64 words: the ChaCha20 keystream under the 256-bit `seed`."""
    if len(seed) != 32:
        raise ValueError("mask seeds are 32 bytes")
    encryptor = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    stream = encryptor.update(bytes(8 * size)) + encryptor.finalize()
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64)


def check_participants(context: StageContext, roster: Roster) -> tuple[str, ...]:
    """The sorted participant set, refused if too small, repeated or not in the roster."""
    people = tuple(sorted(context.participants))
    if len(set(people)) != len(people):
        raise ConfigError(f"stage lists a participant twice: {', '.join(people)}")
    if len(people) < MIN_PARTICIPANTS:
        raise ConfigError(
            f"stage has {len(people)} participant(s); masked aggregation needs at least "
            f"{MIN_PARTICIPANTS} so that no bank can read another's update"
        )
    if context.bank_id not in people:
        raise ConfigError(f"{context.bank_id} is not among the stage's participants")
    for bank in people:
        roster.entry(bank)  # ConfigError for a bank the roster does not list
    return people


def pairwise_mask(
    identity: BankIdentity,
    roster: Roster,
    context: StageContext,
    size: int,
    bits: int,
    purpose: str,
) -> np.ndarray:
    """This bank's total mask (uint64 values in [0, 2^bits)) for one stage."""
    if identity.bank_id != context.bank_id:
        raise ConfigError(
            f"identity is {identity.bank_id} but the stage names {context.bank_id}; "
            "point identity-path at this bank's own identity file"
        )
    if not 1 <= bits <= 64:
        raise ValueError("mask bits must be 1..64")
    people = check_participants(context, roster)
    info = stage_bytes(context, purpose)
    total = np.zeros(size, dtype=np.uint64)
    for peer in people:
        if peer == identity.bank_id:
            continue
        words = prg_words(identity.pairwise_seed(roster.entry(peer), info), size)
        # uint64 arithmetic wraps mod 2^64, and 2^bits divides 2^64: reducing at the end is exact.
        if peer > identity.bank_id:
            total += words
        else:
            total -= words
    if bits == 64:
        return total
    return total & np.uint64((1 << bits) - 1)


def load_identity(options: Mapping[str, Any]) -> tuple[BankIdentity, Roster] | None:
    """The bank's identity and pinned roster from node-config `identity-path` + `roster-path`
    (None when neither is set; one without the other is a configuration error)."""
    ident, roster = options.get("identity-path"), options.get("roster-path")
    if not ident and not roster:
        return None
    if not ident or not roster:
        raise ConfigError(
            "set both node-config identity-path (this bank's identity.pem) and roster-path "
            "(the consortium roster.json it pinned), or neither"
        )
    identity = BankIdentity.load(Path(str(ident)))
    pinned = Roster.load(Path(str(roster)))
    entry = pinned.entry(identity.bank_id)
    if entry != identity.entry():
        raise ConfigError(
            f"identity {ident} does not match {identity.bank_id}'s keys in roster {roster}"
        )
    return identity, pinned
