"""'ckks': banks encrypt under a shared CKKS secret key (TenSEAL); the operator only adds.

A bank packs `[weight * update..., weight, ..., weight] / C` into ceil(P / slots) ciphertexts:
the weight fills the free slots of the last ciphertext (at least MIN_WEIGHT_COPIES of them), and
the banks average those copies after decryption, which divides the noise on the total weight, the
one number every value of the mean is divided by. The operator, holding a public context without
any key material, adds ciphertexts slot-wise; the banks decrypt the sum and divide by the total
weight. The operator never sees an update, a weight or even the aggregate. See
docs/threat-model.md for who learns what.

Masked mode (a bank whose node-config names `identity-path` and `roster-path`): every
contribution is a fixed-point vector one-time padded with pairwise masks from roster key
agreement (secure_agg/ckks_masked.py, secure_agg/masking.py), so the CKKS secret key - which
every bank holds - opens a single contribution to noise; only the sum over the stage's exact
participant set unmasks. A bank that gets an aggregate that does not unmask stops for the run
and tells the operator only that. A dropout leaves masks that do not cancel: the operator re-runs
the stage with the surviving participants (a new participant set derives fresh masks).

Magnitudes. Fresh ciphertexts are never rescaled, so a slot decrypts correctly while its value
stays below 2^h, h = data_bits - 2 - scale_bits. Half of that headroom is split between up to
MAX_BANKS banks, so each bank's slots must satisfy |w * u| / C <= 2^(h - 11). The public weight
scale C = 2^max(0, 35 - h) lets a bank of MAX_WEIGHT (2^20, ~1e6) samples send values up to MAX_ABS
(16) in magnitude; `client_protect` checks the actual bound, so a round of up to MAX_BANKS banks
cannot overflow. C cancels in the mean, and it is the same for every bank because it is derived
from the shared parameters. The price is an absolute error of about 2^(noise + 37 - data_bits) /
total_weight on the mean (noise ~ 2^10), which is why the data prime is as large as the upload
budget allows (benchmarks/ckks_params.py).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tenseal as ts

from fedfraud.errors import ConfigError, PayloadError
from secure_agg import keys as ckks_keys
from secure_agg import masking
from secure_agg.base import (
    Aggregate,
    Payload,
    Role,
    StageContext,
    check_weight,
    flatten,
    register,
    unflatten,
)
from secure_agg.ckks_masked import ENCODING as MASKED_ENCODING
from secure_agg.ckks_masked import AggregateRejected, MaskedCKKS
from secure_agg.roster import BankIdentity, Roster

NAME = "ckks"
__all__ = ["AggregateRejected", "CKKSAggregator", "NAME", "provision"]
MAX_BANKS = 1024
MAX_WEIGHT_BITS = 20  # sample counts up to ~1e6
MAX_ABS_BITS = 4  # update values up to 16 in magnitude at MAX_WEIGHT
MIN_WEIGHT_COPIES = 64  # averaging 64 copies cuts the total weight's noise ~8x
_BANKS_BITS = MAX_BANKS.bit_length() - 1
# TenSEAL/SEAL framing around the raw ciphertext (measured ~140 bytes) plus zstd's worst case.
_CHUNK_OVERHEAD = 4096


class CKKSAggregator(MaskedCKKS):
    """CKKS secure aggregation; role 'client' holds the secret context, 'server' a public one."""

    name = NAME

    def __init__(
        self,
        role: Role,
        keys: ckks_keys.CKKSKeys,
        num_params: int | None = None,
        identity: tuple[BankIdentity, Roster] | None = None,
    ):
        if role == "server" and keys.context.is_private():
            raise ConfigError(
                "refusing to run the CKKS operator with a context that holds the secret key: "
                f"give the operator only {ckks_keys.PUBLIC_FILE}"
            )
        if role == "client" and not keys.context.is_private():
            raise ConfigError(
                f"a bank needs the secret context ({ckks_keys.SECRET_FILE}) to encrypt and decrypt"
            )
        self.role = role
        self.keys = keys
        self.layout = ckks_keys.layout(keys.context)
        self.num_params = num_params
        h = self.layout.headroom_bits
        # Each bank's slots stay below 2^bank_bits, so MAX_BANKS of them use half the headroom.
        self.bank_bits = h - 1 - _BANKS_BITS
        # Never scale up: with ample headroom (several data primes) C = 1 is already exact.
        self.weight_scale_bits = max(0, MAX_WEIGHT_BITS + MAX_ABS_BITS - self.bank_bits)
        self.max_chunk_bytes = 2 * self.layout.poly_modulus * self.layout.data_primes * 8
        self.max_chunk_bytes += _CHUNK_OVERHEAD
        self.identity = identity  # set: masked mode (the bank's own choice, never the operator's)
        self._halted_runs: set[str] = set()
        self._used_stages: set[StageContext] = set()

    @property
    def weight_scale(self) -> float:
        """The public constant C that weighted values are divided by (a power of two)."""
        return math.ldexp(1.0, self.weight_scale_bits)

    @property
    def max_weighted_value(self) -> float:
        """The largest |weight x value| one bank may send (2^24 unless the headroom allows more)."""
        return math.ldexp(1.0, self.bank_bits + self.weight_scale_bits)

    def _weighted_vector(
        self, update: Sequence[np.ndarray], weight: float
    ) -> tuple[np.ndarray, int]:
        """([w * update, w, w, ...], number of update values): the weighted values, then
        copies of the weight (plain and masked mode both send this, before scaling or
        quantizing it)."""
        w = check_weight(weight)
        flat = flatten(update)
        if flat.size == 0:
            raise PayloadError("update holds no values")
        vector = np.full(self.vector_size(flat.size), w)
        vector[: flat.size] = flat * w
        return vector, int(flat.size)

    def client_protect(
        self,
        update: Sequence[np.ndarray],
        weight: float,
        round: int,
        *,
        context: StageContext | None = None,
    ) -> Payload:
        ctx = self._secret_context("protect")
        if self._masked(context):
            return self._protect_masked(ctx, update, weight, round, context)
        vector, num_params = self._weighted_vector(update, weight)
        vector = np.ldexp(vector, -self.weight_scale_bits)  # exact: C is a power of two
        if not np.all(np.isfinite(vector)):
            raise PayloadError("update holds NaN or infinite values; refusing to encrypt it")
        peak = float(np.max(np.abs(vector)))
        if peak > math.ldexp(1.0, self.bank_bits):
            raise PayloadError(
                f"weight x value reaches {peak * self.weight_scale:.3g}, above the "
                f"{self.max_weighted_value:.3g} one bank may add without risking CKKS overflow "
                f"for {MAX_BANKS} banks; clip the update, or divide every bank's weight by the "
                "same constant (the weighted mean does not change)"
            )
        slots = self.layout.slots
        chunks = tuple(
            ts.ckks_vector(ctx, vector[i : i + slots]).serialize()
            for i in range(0, vector.size, slots)
        )
        meta = {"fingerprint": self.keys.fingerprint, "params": num_params, "round": round}
        return Payload(NAME, chunks, meta)

    def vector_size(self, num_params: int) -> int:
        """Slots a protected update of `num_params` values uses: a whole number of ciphertexts."""
        slots = self.layout.slots
        copies = slots - num_params % slots
        if copies < MIN_WEIGHT_COPIES:
            copies += slots
        return num_params + copies

    @staticmethod
    def needs_every_participant(payloads: Mapping[str, Payload]) -> bool:
        """Masked contributions combine only over their stage's exact participant set (the
        operator re-runs a stage that lost a participant with the banks that answered)."""
        return any(p.meta.get("encoding") == MASKED_ENCODING for p in payloads.values())

    def server_aggregate(self, payloads: Mapping[str, Payload]) -> Aggregate:
        rejected: dict[str, str] = {}
        sizes: dict[str, int] = {}  # number of parameters each valid header declares
        for bank, payload in sorted(payloads.items()):
            try:
                sizes[bank] = self._check_header(payload)
            except PayloadError as exc:
                rejected[bank] = str(exc)
        expected = self.num_params
        if expected is None and sizes:
            # The size most banks agree on (first in bank order on a tie), so one odd payload
            # cannot make the honest ones look wrong.
            expected = Counter(sizes.values()).most_common(1)[0][0]
        total: list[ts.CKKSVector] | None = None
        included: list[str] = []
        encodings: list[str] = []  # the first included payload's encoding, if masked
        for bank, size in sizes.items():
            try:
                if size != expected:
                    raise PayloadError(f"update has {size} parameters, expected {expected}")
                encoding = payloads[bank].meta.get("encoding")
                if included and encoding != (encodings[0] if encodings else None):
                    raise PayloadError("payload mixes masked and unmasked encodings")
                if len(included) >= MAX_BANKS:
                    raise PayloadError(
                        f"round already holds {MAX_BANKS} banks, the most the CKKS headroom allows"
                    )
                vectors = self._load(payloads[bank], size, self.keys.context)
                total = vectors if total is None else _add(total, vectors)
            except PayloadError as exc:
                rejected[bank] = str(exc)
                continue
            included.append(bank)
            if len(included) == 1 and encoding is not None:
                encodings.append(str(encoding))
        if total is None:
            raise PayloadError(
                "no valid payloads to aggregate: "
                + "; ".join(f"{b}: {r}" for b, r in sorted(rejected.items()))
            )
        meta = {"fingerprint": self.keys.fingerprint, "params": expected, "count": len(included)}
        if encodings:
            meta["encoding"] = encodings[0]
        out = Payload(NAME, tuple(v.serialize() for v in total), meta)
        return Aggregate(out, tuple(included), rejected)

    def client_reveal(
        self,
        aggregate: Payload,
        shapes: Sequence[tuple[int, ...]],
        *,
        context: StageContext | None = None,
    ) -> list[np.ndarray]:
        ctx = self._secret_context("reveal")
        if self._masked(context):
            return self._reveal_masked(ctx, aggregate, shapes, context)
        if aggregate.meta.get("encoding") is not None:
            raise PayloadError(
                "aggregate uses masked encoding but this bank has no roster identity"
            )
        size = self._check_header(aggregate)
        num_params = sum(int(np.prod(s)) for s in shapes)
        if size != num_params:
            raise PayloadError(
                f"aggregate holds {size} values but the model has {num_params} parameters"
            )
        count = aggregate.meta.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_BANKS:
            raise PayloadError(f"aggregate declares {count!r} banks, expected 1 to {MAX_BANKS}")
        vectors = self._load(aggregate, size, ctx)
        vector = np.concatenate([np.asarray(v.decrypt(), dtype=np.float64) for v in vectors])
        # Each bank's slots were below 2^bank_bits; anything beyond means the aggregate was
        # tampered with or decrypted under the wrong key (which yields values near 2^h).
        bound = count * math.ldexp(1.0, self.bank_bits) * (1 + 1e-6) + 1e-3
        copies = vector[size:]
        total_weight = float(np.mean(copies))
        # Copies differ only by encryption noise (~count x 2^-26 of the scale): allow 64x that.
        spread_tol = count * math.ldexp(1.0, 16 - self.layout.scale_bits)
        if not np.all(np.isfinite(vector)) or np.max(np.abs(vector)) > bound:
            raise PayloadError(
                "aggregate decrypts to values outside what the banks could have sent: it was "
                "tampered with or made under other keys"
            )
        if np.max(np.abs(copies - total_weight)) > spread_tol:
            raise PayloadError(
                "aggregate's copies of the total weight disagree: it was tampered with"
            )
        if not total_weight > 0:
            raise PayloadError("aggregate carries no positive total weight (tampered?)")
        return unflatten(vector[:size] / total_weight, shapes)

    def _secret_context(self, what: str) -> ts.Context:
        if not self.keys.context.is_private():
            raise ConfigError(f"only banks can {what} CKKS updates: this context has no secret key")
        return self.keys.context

    def _check_header(self, payload: Payload) -> int:
        if payload.backend != NAME:
            raise PayloadError(f"payload made by backend '{payload.backend}', expected '{NAME}'")
        fp = payload.meta.get("fingerprint")
        if fp != self.keys.fingerprint:
            raise PayloadError(
                f"payload made under other CKKS keys (fingerprint {str(fp)[:12]}..., "
                f"expected {self.keys.fingerprint[:12]}...)"
            )
        size = payload.meta.get("params")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise PayloadError(f"payload declares an invalid number of parameters {size!r}")
        return size

    def _load(self, payload: Payload, num_params: int, ctx: ts.Context) -> list[ts.CKKSVector]:
        """Deserialize and check every ciphertext of a payload declaring `num_params` values."""
        slots = self.layout.slots
        size = self.vector_size(num_params)
        n = size // slots
        if len(payload.chunks) != n:
            raise PayloadError(
                f"payload has {len(payload.chunks)} ciphertexts, expected {n} for "
                f"{num_params} parameters"
            )
        first_parms = ctx.seal_context().data.first_parms_id()
        vectors = []
        for i, chunk in enumerate(payload.chunks):
            if len(chunk) > self.max_chunk_bytes:
                raise PayloadError(
                    f"ciphertext {i} is {len(chunk)} bytes, above the {self.max_chunk_bytes} "
                    "a fresh ciphertext can take under these parameters"
                )
            try:
                vec = ts.ckks_vector_from(ctx, chunk)
                cts = vec.ciphertext()
            except (ValueError, RuntimeError, TypeError) as exc:
                raise PayloadError(
                    f"ciphertext {i} does not deserialize (tampered?): {exc}"
                ) from exc
            if vec.size() != slots:
                raise PayloadError(f"ciphertext {i} holds {vec.size()} values, expected {slots}")
            if (
                len(cts) != 1
                or cts[0].size() != 2
                or cts[0].parms_id() != first_parms
                or cts[0].scale != ctx.global_scale
                or cts[0].is_transparent()
            ):
                raise PayloadError(
                    f"ciphertext {i} is not a fresh encryption under these parameters "
                    "(wrong level, scale or size)"
                )
            vectors.append(vec)
        return vectors


def _add(total: list[ts.CKKSVector], vectors: list[ts.CKKSVector]) -> list[ts.CKKSVector]:
    # Not in place: if one ciphertext fails, the running total stays untouched.
    try:
        return [t + v for t, v in zip(total, vectors, strict=True)]
    except (ValueError, RuntimeError) as exc:
        raise PayloadError(f"ciphertexts cannot be added to the others: {exc}") from exc


def provision(directory: Path, num_banks: int) -> dict[str, Any]:
    """Simulation keys in `directory`: banks read the secret file, the operator the public one."""
    paths = ckks_keys.init_keys(Path(directory) / "ckks")
    # Explicit paths too: they win over a generic (possibly empty) keys-dir in the run config.
    return {
        "keys-dir": str(paths.secret.parent),
        "ckks-secret-context": str(paths.secret),
        "ckks-public-context": str(paths.public),
    }


@register(NAME, provision)
def _factory(role: Role, options: Mapping[str, Any]) -> CKKSAggregator:
    keys = ckks_keys.keys_for_role(role, options)
    identity = masking.load_identity(options) if role == "client" else None
    num_params = options.get("ckks-num-params")
    if num_params is not None:
        try:
            num_params = int(num_params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"ckks-num-params must be an integer, got {num_params!r}") from exc
    return CKKSAggregator(role, keys, num_params, identity)
