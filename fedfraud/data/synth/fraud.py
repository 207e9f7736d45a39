"""Fraud rows of the whole consortium: per-bank budgets, event times, and split coverage."""

from __future__ import annotations

import numpy as np

from fedfraud.data.synth.constants import (
    ABSENT,
    ALWAYS,
    ATO,
    CARD_TESTING,
    FORWARD_ROWS,
    FRAUD_TYPES,
    LATE,
    LATE_FROM_H,
    MULE,
    ROWS_PER_EVENT,
    SPAN_H,
    STRUCTURING,
    TEST_FROM_H,
    TRAIN_END_H,
    TYPOLOGY_PRIOR,
)
from fedfraud.data.synth.rings import Rings, build_rings
from fedfraud.data.synth.rows import Rows
from fedfraud.data.synth.sampling import event_times, stochastic_round
from fedfraud.data.synth.typologies import (
    card_testing,
    mule_forwards,
    mule_victims,
    structuring,
    takeover,
)
from fedfraud.data.synth.world import World


def add_fraud(rng: np.random.Generator, w: World, status: np.ndarray, rows: Rows) -> None:
    """All fraud rows: per-bank budgets spread over the bank's typologies and their time windows.

    Takeovers and mule rings go first; the mules forward money from the banks where they hold
    accounts, and card testing and structuring then fill what is left of each bank's budget, so
    every bank's fraud rate stays near its target.
    """
    n_banks = len(w.sizes)
    rate = np.exp(rng.uniform(np.log(0.0025), np.log(0.011), n_banks))
    prior = np.array([TYPOLOGY_PRIOR[k] for k in FRAUD_TYPES])
    weights = prior * rng.dirichlet(np.full(4, 2.0), n_banks) * (status != ABSENT)
    weights /= weights.sum(axis=1, keepdims=True)
    local_rows = np.array([ROWS_PER_EVENT[k] for k in FRAUD_TYPES])
    budget = rate * w.sizes  # fraud rows per bank
    events = stochastic_round(rng, budget[:, None] * weights / local_rows)
    events = np.where(status == ABSENT, 0, np.maximum(events, 1))
    i_ato, i_mule = FRAUD_TYPES.index(ATO), FRAUD_TYPES.index(MULE)
    homes = status[:, i_mule] == ALWAYS
    if homes.any():  # keep the mules' forwarding within 60% of their home banks' budgets
        forwards = FORWARD_ROWS[MULE] * events[:, i_mule].sum()
        forwards += FORWARD_ROWS[ATO] * events[:, i_ato].sum()
        scale = min(1.0, 0.6 * budget[homes].sum() / max(forwards, 1e-9))
        events[:, i_mule] = np.where(
            events[:, i_mule] > 0, np.maximum(1, np.round(events[:, i_mule] * scale)), 0
        )
    rings = build_rings(rng, w, status, budget, int(events[:, i_mule].sum()))
    slope = rng.uniform(-0.6, 0.6, status.shape)  # the fraud mix drifts over time

    def times(b: int, i: int, n: int) -> np.ndarray:
        late = status[b, i] == LATE
        lo = LATE_FROM_H if late else 0.0
        return event_times(rng, n, lo, SPAN_H - 2.0, 0.0 if late else slope[b, i])

    inflows: list[tuple[np.ndarray, ...]] = []
    for b in range(n_banks):
        i = FRAUD_TYPES.index(ATO)
        if events[b, i]:
            inflows.append(takeover(rng, w, b, times(b, i, events[b, i]), rings, rows))
        i = FRAUD_TYPES.index(MULE)
        if events[b, i] and rings is not None:
            inflows.append(mule_victims(rng, w, b, times(b, i, events[b, i]), rings, rows))
    if rings is not None and inflows:
        mule_forwards(rng, w, rings, [np.concatenate(c) for c in zip(*inflows, strict=True)], rows)
    left = np.maximum(0.0, budget - rows.count_per_bank(n_banks))
    rest = [FRAUD_TYPES.index(CARD_TESTING), FRAUD_TYPES.index(STRUCTURING)]
    share = weights[:, rest] / np.maximum(weights[:, rest].sum(axis=1, keepdims=True), 1e-12)
    more = stochastic_round(rng, left[:, None] * share / local_rows[rest])
    events[:, rest] = np.where(status[:, rest] == ABSENT, 0, np.maximum(more, 1))
    for b in range(n_banks):
        for i, make in zip(rest, (card_testing, structuring), strict=True):
            if events[b, i]:
                make(rng, w, b, times(b, i, events[b, i]), rows)
    cover_splits(rng, w, status, rings, rows)


def cover_splits(
    rng: np.random.Generator, w: World, status: np.ndarray, rings: Rings | None, rows: Rows
) -> None:
    """Give a small bank one more event where its training or test period would lack fraud."""
    n_banks = len(w.sizes)
    r = rows.concat()
    bank = r["bank"].astype(np.int64)
    # (period checked, window for a new event: room for multi-day events, typologies allowed)
    periods = (
        (0.0, TRAIN_END_H, TRAIN_END_H - 48.0, (ALWAYS,)),
        (TEST_FROM_H, SPAN_H, SPAN_H - 48.0, (ALWAYS, LATE)),
    )
    for lo, hi, last_start, allowed in periods:
        inside = (r["t"] >= lo) & (r["t"] < hi)
        have = np.bincount(bank[inside], minlength=n_banks)
        for b in np.flatnonzero(have == 0):
            cand = [i for i in range(4) if status[b, i] in allowed]
            cand = [i for i in cand if FRAUD_TYPES[i] != MULE or rings is not None]
            if not cand:
                continue
            k = FRAUD_TYPES[cand[rng.integers(len(cand))]]
            t0 = rng.uniform(lo, last_start, 1)
            if k == CARD_TESTING:
                card_testing(rng, w, b, t0, rows)
            elif k == ATO:
                takeover(rng, w, b, t0, rings, rows)
            elif k == MULE:
                mule_victims(rng, w, b, t0, rings, rows)
            else:
                structuring(rng, w, b, t0, rows)
