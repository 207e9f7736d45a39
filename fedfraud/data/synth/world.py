"""The world: bank sizes and the accounts (customers, merchants, ATMs, exchanges, outsiders)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedfraud.data.schema import MCC_BUCKETS
from fedfraud.data.synth.constants import MCC_CNP, MCC_CP, MERCHANT_SHARE, N_CONTACTS, SPAN_H
from fedfraud.data.synth.sampling import cumulative, dirichlet_rows, draw, zipf_pool


@dataclass
class World:
    """Accounts of the consortium; all arrays are indexed by global entity index."""

    sizes: np.ndarray  # rows per bank
    cust_off: np.ndarray  # customers of bank b are entities cust_off[b]..cust_off[b+1]
    activity: np.ndarray
    mu: np.ndarray  # log typical amount
    business: np.ndarray  # bool: small businesses pay and deposit large sums
    sigma: np.ndarray
    chan_cum: np.ndarray  # (C, 5) cumulative channel preference
    cp_cum: np.ndarray  # (C, 10) cumulative merchant-category preference, in person
    cnp_cum: np.ndarray  # (C, 10) ... online
    peak_h: np.ndarray
    hour_sd: np.ndarray
    geo_scale: np.ndarray  # km: how far from home a customer usually pays
    trip: np.ndarray  # (C, 3) start h, end h, km (end = -1 when no trip)
    device_change: np.ndarray  # hour of a legit phone change, inf when none
    contacts: np.ndarray  # (C, N_CONTACTS) entity index of usual payees
    n_contacts: np.ndarray
    gamer: np.ndarray  # bool: makes bursts of small in-app purchases (legit look-alike)
    merchants: dict[int, tuple[np.ndarray, np.ndarray]]  # mcc -> (entities, cumulative pop.)
    atms: tuple[np.ndarray, np.ndarray]
    exchanges: np.ndarray
    external: np.ndarray  # accounts at banks outside the consortium
    n_entities: int


def bank_sizes(rng: np.random.Generator, n_banks: int, total: int) -> np.ndarray:
    """Log-spaced shares (largest ~7x the smallest) with jitter, a floor, and a random order."""
    logw = np.linspace(0.0, np.log(7.0), n_banks) + rng.normal(0.0, 0.15, n_banks)
    w = np.exp(logw) / np.exp(logw).sum()
    floor = min(0.02, 0.3 / n_banks)
    share = (floor + (1.0 - floor * n_banks) * w)[rng.permutation(n_banks)]
    sizes = np.floor(share * total).astype(np.int64)
    sizes[np.argmax(sizes)] += total - sizes.sum()
    return sizes


def build_world(rng: np.random.Generator, sizes: np.ndarray) -> World:
    """Customers with profiles per bank, then merchants, ATMs, exchanges and outside accounts."""
    n_banks = len(sizes)
    tx_per_cust = rng.uniform(20, 45, n_banks)
    n_cust = np.maximum(50, sizes / tx_per_cust).astype(np.int64)
    cust_off = np.concatenate([[0], np.cumsum(n_cust)])
    c = int(cust_off[-1])
    bank_of = np.repeat(np.arange(n_banks), n_cust)
    # Bank profiles (non-IID): channel mix (digital vs branch banks) and amount level.
    base_mix = np.array([0.42, 0.25, 0.15, 0.10, 0.08])
    bank_mix = rng.dirichlet(40 * base_mix, n_banks)
    bank_mu = rng.normal(0.0, 0.25, n_banks)
    business = rng.random(c) < 0.03
    mu = np.log(30.0) + bank_mu[bank_of] + rng.normal(0, 0.5, c) + 2.3 * business
    mcc_taste = rng.gamma(1.2, 1.0, (c, len(MCC_BUCKETS)))
    trip = np.full((c, 3), -1.0)
    has_trip = rng.random(c) < 0.2
    trip[has_trip, 0] = rng.uniform(0, SPAN_H - 48, has_trip.sum())
    trip[has_trip, 1] = trip[has_trip, 0] + rng.uniform(2, 10, has_trip.sum()) * 24
    trip[has_trip, 2] = rng.lognormal(np.log(600), 1.0, has_trip.sum())
    device_change = np.where(rng.random(c) < 0.3, rng.uniform(0, SPAN_H, c), np.inf)

    n_merch = max(100, int(sizes.sum()) // 400)
    n_atm = max(20, int(sizes.sum()) // 2000)
    n_ext = max(200, c // 3)
    kinds = np.flatnonzero(MERCHANT_SHARE)  # at least one merchant of every kind
    merch_mcc = np.concatenate(
        [kinds, rng.choice(len(MCC_BUCKETS), n_merch - len(kinds), p=MERCHANT_SHARE)]
    )
    merch_ent = c + np.arange(n_merch)
    merchants = {m: zipf_pool(rng, merch_ent[merch_mcc == m]) for m in np.unique(merch_mcc)}
    atms = zipf_pool(rng, c + n_merch + np.arange(n_atm))
    exchanges = c + n_merch + n_atm + np.arange(30)
    external = c + n_merch + n_atm + 30 + np.arange(n_ext)

    # Usual payees: mostly customers of the same bank, some at other banks, popular "hub" accounts
    # (landlords, small businesses: legit transfer fan-in), accounts outside, the odd exchange.
    same_bank = cust_off[bank_of][:, None] + (
        rng.random((c, N_CONTACTS)) * n_cust[bank_of][:, None]
    ).astype(np.int64)
    contacts = np.where(
        rng.random((c, N_CONTACTS)) < 0.7, same_bank, rng.integers(0, c, (c, N_CONTACTS))
    )
    # Half the hubs are businesses: many payers, large sums, large outflows (mule look-alikes).
    n_hubs = max(5, c // 300)
    biz = np.flatnonzero(business)
    hubs = np.concatenate(
        [
            rng.choice(biz, min(len(biz), n_hubs // 2), replace=False),
            rng.choice(c, n_hubs - min(len(biz), n_hubs // 2), replace=False),
        ]
    )
    hubs = zipf_pool(rng, hubs, 1.0)
    kind = rng.random((c, N_CONTACTS))
    contacts = np.where(kind < 0.12, draw(rng, hubs, c * N_CONTACTS).reshape(c, -1), contacts)
    contacts = np.where(
        (kind >= 0.12) & (kind < 0.3), rng.choice(external, (c, N_CONTACTS)), contacts
    )
    contacts = np.where(
        (kind >= 0.3) & (kind < 0.32), rng.choice(exchanges, (c, N_CONTACTS)), contacts
    )
    return World(
        sizes=sizes,
        cust_off=cust_off,
        activity=rng.gamma(0.8, 1.0, c),
        mu=mu,
        business=business,
        sigma=rng.uniform(0.4, 0.8, c),
        chan_cum=cumulative(dirichlet_rows(rng, 8 * bank_mix[bank_of])),
        cp_cum=cumulative(mcc_taste * MCC_CP),
        cnp_cum=cumulative(mcc_taste * MCC_CNP),
        peak_h=rng.normal(14.0, 3.5, c) % 24,
        hour_sd=rng.uniform(2.0, 4.5, c),
        geo_scale=rng.lognormal(np.log(4.0), 0.6, c),
        trip=trip,
        device_change=device_change,
        contacts=contacts,
        n_contacts=1 + rng.binomial(N_CONTACTS - 1, 0.4, c),
        gamer=rng.random(c) < 0.02,
        merchants=merchants,
        atms=atms,
        exchanges=exchanges,
        external=external,
        n_entities=int(external[-1]) + 1,
    )


def customers(
    rng: np.random.Generator, w: World, b: int, n: int, weight: np.ndarray | None = None
) -> np.ndarray:
    """n customers of bank b, uniformly or in proportion to `weight`."""
    lo, hi = w.cust_off[b], w.cust_off[b + 1]
    if weight is None:
        return lo + rng.integers(0, hi - lo, n)
    return lo + np.minimum(np.searchsorted(cumulative(weight), rng.random(n)), hi - lo - 1)


def bank_of_entity(w: World, ent: np.ndarray) -> np.ndarray:
    """Bank index of each customer entity."""
    return np.searchsorted(w.cust_off, ent, side="right") - 1
