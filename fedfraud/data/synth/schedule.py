"""Which typologies each bank sees: always, only late (test period) or never."""

from __future__ import annotations

import numpy as np

from fedfraud.data.synth.constants import ABSENT, ALWAYS, FRAUD_TYPES, LATE, MULE


def schedule_typologies(rng: np.random.Generator, n_banks: int) -> np.ndarray:
    """(banks, 4) status per fraud typology: every bank misses one, some see one only late.

    Invariants: each bank has at least one absent typology; every typology stays "always" at
    one bank or more (someone can teach it); every typology is missing from some bank's early
    period when n_banks >= 2; mule rings stay active at >= 2 banks (they are cross-bank).
    """
    k_mule = FRAUD_TYPES.index(MULE)
    status = np.full((n_banks, 4), ALWAYS)
    if n_banks == 1:
        status[0, rng.integers(4)] = ABSENT
        return status

    def n_always(k: int) -> int:
        return int((status[:, k] == ALWAYS).sum())

    def n_active(k: int) -> int:
        return int((status[:, k] != ABSENT).sum())

    rotate = [k for k in range(4) if n_banks > 3 or k != k_mule]
    order = rng.permutation(rotate)
    banks = rng.permutation(n_banks)
    for i, b in enumerate(banks):
        status[b, order[i % len(order)]] = ABSENT
    for b in banks:  # a second gap at some banks, for heterogeneity
        if n_banks >= 5 and rng.random() < 0.3:
            cand = [
                k
                for k in range(4)
                if status[b, k] == ALWAYS and n_always(k) >= 2 and n_active(k) > 0.6 * n_banks
            ]
            cand = [k for k in cand if k != k_mule]  # rings need many banks to span
            if cand and (status[b] != ABSENT).sum() > 2:
                status[b, rng.choice(cand)] = ABSENT
    for k in rng.permutation(4):  # a typology present at every bank gets a late start somewhere
        if (status[:, k] != ABSENT).all():
            cand = [b for b in banks if status[b, k] == ALWAYS and (status[b] == ALWAYS).sum() >= 2]
            if cand:
                status[cand[0], k] = LATE
    for b in banks:  # concept shift: more banks meet a typology only in their test period
        cand = [
            k
            for k in range(4)
            if status[b, k] == ALWAYS
            and n_always(k) >= (3 if k == k_mule and n_banks >= 4 else 2)
            and (status[b] == ALWAYS).sum() >= 2
        ]
        if cand and (rng.random() < 0.4 or not (status == LATE).any()):
            status[b, rng.choice(cand)] = LATE
    return status
