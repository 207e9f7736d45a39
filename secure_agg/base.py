"""The secure-aggregation contract: how a bank's update reaches the operator, and a registry.

A backend turns each bank's weighted update into a `Payload` that reveals nothing on its own
(`client_protect`), combines payloads without opening any of them (`server_aggregate`), and lets
the banks turn the combined payload into the weighted mean (`client_reveal`). The sample weight
travels inside the protected payload, so the operator does not learn per-bank sizes either.
Callers measure time and bytes around these calls, the same way for every backend.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from fedfraud.errors import ConfigError, PayloadError

Role = Literal["client", "server"]
Meta = Mapping[str, int | float | str]

_MAGIC = b"FFPL1"
# What one payload may hold at most, checked before anything is copied: Flower's own gRPC limit
# is 512 MiB per message; a chunk count and header far above any model we build.
MAX_PAYLOAD_BYTES = 512 * 2**20
MAX_CHUNKS = 1 << 16
MAX_META_CHARS = 1 << 16


@dataclass(frozen=True)
class Payload:
    """What crosses the wire: opaque byte chunks plus public metadata."""

    backend: str
    chunks: tuple[bytes, ...]
    meta: Meta = field(default_factory=dict)

    def nbytes(self) -> int:
        """Bytes on the wire (chunks plus metadata)."""
        return sum(len(c) for c in self.chunks) + len(json.dumps(dict(self.meta)))

    def to_record(self) -> dict[str, Any]:
        """A flat dict Flower's ConfigRecord accepts (str keys; bytes, lists of bytes, scalars)."""
        return {
            "backend": self.backend,
            "chunks": list(self.chunks),
            "meta": json.dumps(dict(self.meta), sort_keys=True),
        }

    @classmethod
    def from_record(
        cls,
        record: Mapping[str, Any],
        *,
        max_bytes: int = MAX_PAYLOAD_BYTES,
        max_chunks: int = MAX_CHUNKS,
    ) -> Payload:
        """Inverse of `to_record`; raises PayloadError on anything malformed. Types and sizes
        are checked before anything is copied, so a hostile record (a chunk that is a huge int,
        millions of chunks, a giant header) is refused without allocating for it."""
        try:
            backend, chunks, meta_text = record["backend"], record["chunks"], record["meta"]
        except (KeyError, TypeError) as exc:
            raise PayloadError(f"malformed payload record: missing {exc}") from exc
        if not isinstance(backend, str) or not 0 < len(backend) <= 64:
            raise PayloadError("malformed payload record: backend is not a short string")
        if not isinstance(chunks, list | tuple):
            raise PayloadError("malformed payload record: chunks is not a list")
        if len(chunks) > max_chunks:
            raise PayloadError(f"payload has {len(chunks)} chunks, at most {max_chunks} allowed")
        if not all(isinstance(c, bytes | bytearray) for c in chunks):
            raise PayloadError("malformed payload record: every chunk must be bytes")
        if sum(len(c) for c in chunks) > max_bytes:
            raise PayloadError(f"payload is larger than the {max_bytes} bytes allowed")
        if not isinstance(meta_text, str) or len(meta_text) > MAX_META_CHARS:
            raise PayloadError("malformed payload record: meta is not a short JSON string")
        try:
            meta = json.loads(meta_text)
        except ValueError as exc:
            raise PayloadError(f"malformed payload record: {exc}") from exc
        if not isinstance(meta, dict):
            raise PayloadError("malformed payload record: meta is not a mapping")
        return cls(backend=backend, chunks=tuple(bytes(c) for c in chunks), meta=meta)

    def to_bytes(self) -> bytes:
        """A self-describing file format (for checkpoints): magic, header length, header, chunks."""
        header = json.dumps(
            {
                "backend": self.backend,
                "meta": dict(self.meta),
                "sizes": [len(c) for c in self.chunks],
            },
            sort_keys=True,  # canonical: the digest banks sign must not depend on key order
        ).encode()
        return _MAGIC + struct.pack("<I", len(header)) + header + b"".join(self.chunks)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Payload:
        """Inverse of `to_bytes`."""
        if not blob.startswith(_MAGIC):
            raise PayloadError("not a fedfraud payload file (bad magic bytes)")
        try:
            (hlen,) = struct.unpack_from("<I", blob, len(_MAGIC))
            start = len(_MAGIC) + 4
            header = json.loads(blob[start : start + hlen])
            pos = start + hlen
            chunks = []
            for size in header["sizes"]:
                chunks.append(blob[pos : pos + size])
                pos += size
        except (struct.error, ValueError, KeyError) as exc:
            raise PayloadError(f"corrupt payload file: {exc}") from exc
        if pos != len(blob):
            raise PayloadError("corrupt payload file: length does not match its header")
        return cls(backend=header["backend"], chunks=tuple(chunks), meta=header["meta"])


@dataclass(frozen=True)
class StageContext:
    """Which stage a bank's protect/reveal belongs to, so a backend can bind masks or
    encryption to it: the run, round and stage, the exact set of banks announced for the
    aggregate (sorted roster ids) and the calling bank."""

    run: str
    round: int
    stage: str
    participants: tuple[str, ...]
    bank_id: str


@dataclass(frozen=True)
class Aggregate:
    """The combined payload plus which banks went into it and why others were left out."""

    payload: Payload
    included: tuple[str, ...]
    rejected: Mapping[str, str]


class SecureAggregator(Protocol):
    """One secure-aggregation backend, used by banks (role 'client') or the operator ('server')."""

    name: str

    def client_protect(
        self,
        update: Sequence[np.ndarray],
        weight: float,
        round: int,
        *,
        context: StageContext | None = None,
    ) -> Payload:
        """Protect `weight * update` (and the weight itself) so it can leave the bank."""
        ...

    def server_aggregate(self, payloads: Mapping[str, Payload]) -> Aggregate:
        """Combine banks' payloads without opening any; reject invalid ones with a reason."""
        ...

    def client_reveal(
        self,
        aggregate: Payload,
        shapes: Sequence[tuple[int, ...]],
        *,
        context: StageContext | None = None,
    ) -> list[np.ndarray]:
        """Turn the combined payload into the weighted mean update, shaped like `shapes`."""
        ...


@dataclass(frozen=True)
class Exchange:
    """One stats or training stage run by an interactive backend's own protocol."""

    replies: Sequence[Any]  # one Flower reply per bank (content as a broadcast, or its error)
    aggregate: Aggregate | None  # None when the protocol failed ...
    error: str | None = None  # ... and why
    aggregate_s: float = 0.0  # the operator's protocol time beyond the banks' own work


@runtime_checkable
class InteractiveAggregator(SecureAggregator, Protocol):
    """A backend whose protocol needs several message rounds with the banks (SecAgg+): the
    operator hands it a whole stage instead of calling `server_aggregate`."""

    def server_exchange(
        self,
        grid: Any,
        nodes: Sequence[int],
        message_type: str,
        content: Any,
        timeout: float | None = None,
    ) -> Exchange:
        """Send `content` (a Flower RecordDict) to `nodes` for stage `message_type`, run the
        protocol and return each bank's reply and the aggregate."""
        ...


Factory = Callable[[Role, Mapping[str, Any]], SecureAggregator]
# Makes the key material a backend needs for a local simulation in `directory` and returns
# the options that point the banks and the operator at it.
Provisioner = Callable[[Path, int], dict[str, Any]]
# Checks a backend's options before a run starts; raises ConfigError naming the fix.
Validator = Callable[[Mapping[str, Any]], None]
_REGISTRY: dict[str, Factory] = {}
_PROVISIONERS: dict[str, Provisioner] = {}
_VALIDATORS: dict[str, Validator] = {}


def register(
    name: str, provision: Provisioner | None = None, validate: Validator | None = None
) -> Callable[[Factory], Factory]:
    """Decorator adding a backend factory under `name` (and its simulation key provisioner and
    up-front option check)."""

    def deco(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        if provision is not None:
            _PROVISIONERS[name] = provision
        if validate is not None:
            _VALIDATORS[name] = validate
        return factory

    return deco


def validate(name: str, options: Mapping[str, Any]) -> None:
    """Check backend `name`'s options up front (before a simulation starts its engine)."""
    _load_builtin_backends()
    if name in _VALIDATORS:
        _VALIDATORS[name](options)


def provision(name: str, directory: Path, num_banks: int) -> dict[str, Any]:
    """Key material for a simulation of backend `name`; {} for backends that need none."""
    _load_builtin_backends()
    if name not in _PROVISIONERS:
        return {}
    return _PROVISIONERS[name](Path(directory), num_banks)


def available() -> list[str]:
    """Names of the registered backends."""
    _load_builtin_backends()
    return sorted(_REGISTRY)


def get(name: str, role: Role, options: Mapping[str, Any] | None = None) -> SecureAggregator:
    """Build backend `name` for `role`; `options` come from run-config/node-config."""
    _load_builtin_backends()
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown secure aggregation backend '{name}'; choose one of: {', '.join(available())}"
        )
    return _REGISTRY[name](role, dict(options or {}))


def is_interactive(aggregator: SecureAggregator) -> bool:
    """Whether the backend runs its own multi-message protocol (see InteractiveAggregator)."""
    return isinstance(aggregator, InteractiveAggregator)


def _load_builtin_backends() -> None:
    # Imported lazily so `import secure_agg.base` stays cheap and optional crypto libraries are
    # only needed when their backend is used.
    from secure_agg import backends  # noqa: F401


def flatten(update: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate arrays into one float64 vector."""
    if not update:
        return np.zeros(0)
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in update])


def unflatten(vector: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Split a flat vector back into arrays of `shapes` (float32, as the models use)."""
    sizes = [int(np.prod(s)) for s in shapes]
    if sum(sizes) != vector.size:
        raise PayloadError(
            f"aggregate holds {vector.size} values but the model has {sum(sizes)} parameters"
        )
    out, pos = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(vector[pos : pos + size].reshape(shape).astype(np.float32))
        pos += size
    return out


def check_weight(weight: float) -> float:
    """Weights must be positive and finite: they scale what a bank contributes."""
    w = float(weight)
    if not np.isfinite(w) or w <= 0:
        raise PayloadError(f"sample weight must be positive and finite, got {weight!r}")
    return w
