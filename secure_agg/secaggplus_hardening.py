"""What 'secagg+' adds to Flower's SecAgg+ against a malicious operator (issue 14).

1. **Mask PRG with 256-bit seeds.** Flower's `pseudo_rand_gen` folds its 32-byte seed into 32
   bits and feeds `np.random.RandomState`: the operator with one bank could brute-force every
   other mask in 2^32 tries. `install_prg()` replaces the name in the two modules that call it
   (the bank's `secaggplus_mod` and the operator's `secaggplus_workflow`) with `wide_prg`:
   HKDF-SHA256 of the whole seed keys a ChaCha20 keystream (`cryptography`), so both sides keep
   agreeing on every mask. A module-attribute patch rather than a fork because Flower binds the
   function by name at import; `FLOWER_PINS` holds the Flower version and the SHA-256 of every
   function whose behaviour the patch relies on, and a test fails when either changes.
2. **Unmask requests checked before answering.** Flower's `_unmask` answers any ACTIVE/DEAD
   lists: naming a bank in both makes its neighbours reveal both its mask-seed share and its
   key share, and the operator alone recovers its vector. `check_unmask` refuses overlapping or
   repeated ids, ids outside this bank's neighbour set, and this bank listed as dead.
3. **Public keys signed with roster keys.** Each bank signs its SecAgg+ public keys (bound to the
   run and its node id) with its roster identity at setup; the operator relays the signatures
   with the keys, and a bank refuses the key-sharing stage unless every relayed key set is
   signed by a distinct roster bank (at least three), so the operator cannot slip in its own.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import flwr
import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flwr.app import ConfigRecord, Context, Message
from flwr.common.secure_aggregation import secaggplus_utils
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)

from secure_agg.masking import MIN_PARTICIPANTS, load_identity, prg_words
from secure_agg.roster import BankIdentity, Roster, statement

# The modules themselves: their packages re-export functions under the same names.
flower_mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
flower_workflow = importlib.import_module(
    "flwr.server.workflow.secure_aggregation.secaggplus_workflow"
)
KEY_SIGNATURE = "fedfraud-key-signature"  # setup reply: {"bank": str, "signature": bytes}
KEY_SIGNATURES = "fedfraud-key-signatures"  # share-keys message: {nid: [bank, signature]}
_PRG_INFO = b"fedfraud-secaggplus-mask-prg-v1"
_KEY_STAGE = "secagg+-public-keys"

# Flower 1.42.0 as this patch was written against it: the version and SHA-256 of the source of
# each function that calls or defines the PRG, and of the unmask handler we guard.
FLOWER_VERSION = "1.42.0"
FLOWER_PINS = {
    "pseudo_rand_gen": "19ee2545ed58c0174c0b1a56f4211d635347156163ae76a711613badad4b25e9",
    "_collect_masked_vectors": "d638fe6563407bc1f45623a677d0ac83bf1db577afc0127ec50a71928f8ead44",
    "_unmask": "076374c55e664774f048f4f468ac996115b4f11d9a04ec1c7fce2497cdc5a64a",
    "SecAggPlusWorkflow.unmask_stage": (
        "c4639d18768446e9fba0c316b61977f2b440e8ec833b3c75651fda9365d68f62"
    ),
}


def flower_version() -> str:
    return str(flwr.__version__)


def pinned_sources() -> dict[str, str]:
    """SHA-256 of the Flower functions named in FLOWER_PINS, as installed now."""
    functions = {
        "pseudo_rand_gen": _ORIGINAL_PRG,
        "_collect_masked_vectors": flower_mod._collect_masked_vectors,
        "_unmask": flower_mod._unmask,
        "SecAggPlusWorkflow.unmask_stage": flower_workflow.SecAggPlusWorkflow.unmask_stage,
    }
    return {
        name: hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()
        for name, fn in functions.items()
    }


def wide_prg(seed: bytes, num_range: int, dimensions_list: list[tuple[int, ...]]) -> list:
    """Drop-in for Flower's `pseudo_rand_gen`: uniform int64 masks in [0, num_range) from a
    ChaCha20 keystream keyed by HKDF-SHA256 of the full seed (>= 128-bit, here 256-bit)."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PRG_INFO).derive(seed)
    sizes = [int(np.prod(d)) if len(d) else 1 for d in dimensions_list]
    words = prg_words(key, sum(sizes))
    # num_range is SecAgg+'s modulus, a power of two <= 2^32 (checked by SecAggPlusSettings), so
    # reducing uniform 64-bit words is exactly uniform.
    values = (words % np.uint64(num_range)).astype(np.int64)
    out, pos = [], 0
    for dims, size in zip(dimensions_list, sizes, strict=True):
        chunk = values[pos : pos + size]
        out.append(np.array(chunk[0], dtype=np.int64) if len(dims) == 0 else chunk.reshape(dims))
        pos += size
    return out


_ORIGINAL_PRG = secaggplus_utils.pseudo_rand_gen


def install_prg() -> None:
    """Make both sides of SecAgg+ mask with `wide_prg` (idempotent)."""
    flower_mod.pseudo_rand_gen = wide_prg
    flower_workflow.pseudo_rand_gen = wide_prg


def prg_installed() -> bool:
    return flower_mod.pseudo_rand_gen is wide_prg and flower_workflow.pseudo_rand_gen is wide_prg


# -- bank side ------------------------------------------------------------------------------
def _state(context: Context) -> flower_mod.SecAggPlusState:
    record = context.state.config_records.get(RECORD_KEY_STATE, ConfigRecord({}))
    return flower_mod.SecAggPlusState(**record)


def check_unmask(msg: Message, context: Context) -> None:
    """Refuse (ValueError) an unmask request that would reveal more than the protocol allows."""
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    active = [int(n) for n in configs.get(Key.ACTIVE_NODE_ID_LIST, [])]
    dead = [int(n) for n in configs.get(Key.DEAD_NODE_ID_LIST, [])]
    state = _state(context)
    neighbours = set(state.public_keys_dict)
    if len(set(active)) != len(active) or len(set(dead)) != len(dead):
        raise ValueError("unmask request lists a node twice; refusing to answer")
    if set(active) & set(dead):
        raise ValueError("unmask request lists nodes as both active and dead; refusing to answer")
    if not set(active) | set(dead) <= neighbours:
        raise ValueError("unmask request names nodes outside this bank's neighbours; refusing")
    if state.nid in dead:
        raise ValueError("unmask request lists this bank as dead; refusing to answer")


def key_statement(run: str, nid: int, pk1: bytes, pk2: bytes, bank: str) -> bytes:
    digest = hashlib.sha256(str(int(nid)).encode() + b"\0" + bytes(pk1) + bytes(pk2)).hexdigest()
    return statement(run=run, round=0, stage=_KEY_STAGE, digest=digest, participants=[bank])


def sign_setup_reply(reply: Message, msg: Message, identity: BankIdentity) -> None:
    """Attach this bank's roster signature over the public keys in its setup reply."""
    if reply.has_error():
        return
    res = reply.content.config_records[RECORD_KEY_CONFIGS]
    pk1, pk2 = res[Key.PUBLIC_KEY_1], res[Key.PUBLIC_KEY_2]
    message = key_statement(
        str(msg.metadata.run_id), msg.metadata.dst_node_id, pk1, pk2, identity.bank_id
    )
    reply.content[KEY_SIGNATURE] = ConfigRecord(
        {"bank": identity.bank_id, "signature": identity.sign(message)}
    )


def check_key_signatures(msg: Message, identity: BankIdentity, roster: Roster) -> None:
    """Refuse (ValueError) relayed public keys that are not each signed by a distinct bank."""
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    signatures = msg.content.config_records.get(KEY_SIGNATURES)
    if signatures is None:
        raise ValueError("the operator relayed SecAgg+ public keys without roster signatures")
    run = str(msg.metadata.run_id)
    signers: dict[str, int] = {}
    for sid, keys in configs.items():
        if sid == Key.STAGE:
            continue
        pk1, pk2 = keys
        entry = signatures.get(str(sid))
        if not isinstance(entry, list) or len(entry) != 2:
            raise ValueError(f"no roster signature for the public keys of node {sid}")
        bank, signature = bytes(entry[0]).decode(errors="replace"), bytes(entry[1])
        if not roster.verify(bank, key_statement(run, int(sid), pk1, pk2, bank), signature):
            raise ValueError(f"the public keys of node {sid} are not signed by {bank!r}")
        if bank in signers:
            raise ValueError(f"{bank} signed the keys of two nodes")
        signers[bank] = int(sid)
    if signers.get(identity.bank_id) != msg.metadata.dst_node_id:
        raise ValueError("this bank's own public keys are missing or relayed under another node")
    if len(signers) < MIN_PARTICIPANTS:
        raise ValueError(
            f"only {len(signers)} roster banks in this exchange, need {MIN_PARTICIPANTS}"
        )


@lru_cache(maxsize=8)
def _identity_files(ident: str, roster: str) -> tuple[BankIdentity, Roster] | None:
    return load_identity({"identity-path": ident, "roster-path": roster})


def bank_identity(node_config: Mapping[str, Any]) -> tuple[BankIdentity, Roster] | None:
    """The bank's roster identity from node-config identity-path/roster-path (None: unsigned)."""
    ident, roster = node_config.get("identity-path", ""), node_config.get("roster-path", "")
    if not ident and not roster:
        return None
    return _identity_files(str(ident), str(roster))


def before_stage(stage: str, msg: Message, context: Context) -> tuple[BankIdentity, Roster] | None:
    """The bank's checks before Flower's mod answers `msg` (ValueError to refuse)."""
    identity = bank_identity(context.node_config)
    if stage == Stage.UNMASK:
        check_unmask(msg, context)
    if stage == Stage.SHARE_KEYS and identity is not None:
        check_key_signatures(msg, *identity)
    return identity


def after_stage(
    stage: str, reply: Message, msg: Message, identity: tuple[BankIdentity, Roster] | None
) -> None:
    """Sign this bank's public keys in its setup reply (when it has a roster identity)."""
    if stage == Stage.SETUP and identity is not None:
        sign_setup_reply(reply, msg, identity[0])


# -- operator side --------------------------------------------------------------------------
class KeySignatureRelay:
    """Keeps the banks' key signatures from setup replies and adds them to share-keys messages
    (Flower's workflow relays only the keys)."""

    def __init__(self) -> None:
        self.signatures: dict[str, list[bytes]] = {}

    def collect(self, replies: list[Message]) -> None:
        for reply in replies:
            if reply.has_error() or KEY_SIGNATURE not in reply.content:
                continue
            record = reply.content[KEY_SIGNATURE]
            entry = [str(record["bank"]).encode(), bytes(record["signature"])]
            self.signatures[str(reply.metadata.src_node_id)] = entry

    def attach(self, messages: list[Message]) -> None:
        for msg in messages:
            wanted = {
                k: v
                for k, v in self.signatures.items()
                if k in msg.content.config_records[RECORD_KEY_CONFIGS]
            }
            msg.content[KEY_SIGNATURES] = ConfigRecord(dict(wanted))
