"""Legit rows: customers' ordinary payments, hard negatives included."""

from __future__ import annotations

import numpy as np

from fedfraud.data.synth.constants import (
    CASH,
    CHANNEL_OFFSET,
    CNP,
    CP,
    DAYS,
    DIGITAL,
    LEGIT,
    MCC_OFFSET,
    MONEY,
    OTHER,
    PRICE_POINTS,
    SPAN_H,
    THRESHOLD,
    TRANSFER,
    UNKNOWN,
)
from fedfraud.data.synth.rows import Rows
from fedfraud.data.synth.sampling import bursts, cumulative, draw, pick
from fedfraud.data.synth.world import World, customers


def legit_times(rng: np.random.Generator, w: World, cust: np.ndarray) -> np.ndarray:
    """Days with growth, weekend dip and paydays; hours around each customer's own peak."""
    d = np.arange(DAYS)
    day_w = (1 + 0.12 * d / DAYS) * np.where(d % 7 >= 5, 0.85, 1.0) * np.where(d % 30 < 2, 1.2, 1.0)
    day = np.minimum(np.searchsorted(cumulative(day_w), rng.random(len(cust))), DAYS - 1)
    hour = (w.peak_h[cust] + w.hour_sd[cust] * rng.normal(size=len(cust))) % 24
    return day * 24.0 + hour


def add_legit(rng: np.random.Generator, w: World, b: int, n: int, rows: Rows) -> None:
    """`n` ordinary transactions of bank b's customers, hard negatives included."""
    lo, hi = w.cust_off[b], w.cust_off[b + 1]
    # Gamers' in-app purchase sessions: bursts of small online payments (card-testing look-alike).
    gamers = lo + np.flatnonzero(w.gamer[lo:hi])
    sizes = 2 + rng.poisson(2.5, int(n * 0.004 / 4.5) if len(gamers) else 0)
    sizes = sizes[np.cumsum(sizes) <= n // 2]
    ev, off = bursts(rng, sizes, 4.0 / 60)
    gamer = rng.choice(gamers, len(sizes)) if len(sizes) else np.zeros(0, dtype=np.int64)
    s_t = legit_times(rng, w, gamer)[ev] + off
    overrun = np.zeros(len(sizes))
    np.maximum.at(overrun, ev, s_t - (SPAN_H - 0.01))
    s_t -= overrun[ev]  # a session at the very end starts a little earlier instead
    m = len(ev)
    cust = np.concatenate([gamer[ev], customers(rng, w, b, n - m, w.activity[lo:hi])])
    t = np.concatenate([s_t, legit_times(rng, w, cust[m:])])
    ch = np.concatenate([np.full(m, CNP), pick(rng, w.chan_cum[cust[m:]])])
    ch[(ch == CP) & (rng.random(n) < 0.1 * t / SPAN_H)] = CNP  # shopping drifts online
    mcc = np.full(n, UNKNOWN)
    mcc[ch == TRANSFER] = MONEY
    mcc[:m] = DIGITAL
    for c, cum in ((CP, w.cp_cum), (CNP, w.cnp_cum)):
        sel = np.flatnonzero(ch == c)
        sel = sel[sel >= m]
        mcc[sel] = pick(rng, cum[cust[sel]])
    receiver = np.empty(n, dtype=np.int64)
    for code, pool in w.merchants.items():
        sel = (mcc == code) & ((ch == CP) | (ch == CNP) | (ch == OTHER))
        receiver[sel] = draw(rng, pool, int(sel.sum()))
    receiver[:m] = draw(rng, w.merchants[DIGITAL], len(sizes))[ev]  # one game per session
    sel = ch == CASH
    receiver[sel] = draw(rng, w.atms, int(sel.sum()))
    tr = np.flatnonzero(ch == TRANSFER)
    slot = (w.n_contacts[cust[tr]] * rng.random(len(tr)) ** 2).astype(np.int64)
    receiver[tr] = w.contacts[cust[tr], slot]

    amount = np.exp(
        w.mu[cust] + CHANNEL_OFFSET[ch] + MCC_OFFSET[mcc] + w.sigma[cust] * rng.normal(size=n)
    ) * np.exp(0.03 * t / SPAN_H)  # mild inflation over the range
    to_biz = receiver[tr] < len(w.business)
    to_biz[to_biz] = w.business[receiver[tr][to_biz]]
    amount[tr[to_biz]] *= rng.lognormal(np.log(5), 0.6, int(to_biz.sum()))  # invoices
    # One-off large payments to new payees (car, deposit): the takeover look-alike.
    big = tr[rng.random(len(tr)) < 0.005]
    receiver[big] = np.where(
        rng.random(len(big)) < 0.5, rng.integers(0, w.cust_off[-1], len(big)),
        rng.choice(w.external, len(big)),
    )  # fmt: skip
    amount[big] *= rng.lognormal(np.log(10), 0.5, len(big))
    # Businesses settle invoices and deposit takings just under 10,000 too: the structuring
    # look-alike (sometimes several on one day).
    large = np.flatnonzero(
        w.business[cust] & ((ch == TRANSFER) | (ch == CASH)) & (rng.random(n) < 0.12)
    )
    amount[large] = np.round(rng.uniform(0.85 * THRESHOLD, THRESHOLD, len(large)), -1)
    digital = np.flatnonzero(mcc == DIGITAL)
    priced = digital[(rng.random(len(digital)) < 0.35) | (digital < m)]
    amount[priced] = rng.choice(PRICE_POINTS, len(priced))
    amount = np.where(ch == CASH, np.maximum(20.0, np.round(amount / 20) * 20), amount)
    amount = np.where((ch == TRANSFER) & (rng.random(n) < 0.4), np.round(amount, -1), amount)
    amount = np.round(amount, 2)

    physical = (ch == CP) | (ch == CASH)
    geo = rng.exponential(np.where(physical, 1.0, 3.0) * w.geo_scale[cust])
    trip = w.trip[cust]
    away = (t >= trip[:, 0]) & (t < trip[:, 1])
    geo = np.where(away, trip[:, 2] * rng.lognormal(0, 0.1, n), geo)
    geo = np.where(ch == OTHER, 0.0, geo)  # direct debits have no location
    online = (ch == CNP) | (ch == TRANSFER)
    changed = (t >= w.device_change[cust]) & (t < w.device_change[cust] + 72)
    dev = online & (changed | (rng.random(n) < 0.003))
    dev[big] |= rng.random(len(big)) < 0.1  # a new phone and a big purchase do coincide
    rows.add(
        bank=b, sender=cust, receiver=receiver, amount=amount, t=t, channel=ch, mcc=mcc,
        dev=dev, geo=geo, typ=LEGIT,
    )  # fmt: skip
