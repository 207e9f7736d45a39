"""'none': updates travel in the clear; the baseline every other backend is measured against."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedfraud.errors import PayloadError
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

NAME = "none"


class PlaintextAggregator:
    """Sends float32 `[weight * update..., weight]` (as Flower does); sums in float64."""

    name = NAME

    def client_protect(
        self,
        update: Sequence[np.ndarray],
        weight: float,
        round: int,
        *,
        context: StageContext | None = None,
    ) -> Payload:
        w = check_weight(weight)
        vector = np.append(flatten(update) * w, w)
        return Payload(NAME, (vector.astype("<f4").tobytes(),), {"size": int(vector.size)})

    def server_aggregate(self, payloads: Mapping[str, Payload]) -> Aggregate:
        total: np.ndarray | None = None
        included: list[str] = []
        rejected: dict[str, str] = {}
        for bank, payload in sorted(payloads.items()):
            try:
                vector = self._decode(payload)
                if total is not None and vector.size != total.size:
                    raise PayloadError(f"update has {vector.size} values, expected {total.size}")
            except PayloadError as exc:
                rejected[bank] = str(exc)
                continue
            total = vector if total is None else total + vector
            included.append(bank)
        if total is None:
            raise PayloadError(
                "no valid payloads to aggregate: "
                + "; ".join(f"{b}: {r}" for b, r in rejected.items())
            )
        # The sum stays float64 so the aggregate adds no rounding beyond the banks' own.
        meta = {"size": int(total.size), "count": len(included), "dtype": "f8"}
        out = Payload(NAME, (total.astype("<f8").tobytes(),), meta)
        return Aggregate(out, tuple(included), rejected)

    def client_reveal(
        self,
        aggregate: Payload,
        shapes: Sequence[tuple[int, ...]],
        *,
        context: StageContext | None = None,
    ) -> list[np.ndarray]:
        vector = self._decode(aggregate)
        total_weight = vector[-1]
        if not total_weight > 0:
            raise PayloadError("aggregate carries no positive total weight")
        return unflatten(vector[:-1] / total_weight, shapes)

    @staticmethod
    def _decode(payload: Payload) -> np.ndarray:
        if payload.backend != NAME:
            raise PayloadError(f"payload made by backend '{payload.backend}', expected '{NAME}'")
        if len(payload.chunks) != 1 or len(payload.chunks[0]) % 4:
            raise PayloadError("plaintext payload must be one chunk of float32 values")
        dtype = "<f8" if payload.meta.get("dtype") == "f8" else "<f4"
        vector = np.frombuffer(payload.chunks[0], dtype=dtype).astype(np.float64)
        if vector.size != payload.meta.get("size") or vector.size < 2:
            raise PayloadError("plaintext payload size does not match its header")
        if not np.all(np.isfinite(vector)) or vector[-1] <= 0:
            raise PayloadError("plaintext payload holds non-finite values or no positive weight")
        return vector


@register(NAME)
def _factory(role: Role, options: Mapping[str, Any]) -> PlaintextAggregator:
    return PlaintextAggregator()
