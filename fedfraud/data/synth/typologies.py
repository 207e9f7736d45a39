"""Fraud typologies: the rows of card-testing, takeover, mule-ring and structuring events."""

from __future__ import annotations

import numpy as np

from fedfraud.data.synth.constants import (
    ATO,
    CARD_TESTING,
    CASH,
    CHANNEL_OFFSET,
    CNP,
    DIGITAL,
    MCC_INDEX,
    MONEY,
    MULE,
    STRUCTURING,
    THRESHOLD,
    TRANSFER,
    UNKNOWN,
)
from fedfraud.data.synth.rings import Rings
from fedfraud.data.synth.rows import Rows
from fedfraud.data.synth.sampling import bursts, draw
from fedfraud.data.synth.world import World, bank_of_entity, customers


def card_testing(rng: np.random.Generator, w: World, b: int, t0: np.ndarray, rows: Rows) -> None:
    """Bursts of tiny online payments at one digital merchant, then maybe one real purchase."""
    e = len(t0)
    victim = customers(rng, w, b, e, w.activity[w.cust_off[b] : w.cust_off[b + 1]])
    ev, off = bursts(rng, 2 + rng.poisson(5.0, e), 2.0 / 60)
    n = len(ev)
    digital = w.merchants[DIGITAL][0]
    site = rng.choice(digital, e)  # testers pick small merchants, not the popular ones
    amount = np.round(rng.uniform(0.5, 5.0, n), 2)
    amount = np.where(rng.random(n) < 0.3, np.ceil(amount), amount)
    new_device = rng.random(e) < 0.7
    geo = np.where(
        rng.random(e) < 0.6,
        rng.lognormal(np.log(400), 1.0, e),
        rng.exponential(3 * w.geo_scale[victim]),
    )
    rows.add(
        bank=b, sender=victim[ev], receiver=np.where(rng.random(n) < 0.85, site[ev],
        rng.choice(digital, n)), amount=amount, t=t0[ev] + off, channel=CNP, mcc=DIGITAL,
        dev=new_device[ev], geo=geo[ev] * rng.lognormal(0, 0.1, n), typ=CARD_TESTING,
    )  # fmt: skip
    big = np.flatnonzero(rng.random(e) < 0.5)
    end = np.zeros(e)
    np.maximum.at(end, ev, off)
    mcc = rng.choice([MCC_INDEX["electronics"], MCC_INDEX["luxury"]], len(big))
    receiver = np.empty(len(big), dtype=np.int64)
    for m in np.unique(mcc):
        receiver[mcc == m] = draw(rng, w.merchants[m], int((mcc == m).sum()))
    rows.add(
        bank=b, sender=victim[big], receiver=receiver,
        amount=np.round(rng.lognormal(np.log(350), 0.7, len(big)), 2),
        t=t0[big] + end[big] + rng.uniform(0.5, 6.0, len(big)), channel=CNP, mcc=mcc,
        dev=new_device[big], geo=geo[big], typ=CARD_TESTING,
    )  # fmt: skip


def takeover(
    rng: np.random.Generator, w: World, b: int, t0: np.ndarray, rings: Rings | None, rows: Rows
) -> tuple[np.ndarray, ...]:
    """A hijacked account: new device, often far away and at night, big transfers to a new payee."""
    e = len(t0)
    victim = customers(rng, w, b, e, w.activity[w.cust_off[b] : w.cust_off[b + 1]])
    night = rng.random(e) < 0.5
    t0 = np.where(night, np.floor(t0 / 24) * 24 + rng.uniform(0, 5.5, e), t0)
    to_mule = (rng.random(e) < 0.3) & (rings is not None)
    ring = rings.ring_for(rng, b, e) if rings is not None else np.zeros(e, dtype=np.int64)
    payee = rng.choice(w.external, e)
    if rings is not None:
        payee = np.where(to_mule, rings.member(rng, ring, t0, 1), payee)
    ev, off = bursts(rng, 1 + rng.binomial(2, 0.4, e), 0.25)
    n = len(ev)
    amount = np.exp(w.mu[victim][ev] + CHANNEL_OFFSET[TRANSFER] + rng.uniform(0.8, 2.6, n))
    amount = np.where(rng.random(n) < 0.4, np.round(amount, -2), np.round(amount, 2))
    far = rng.random(e) < 0.5
    geo = np.where(
        far, rng.lognormal(np.log(1500), 0.8, e), rng.exponential(3 * w.geo_scale[victim])
    )
    t = t0[ev] + off
    rows.add(
        bank=b, sender=victim[ev], receiver=payee[ev], amount=amount, t=t, channel=TRANSFER,
        mcc=MONEY, dev=(rng.random(e) < 0.8)[ev], geo=geo[ev], typ=ATO,
    )  # fmt: skip
    sel = to_mule[ev]
    return payee[ev][sel], ring[ev][sel], t[sel], amount[sel]


def mule_victims(
    rng: np.random.Generator, w: World, b: int, t0: np.ndarray, rings: Rings, rows: Rows
) -> tuple[np.ndarray, ...]:
    """Scam victims pay collector mules of the ring active at the time (from their own device)."""
    e = len(t0)
    victim = customers(rng, w, b, e)
    t0 = np.floor(t0 / 24) * 24 + (w.peak_h[victim] + rng.normal(0, 2.0, e)) % 24
    ring = rings.ring_for(rng, b, e)
    mule = rings.member(rng, ring, t0, 1)
    ev, off = bursts(rng, 1 + rng.binomial(2, 0.3, e), 30.0)  # the scam asks again a day later
    n = len(ev)
    amount = np.round(rng.lognormal(np.log(900), 0.9, n), 2)
    t = t0[ev] + off
    rows.add(
        bank=b, sender=victim[ev], receiver=mule[ev], amount=amount, t=t, channel=TRANSFER,
        mcc=MONEY, dev=rng.random(n) < 0.03, geo=rng.exponential(3 * w.geo_scale[victim[ev]]),
        typ=MULE,
    )  # fmt: skip
    return mule[ev], ring[ev], t, amount


def mule_forwards(
    rng: np.random.Generator, w: World, rings: Rings, inflow: list[np.ndarray], rows: Rows
) -> None:
    """Mules pass money on within hours: collectors to a layer-2 mule, an ATM or an exchange;
    layer-2 mules to an ATM or an exchange. What arrives within a half-day goes out as one sum.
    """
    mule, ring, t, amount = inflow
    for layer in (1, 2):
        _, first, group = np.unique(
            mule * 1024 + np.floor(t / 12).astype(np.int64), return_index=True, return_inverse=True
        )
        amount = np.bincount(group, weights=amount)
        last = np.zeros(len(first))
        np.maximum.at(last, group, t)
        mule, ring, t = mule[first], ring[first], last
        n = len(mule)
        u = rng.random(n)
        onward = (u < 0.55) if layer == 1 else np.zeros(n, dtype=bool)
        cash = ~onward & (u < (0.85 if layer == 1 else 0.6))
        t = t + rng.exponential(3.0 if layer == 1 else 6.0, n) + 0.2
        amount = amount * rng.uniform(0.88, 0.98, n)
        receiver = rng.choice(w.exchanges, n)
        receiver = np.where(cash, draw(rng, w.atms, n), receiver)
        receiver = np.where(onward, rings.member(rng, ring, t, 2), receiver)
        amount = np.where(cash, np.maximum(20.0, np.floor(amount / 20) * 20), np.round(amount, 2))
        rows.add(
            bank=bank_of_entity(w, mule), sender=mule, receiver=receiver, amount=amount, t=t,
            channel=np.where(cash, CASH, TRANSFER), mcc=np.where(cash, UNKNOWN, MONEY),
            dev=rng.random(n) < 0.2, geo=rng.exponential(3 * w.geo_scale[mule]), typ=MULE,
        )  # fmt: skip
        mule, ring, t, amount = receiver[onward], ring[onward], t[onward], amount[onward]


def structuring(rng: np.random.Generator, w: World, b: int, t0: np.ndarray, rows: Rows) -> None:
    """Cash deposits or transfers just under the reporting threshold, several in a day or two."""
    e = len(t0)
    lo, hi = w.cust_off[b], w.cust_off[b + 1]
    sender = customers(rng, w, b, e, np.exp(w.mu[lo:hi] - w.mu[lo:hi].max()))
    ev, _ = bursts(rng, 3 + rng.poisson(2.5, e), 1.0)
    n = len(ev)
    cash = (rng.random(e) < 0.6)[ev]
    t = t0[ev] + rng.random(n) * rng.uniform(12, 48, e)[ev]
    t = np.where(cash, np.floor(t / 24) * 24 + rng.uniform(9, 17, n), t)  # branch hours
    amount = rng.uniform(0.9 * THRESHOLD, 0.999 * THRESHOLD, n)
    u = rng.random(n)
    amount = np.where(u < 0.5, np.round(amount, -1), np.where(u < 0.8, np.floor(amount / 100) * 100,
                      np.round(amount, 2)))  # fmt: skip
    receiver = np.where(cash, draw(rng, w.atms, n), rng.choice(w.external, e)[ev])
    rows.add(
        bank=b, sender=sender[ev], receiver=receiver, amount=amount, t=t,
        channel=np.where(cash, CASH, TRANSFER), mcc=np.where(cash, UNKNOWN, MONEY), dev=False,
        geo=rng.exponential(w.geo_scale[sender[ev]]), typ=STRUCTURING,
    )  # fmt: skip
