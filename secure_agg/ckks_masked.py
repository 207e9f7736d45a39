"""Fixed-point encoding of masked CKKS contributions: integers mod 2^k, one-time padded.

A bank turns `[w * update..., w, ..., w]` into integers q = round(x * 2^f), adds its pairwise
mask (secure_agg/masking.py) modulo 2^k, and encrypts the centred residues y in
[-2^(k-1), 2^(k-1)) as slot values y * 2^-s. The operator adds ciphertexts as before. A bank
decrypts the sum, rounds each slot to the integer it must be (CKKS noise stays below 2^-NOISE_BITS
of one unit, so rounding removes it exactly), reduces mod 2^k - the masks cancel - and divides
the value sums by the total weight. Both parts are exact integers, so the released mean does not
depend on the encryption noise: two encryptions of the same updates release the same numbers.

Sizes, for n participants, headroom h and CKKS scale 2^scale_bits (see `FixedPoint.for_stage`):
s = scale_bits - NOISE_BITS puts one integer unit 2^NOISE_BITS above the scale (measured noise of
a sum of 64 fresh ciphertexts: < 2^12.3 scale units); k = h + s - ceil(log2 n) keeps the sum of n
residues below 2^(h-1); each bank's |q| < 2^(k-1-ceil(log2 n)) so the true sum fits in the signed
range mod 2^k; f = k - 1 - ceil(log2 n) - VALUE_BITS lets |w x value| reach 2^VALUE_BITS (~2.1e6).
The mean's error is at most n 2^-(f+1) / total weight (f = 9 for 10 banks under the default keys).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import tenseal as ts

from fedfraud.errors import ConfigError, PayloadError
from secure_agg import masking
from secure_agg.base import Payload, StageContext, unflatten

if TYPE_CHECKING:
    from secure_agg import keys as ckks_keys
    from secure_agg.roster import BankIdentity, Roster

log = logging.getLogger("fedfraud.ckks")

NOISE_BITS = 15
VALUE_BITS = 21
MAX_PARTICIPANTS = 64  # pairwise masks cost n - 1 keystreams per bank; f shrinks with log2 n
ENCODING = "masked-fixed-v1"


@dataclass(frozen=True)
class FixedPoint:
    """The fixed-point layout of one stage: value bits f, modulus bits k, slot shift s."""

    frac_bits: int
    mod_bits: int
    slot_shift: int
    bank_bits: int  # each bank's |q| < 2^bank_bits

    @classmethod
    def for_stage(cls, participants: int, headroom_bits: int, scale_bits: int) -> FixedPoint:
        if not 1 <= participants <= MAX_PARTICIPANTS:
            raise ConfigError(
                f"masked CKKS supports 3 to {MAX_PARTICIPANTS} participants per stage, "
                f"got {participants}"
            )
        log_n = max(1, math.ceil(math.log2(participants)))
        shift = scale_bits - NOISE_BITS
        mod_bits = min(62, headroom_bits + shift - log_n)
        frac = mod_bits - 1 - log_n - VALUE_BITS
        if shift < 1 or frac < 1:
            raise ConfigError(
                f"CKKS keys with {headroom_bits} bits of headroom and scale 2^{scale_bits} leave "
                f"no room for masked fixed point with {participants} banks; use the default "
                "keys (`fedfraud keys init`)"
            )
        return cls(frac, mod_bits, shift, mod_bits - 1 - log_n)

    @property
    def modulus_mask(self) -> np.uint64:
        return np.uint64((1 << self.mod_bits) - 1)

    def quantize(self, vector: np.ndarray) -> np.ndarray:
        """Integers round(x * 2^f) (int64); refuses values beyond one bank's share."""
        scaled = np.rint(np.ldexp(vector, self.frac_bits))
        peak = float(np.max(np.abs(scaled))) if scaled.size else 0.0
        if not np.isfinite(peak) or peak >= math.ldexp(1.0, self.bank_bits):
            raise PayloadError(
                f"weight x value reaches {math.ldexp(peak, -self.frac_bits):.3g}, above the "
                f"{math.ldexp(1.0, self.bank_bits - self.frac_bits):.3g} a masked CKKS "
                "contribution may carry; clip the update, or divide every bank's weight by the "
                "same constant (the weighted mean does not change)"
            )
        return scaled.astype(np.int64)

    def mask_to_slots(self, ints: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Centred residues (ints + mask) mod 2^k as slot values y * 2^-s (exact in float64)."""
        residues = (ints.view(np.uint64) + mask) & self.modulus_mask
        return np.ldexp(self._centre(residues).astype(np.float64), -self.slot_shift)

    def unmask_sum(self, slots: np.ndarray) -> np.ndarray:
        """The exact integer sum (int64) behind decrypted slot values; PayloadError when the
        slots are not integers plus CKKS noise (not a sum of fresh contributions)."""
        scaled = np.ldexp(slots, self.slot_shift)
        if not np.all(np.isfinite(scaled)) or np.max(np.abs(scaled)) >= 2.0**62:
            raise PayloadError("aggregate decrypts to values no contribution can make")
        rounded = np.rint(scaled)
        # Honest noise is below 2^-3 of a unit; an added plaintext or another key is not.
        if np.max(np.abs(scaled - rounded)) > 0.25:
            raise PayloadError("aggregate slots are not whole fixed-point units (tampered?)")
        residues = rounded.astype(np.int64).view(np.uint64) & self.modulus_mask
        return self._centre(residues)

    def _centre(self, residues: np.ndarray) -> np.ndarray:
        half = np.uint64(1 << (self.mod_bits - 1))
        signed = residues.astype(np.int64)
        return np.where(residues >= half, signed - (1 << self.mod_bits), signed)


class AggregateRejected(PayloadError):
    """A masked-mode bank refused an aggregate; the message says nothing more on purpose."""

    def __init__(self) -> None:
        super().__init__("aggregate rejected; this bank stops for the run")


class MaskedCKKS:
    """The masked mode of CKKSAggregator (secure_agg/ckks.py), kept apart for size."""

    name: str
    keys: ckks_keys.CKKSKeys
    layout: ckks_keys.Layout
    identity: tuple[BankIdentity, Roster] | None
    _halted_runs: set[str]
    _used_stages: set[StageContext]

    if TYPE_CHECKING:  # provided by CKKSAggregator

        def vector_size(self, num_params: int) -> int: ...

        def _weighted_vector(
            self, update: Sequence[np.ndarray], weight: float
        ) -> tuple[np.ndarray, int]: ...

        def _check_header(self, payload: Payload) -> int: ...

        def _load(self, payload: Payload, num_params: int, ctx: ts.Context) -> list: ...

    # -- masked mode --------------------------------------------------------------------------
    def _masked(self, context: StageContext | None) -> bool:
        if self.identity is None:
            if context is not None:
                raise ConfigError(
                    "masked CKKS needs this bank's roster identity: set node-config "
                    "identity-path and roster-path"
                )
            return False
        if context is None:
            raise ConfigError(
                "this bank masks its CKKS contributions (identity-path is set) but got no stage "
                "context (run, round, stage, participants)"
            )
        if context.run in self._halted_runs:
            raise AggregateRejected()
        return True

    def fixed_point(self, participants: int) -> FixedPoint:
        return FixedPoint.for_stage(participants, self.layout.headroom_bits, self.layout.scale_bits)

    def _protect_masked(
        self,
        ctx: ts.Context,
        update: Sequence[np.ndarray],
        weight: float,
        round: int,
        context: StageContext,
    ) -> Payload:
        assert self.identity is not None
        identity, roster = self.identity
        # The same masks on two different vectors would reveal their difference.
        if context in self._used_stages:
            raise PayloadError(
                f"this bank already contributed to {context.stage} of round {context.round} "
                "with these participants; a repeated stage must change the participant set"
            )
        vector, num_params = self._weighted_vector(update, weight)
        if not np.all(np.isfinite(vector)):
            raise PayloadError("update holds NaN or infinite values; refusing to encrypt it")
        fixed = self.fixed_point(len(context.participants))
        ints = fixed.quantize(vector)
        mask = masking.pairwise_mask(
            identity, roster, context, ints.size, fixed.mod_bits, purpose=self.name
        )
        values = fixed.mask_to_slots(ints, mask)
        slots = self.layout.slots
        chunks = tuple(
            ts.ckks_vector(ctx, values[i : i + slots]).serialize()
            for i in range(0, values.size, slots)
        )
        self._used_stages.add(context)
        meta = {
            "fingerprint": self.keys.fingerprint,
            "params": num_params,
            "round": round,
            "encoding": ENCODING,
        }
        return Payload(self.name, chunks, meta)

    def _reveal_masked(
        self,
        ctx: ts.Context,
        aggregate: Payload,
        shapes: Sequence[tuple[int, ...]],
        context: StageContext,
    ) -> list[np.ndarray]:
        try:
            if aggregate.meta.get("encoding") != ENCODING:
                raise PayloadError("aggregate is not masked-encoded")
            size = self._check_header(aggregate)
            num_params = sum(int(np.prod(s)) for s in shapes)
            if size != num_params:
                raise PayloadError(f"aggregate holds {size} values, the model {num_params}")
            assert self.identity is not None
            masking.check_participants(context, self.identity[1])
            fixed = self.fixed_point(len(context.participants))
            vectors = self._load(aggregate, size, ctx)
            slots = np.concatenate([np.asarray(v.decrypt(), dtype=np.float64) for v in vectors])
            sums = fixed.unmask_sum(slots)
            copies = sums[size:]
            if not np.all(copies == copies[0]) or copies[0] <= 0:
                raise PayloadError("total-weight copies disagree or are not positive")
        except (PayloadError, ConfigError) as exc:
            # The reason stays in this bank's log; the operator learns one fixed message, and
            # the bank answers nothing else in this run (no decryption oracle).
            log.error("run %s: rejected the %s aggregate: %s", context.run, context.stage, exc)
            self._halted_runs.add(context.run)
            raise AggregateRejected() from exc
        return unflatten(sums[:size].astype(np.float64) / float(copies[0]), shapes)
