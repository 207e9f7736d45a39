"""Synthetic consortium: skewed banks, profiled customers, four fraud typologies, concept shift.

Every transaction lives in the table of the sender's bank. Accounts (customers, merchants, ATMs,
exchanges, accounts at banks outside the consortium) carry global ids, so the same mule or merchant
appears in several banks' tables. Typologies and the signals they leave in a bank's own table:

- card_testing: bursts of 0.5-5 online payments minutes apart at one digital-goods merchant, often
  from a new device far away, sometimes followed by one larger purchase.
- account_takeover: new device, often far away and at night, transfers several times the
  customer's usual amount to a new payee (30% a mule).
- mule_ring: scam victims at several banks pay the same customer-like collector accounts, which
  forward the money within hours to layer-2 mules, ATMs or exchanges (all labelled).
- structuring: several cash deposits or transfers of 9,000-9,990 within a day or two.

Hard negatives: gamers' bursts of small in-app payments, phone changes, trips, one-off large
payments to new payees, businesses moving sums just under 10,000, popular legit payees. Label
noise: 1.5% of fraud rows are labelled legit (unreported) at banks with 50+ fraud rows.

Typologies are scheduled per bank as "always", "late" (only from ~76% of the time range on, so
only the test period sees them) or "absent"; each bank alone misses typologies the consortium has
seen. Everything is vectorized; loops run over banks, typologies and rings only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedfraud.data import store
from fedfraud.data.schema import CHANNELS, MCC_BUCKETS, TYPOLOGIES
from fedfraud.errors import ConfigError

log = logging.getLogger(__name__)

DAYS = 90
SPAN_H = DAYS * 24.0
# "Late" typologies start at the first midnight after 75% of the range: the test split (last 20%
# of rows) sees them, the training split never does.
LATE_FROM_H = np.ceil(0.75 * DAYS) * 24.0
# Every bank gets fraud before TRAIN_END_H and after TEST_FROM_H: the temporal split puts the
# last 20% of rows (from ~81% of the range, volume grows over time) in test, the first 70% in train.
# Both are midnights, so events that move to a night or office hour of their day stay inside.
TRAIN_END_H = 58 * 24.0
TEST_FROM_H = 78 * 24.0
MIN_TX_PER_BANK = 2_000
MAX_BANKS = 100  # bank-00 .. bank-99 keep their names sortable
THRESHOLD = 10_000.0  # reporting threshold that structuring stays just below
NOISE = 0.015  # fraction of fraud rows left unlabelled (fraud nobody reported)

CP, CNP, TRANSFER, CASH, OTHER = (
    CHANNELS.index(c) for c in ("card_present", "card_not_present", "transfer", "cash", "other")
)
_M = {m: MCC_BUCKETS.index(m) for m in MCC_BUCKETS}
UNKNOWN, DIGITAL, MONEY = _M["unknown"], _M["digital_goods"], _M["money_transfer"]
LEGIT, CARD_TESTING, ATO, MULE, STRUCTURING = (
    TYPOLOGIES.index(t)
    for t in ("legit", "card_testing", "account_takeover", "mule_ring", "structuring")
)
FRAUD_TYPES = (CARD_TESTING, ATO, MULE, STRUCTURING)
ALWAYS, LATE, ABSENT = 0, 1, 2
STATUS_NAMES = ("always", "late", "absent")
# Expected rows per event, used to turn fraud-row budgets into event counts. A scam victim pays
# a mule 1.6 times and the mules forward that in ~1.4 more rows at their own banks.
ROWS_PER_EVENT = {CARD_TESTING: 7.5, ATO: 1.8, MULE: 3.0, STRUCTURING: 5.5}
FORWARD_ROWS = {ATO: 0.3 * 1.8 * 1.4, MULE: 1.4}  # forwarding rows per event at the mules' banks
# Prior typology weights (card testing and takeover are the common ones).
TYPOLOGY_PRIOR = {CARD_TESTING: 1.3, ATO: 1.0, MULE: 1.3, STRUCTURING: 0.6}

# Legit amounts: log-offsets from a customer's typical amount by channel.
CHANNEL_OFFSET = np.zeros(len(CHANNELS))
CHANNEL_OFFSET[[CNP, TRANSFER, CASH, OTHER]] = (-0.1, 1.7, 1.0, 1.1)
# Per merchant category: appetite for in-person (CP) and online (CNP) card payments, log-offset
# of the amount, and share of merchants ("unknown" merchants are billers paid by direct debit).
_MCC_TABLE = {
    "unknown": (0.0, 0.0, 0.0, 0.06),
    "grocery": (3.0, 0.5, 0.0, 0.20),
    "electronics": (0.6, 1.0, 1.3, 0.10),
    "travel": (0.3, 0.8, 1.6, 0.08),
    "digital_goods": (0.0, 2.0, -1.2, 0.12),
    "gambling": (0.1, 0.3, 0.3, 0.04),
    "fuel": (1.2, 0.0, 0.2, 0.10),
    "restaurants": (2.5, 0.6, -0.4, 0.25),
    "luxury": (0.2, 0.3, 2.0, 0.05),
    "money_transfer": (0.0, 0.0, 0.0, 0.0),
}
MCC_CP, MCC_CNP, MCC_OFFSET, MERCHANT_SHARE = np.array([_MCC_TABLE[m] for m in MCC_BUCKETS]).T
PRICE_POINTS = np.array([0.99, 1.99, 2.99, 4.99, 9.99])
N_CONTACTS = 6


@dataclass
class _World:
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


class _Rows:
    """Column chunks of generated transactions, concatenated once at the end."""

    COLS = ("bank", "sender", "receiver", "amount", "t", "channel", "mcc", "dev", "geo", "typ")

    def __init__(self) -> None:
        self.chunks: list[dict[str, np.ndarray]] = []

    def add(self, **cols: Any) -> None:
        n = len(cols["t"])
        keep = np.asarray(cols["t"]) < SPAN_H  # events running past the end are cut there
        if keep.any():
            self.chunks.append({k: np.broadcast_to(cols[k], (n,))[keep] for k in self.COLS})

    def count_per_bank(self, n_banks: int) -> np.ndarray:
        counts = np.zeros(n_banks, dtype=np.int64)
        for c in self.chunks:
            counts += np.bincount(c["bank"].astype(np.int64), minlength=n_banks)
        return counts

    def concat(self) -> dict[str, np.ndarray]:
        if not self.chunks:
            return {k: np.zeros(0) for k in self.COLS}
        return {k: np.concatenate([c[k] for c in self.chunks]) for k in self.COLS}


def generate_consortium(
    num_banks: int, transactions: int, seed: int = 0
) -> dict[str, pd.DataFrame]:
    """Generate `transactions` rows split over `num_banks` banks, keyed bank-00, bank-01, ..."""
    return _generate(num_banks, transactions, seed)[0]


def write_consortium(out_dir: Path, num_banks: int, transactions: int, seed: int = 0) -> dict:
    """Generate a consortium and write DIR/bank-XX/transactions.parquet + DIR/manifest.json.

    The manifest also records which typologies each bank sees ("always", "late", "absent").
    """
    out_dir = Path(out_dir)
    check_args(num_banks, transactions, seed)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file; give --out a folder (new or empty).")
    keep = {store.bank_name(b) for b in range(num_banks)}
    stale = sorted(p.parent.name for p in out_dir.glob(f"*/{store.TRANSACTIONS_FILE}"))
    stale = [name for name in stale if name not in keep]
    if stale:  # they would be read as members of the new consortium
        listed = ", ".join(stale[:3]) + (", ..." if len(stale) > 3 else "")
        raise ConfigError(
            f"{out_dir} already holds other bank folders ({listed}); "
            "write to a new folder or delete the old data first."
        )
    frames, schedule = _generate(num_banks, transactions, seed)
    meta = {
        "generator": "fedfraud.synth",
        "seed": seed,
        "num_banks": num_banks,
        "transactions": transactions,
        "typology_schedule": schedule,
    }
    return store.write_banks(frames, out_dir, meta=meta)


def check_args(num_banks: Any, transactions: Any, seed: Any) -> None:
    def is_int(v: Any) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if not is_int(num_banks) or not 1 <= num_banks <= MAX_BANKS:
        raise ConfigError(
            f"num_banks must be an integer from 1 to {MAX_BANKS} (got {num_banks!r})."
        )
    need = MIN_TX_PER_BANK * num_banks
    if not is_int(transactions) or transactions < need:
        raise ConfigError(
            f"transactions={transactions!r} is too small for {num_banks} banks; use at least "
            f"{need} ({MIN_TX_PER_BANK} per bank) so every bank gets fraud in train and test."
        )
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer (got {seed!r}).")


def _generate(
    num_banks: int, transactions: int, seed: int
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, str]]]:
    check_args(num_banks, transactions, seed)
    world_rng, sched_rng, fraud_rng, legit_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    sizes = _bank_sizes(world_rng, num_banks, transactions)
    world = _build_world(world_rng, sizes)
    status = _schedule(sched_rng, num_banks)
    rows = _Rows()
    _fraud(fraud_rng, world, status, rows)
    fraud = rows.concat()
    # Fraud rows beyond the time range are dropped, then legit rows fill each bank exactly.
    fraud_per_bank = np.bincount(fraud["bank"].astype(np.int64), minlength=num_banks)
    for b, bank_rng in enumerate(legit_rng.spawn(num_banks)):
        _legit(bank_rng, world, b, int(sizes[b] - fraud_per_bank[b]), rows)
    frames = _assemble(world_rng, world, rows.concat())
    assert sum(len(df) for df in frames.values()) == transactions  # legit rows fill exactly
    schedule = {
        store.bank_name(b): {
            TYPOLOGIES[k]: STATUS_NAMES[status[b, i]] for i, k in enumerate(FRAUD_TYPES)
        }
        for b in range(num_banks)
    }
    log.debug("generated %d rows over %d banks (seed %d)", transactions, num_banks, seed)
    return frames, schedule


def _bank_sizes(rng: np.random.Generator, n_banks: int, total: int) -> np.ndarray:
    """Log-spaced shares (largest ~7x the smallest) with jitter, a floor, and a random order."""
    logw = np.linspace(0.0, np.log(7.0), n_banks) + rng.normal(0.0, 0.15, n_banks)
    w = np.exp(logw) / np.exp(logw).sum()
    floor = min(0.02, 0.3 / n_banks)
    share = (floor + (1.0 - floor * n_banks) * w)[rng.permutation(n_banks)]
    sizes = np.floor(share * total).astype(np.int64)
    sizes[np.argmax(sizes)] += total - sizes.sum()
    return sizes


def _schedule(rng: np.random.Generator, n_banks: int) -> np.ndarray:
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


def _cum(p: np.ndarray) -> np.ndarray:
    c = np.cumsum(p / p.sum(axis=-1, keepdims=True), axis=-1)
    c[..., -1] = 1.0
    return c


def _pick(rng: np.random.Generator, cum: np.ndarray) -> np.ndarray:
    """Row-wise categorical draw from per-row cumulative probabilities."""
    u = rng.random((len(cum), 1))
    return np.minimum((u > cum).sum(axis=1), cum.shape[1] - 1)


def _draw(rng: np.random.Generator, pool: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    """n entities from a popularity-weighted pool (entities, cumulative weights)."""
    ent, cum = pool
    return ent[np.minimum(np.searchsorted(cum, rng.random(n)), len(ent) - 1)]


def _zipf_pool(rng: np.random.Generator, ent: np.ndarray, a: float = 1.1) -> tuple:
    pop = 1.0 / (rng.permutation(len(ent)) + 1.0) ** a
    return ent, _cum(pop)


def _build_world(rng: np.random.Generator, sizes: np.ndarray) -> _World:
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
    merchants = {m: _zipf_pool(rng, merch_ent[merch_mcc == m]) for m in np.unique(merch_mcc)}
    atms = _zipf_pool(rng, c + n_merch + np.arange(n_atm))
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
    hubs = _zipf_pool(rng, hubs, 1.0)
    kind = rng.random((c, N_CONTACTS))
    contacts = np.where(kind < 0.12, _draw(rng, hubs, c * N_CONTACTS).reshape(c, -1), contacts)
    contacts = np.where(
        (kind >= 0.12) & (kind < 0.3), rng.choice(external, (c, N_CONTACTS)), contacts
    )
    contacts = np.where(
        (kind >= 0.3) & (kind < 0.32), rng.choice(exchanges, (c, N_CONTACTS)), contacts
    )
    return _World(
        sizes=sizes,
        cust_off=cust_off,
        activity=rng.gamma(0.8, 1.0, c),
        mu=mu,
        business=business,
        sigma=rng.uniform(0.4, 0.8, c),
        chan_cum=_cum(_dirichlet_rows(rng, 8 * bank_mix[bank_of])),
        cp_cum=_cum(mcc_taste * MCC_CP),
        cnp_cum=_cum(mcc_taste * MCC_CNP),
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


def _dirichlet_rows(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """One Dirichlet draw per row of `alpha` (vectorized through Gamma variates)."""
    g = rng.gamma(alpha)
    return g / g.sum(axis=1, keepdims=True)


@dataclass
class _Rings:
    """Mule rings running in parallel over the whole range; each replaces its mule accounts
    every couple of weeks (accounts get closed), so a known mule does not stay one forever.
    """

    start: np.ndarray  # (rings,) start of generation 0, hours (<= 0)
    gen_len: np.ndarray  # (rings,) hours a generation of mule accounts is used
    collectors: np.ndarray  # (rings, generations, max collectors) entity index
    n_col: np.ndarray  # (rings,)
    layer2: np.ndarray  # (rings, generations, 2)
    n_l2: np.ndarray  # (rings,)
    pref: np.ndarray  # (banks, rings) cumulative: which rings reach a bank's customers

    def ring_for(self, rng: np.random.Generator, bank: int, n: int) -> np.ndarray:
        """Rings for n victims at `bank`: each bank's customers meet mostly one or two rings."""
        cum = self.pref[bank]
        return np.minimum(np.searchsorted(cum, rng.random(n)), len(cum) - 1)

    def member(
        self, rng: np.random.Generator, ring: np.ndarray, t: np.ndarray, layer: int
    ) -> np.ndarray:
        """A collector (layer 1) or layer-2 mule of each ring, of the generation active at t."""
        mules, count = (self.collectors, self.n_col) if layer == 1 else (self.layer2, self.n_l2)
        gen = ((t - self.start[ring]) // self.gen_len[ring]).astype(np.int64)
        gen = np.clip(gen, 0, mules.shape[1] - 1)
        return mules[ring, gen, (rng.random(len(ring)) * count[ring]).astype(np.int64)]


def _customers(
    rng: np.random.Generator, w: _World, b: int, n: int, weight: np.ndarray | None = None
) -> np.ndarray:
    lo, hi = w.cust_off[b], w.cust_off[b + 1]
    if weight is None:
        return lo + rng.integers(0, hi - lo, n)
    return lo + np.minimum(np.searchsorted(_cum(weight), rng.random(n)), hi - lo - 1)


def _bank_of(w: _World, ent: np.ndarray) -> np.ndarray:
    return np.searchsorted(w.cust_off, ent, side="right") - 1


def _event_times(
    rng: np.random.Generator, n: int, lo: float, hi: float, slope: float
) -> np.ndarray:
    """Stratified event times on [lo, hi) with a linear intensity trend (slope in (-1, 1)).

    Stratifying keeps even a handful of events spread over train and test periods.
    """
    u = (rng.permutation(n) + rng.random(n)) / n
    if abs(slope) > 1e-9:  # inverse CDF of the density 1 + slope * (2u - 1)
        u = (-(1 - slope) + np.sqrt((1 - slope) ** 2 + 4 * slope * u)) / (2 * slope)
    return lo + u * (hi - lo)


def _bursts(rng: np.random.Generator, sizes: np.ndarray, gap_mean: float) -> tuple:
    """Row -> event index and time offset (hours) for events of `sizes` rows with random gaps."""
    ev = np.repeat(np.arange(len(sizes)), sizes)
    first = np.cumsum(sizes) - sizes
    gaps = rng.exponential(gap_mean, len(ev))
    gaps[first[sizes > 0]] = 0.0
    cs = np.cumsum(gaps)
    return ev, cs - cs[first[ev]]


def _stochastic_round(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    return np.floor(x + rng.random(x.shape)).astype(np.int64)


def _fraud(rng: np.random.Generator, w: _World, status: np.ndarray, rows: _Rows) -> None:
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
    events = _stochastic_round(rng, budget[:, None] * weights / local_rows)
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
    rings = _rings(rng, w, status, budget, int(events[:, i_mule].sum()))
    slope = rng.uniform(-0.6, 0.6, status.shape)  # the fraud mix drifts over time

    def times(b: int, i: int, n: int) -> np.ndarray:
        late = status[b, i] == LATE
        lo = LATE_FROM_H if late else 0.0
        return _event_times(rng, n, lo, SPAN_H - 2.0, 0.0 if late else slope[b, i])

    inflows: list[tuple[np.ndarray, ...]] = []
    for b in range(n_banks):
        i = FRAUD_TYPES.index(ATO)
        if events[b, i]:
            inflows.append(_takeover(rng, w, b, times(b, i, events[b, i]), rings, rows))
        i = FRAUD_TYPES.index(MULE)
        if events[b, i] and rings is not None:
            inflows.append(_mule_victims(rng, w, b, times(b, i, events[b, i]), rings, rows))
    if rings is not None and inflows:
        _mule_forwards(rng, w, rings, [np.concatenate(c) for c in zip(*inflows, strict=True)], rows)
    left = np.maximum(0.0, budget - rows.count_per_bank(n_banks))
    rest = [FRAUD_TYPES.index(CARD_TESTING), FRAUD_TYPES.index(STRUCTURING)]
    share = weights[:, rest] / np.maximum(weights[:, rest].sum(axis=1, keepdims=True), 1e-12)
    more = _stochastic_round(rng, left[:, None] * share / local_rows[rest])
    events[:, rest] = np.where(status[:, rest] == ABSENT, 0, np.maximum(more, 1))
    for b in range(n_banks):
        for i, make in zip(rest, (_card_testing, _structuring), strict=True):
            if events[b, i]:
                make(rng, w, b, times(b, i, events[b, i]), rows)
    _cover_splits(rng, w, status, rings, rows)


def _cover_splits(
    rng: np.random.Generator, w: _World, status: np.ndarray, rings: _Rings | None, rows: _Rows
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
                _card_testing(rng, w, b, t0, rows)
            elif k == ATO:
                _takeover(rng, w, b, t0, rings, rows)
            elif k == MULE:
                _mule_victims(rng, w, b, t0, rings, rows)
            else:
                _structuring(rng, w, b, t0, rows)


def _rings(
    rng: np.random.Generator, w: _World, status: np.ndarray, budget: np.ndarray, n_victims: int
) -> _Rings | None:
    """Mule rings whose mules are customers of banks that see mule rings all along.

    Sized so a collector gets a handful of victims in its lifetime whatever the data size;
    mule accounts spread over the home banks in proportion to their fraud budgets.
    """
    homes = np.flatnonzero(status[:, FRAUD_TYPES.index(MULE)] == ALWAYS)
    if len(homes) == 0:
        return None
    n_rings = max(1, round(n_victims / 120))  # ~8 victims per collector account
    gen_len = rng.uniform(10, 20, n_rings) * 24
    start = -rng.uniform(0, 1, n_rings) * gen_len
    n_gen = int(np.ceil((SPAN_H - start) / gen_len).max()) + 1
    n_col = rng.integers(2, 4, n_rings)
    n_l2 = rng.integers(1, 3, n_rings)
    home_cum = _cum(budget[homes])

    def mules(shape: tuple[int, ...]) -> np.ndarray:
        # Systematic sampling keeps the spread close to proportional even for few mules.
        n = int(np.prod(shape))
        u = ((rng.permutation(n) + rng.random(n)) / n).reshape(shape)
        bank = homes[np.minimum(np.searchsorted(home_cum, u), len(homes) - 1)]
        span = w.cust_off[bank + 1] - w.cust_off[bank]
        return w.cust_off[bank] + (rng.random(shape) * span).astype(np.int64)

    pref = _cum(rng.dirichlet(np.full(n_rings, 0.5), len(w.sizes)))
    return _Rings(
        start, gen_len, mules((n_rings, n_gen, 3)), n_col, mules((n_rings, n_gen, 2)), n_l2, pref
    )


def _card_testing(rng: np.random.Generator, w: _World, b: int, t0: np.ndarray, rows: _Rows) -> None:
    """Bursts of tiny online payments at one digital merchant, then maybe one real purchase."""
    e = len(t0)
    victim = _customers(rng, w, b, e, w.activity[w.cust_off[b] : w.cust_off[b + 1]])
    ev, off = _bursts(rng, 2 + rng.poisson(5.0, e), 2.0 / 60)
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
    mcc = rng.choice([_M["electronics"], _M["luxury"]], len(big))
    receiver = np.empty(len(big), dtype=np.int64)
    for m in np.unique(mcc):
        receiver[mcc == m] = _draw(rng, w.merchants[m], int((mcc == m).sum()))
    rows.add(
        bank=b, sender=victim[big], receiver=receiver,
        amount=np.round(rng.lognormal(np.log(350), 0.7, len(big)), 2),
        t=t0[big] + end[big] + rng.uniform(0.5, 6.0, len(big)), channel=CNP, mcc=mcc,
        dev=new_device[big], geo=geo[big], typ=CARD_TESTING,
    )  # fmt: skip


def _takeover(
    rng: np.random.Generator, w: _World, b: int, t0: np.ndarray, rings: _Rings | None, rows: _Rows
) -> tuple[np.ndarray, ...]:
    """A hijacked account: new device, often far away and at night, big transfers to a new payee."""
    e = len(t0)
    victim = _customers(rng, w, b, e, w.activity[w.cust_off[b] : w.cust_off[b + 1]])
    night = rng.random(e) < 0.5
    t0 = np.where(night, np.floor(t0 / 24) * 24 + rng.uniform(0, 5.5, e), t0)
    to_mule = (rng.random(e) < 0.3) & (rings is not None)
    ring = rings.ring_for(rng, b, e) if rings is not None else np.zeros(e, dtype=np.int64)
    payee = rng.choice(w.external, e)
    if rings is not None:
        payee = np.where(to_mule, rings.member(rng, ring, t0, 1), payee)
    ev, off = _bursts(rng, 1 + rng.binomial(2, 0.4, e), 0.25)
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


def _mule_victims(
    rng: np.random.Generator, w: _World, b: int, t0: np.ndarray, rings: _Rings, rows: _Rows
) -> tuple[np.ndarray, ...]:
    """Scam victims pay collector mules of the ring active at the time (from their own device)."""
    e = len(t0)
    victim = _customers(rng, w, b, e)
    t0 = np.floor(t0 / 24) * 24 + (w.peak_h[victim] + rng.normal(0, 2.0, e)) % 24
    ring = rings.ring_for(rng, b, e)
    mule = rings.member(rng, ring, t0, 1)
    ev, off = _bursts(rng, 1 + rng.binomial(2, 0.3, e), 30.0)  # the scam asks again a day later
    n = len(ev)
    amount = np.round(rng.lognormal(np.log(900), 0.9, n), 2)
    t = t0[ev] + off
    rows.add(
        bank=b, sender=victim[ev], receiver=mule[ev], amount=amount, t=t, channel=TRANSFER,
        mcc=MONEY, dev=rng.random(n) < 0.03, geo=rng.exponential(3 * w.geo_scale[victim[ev]]),
        typ=MULE,
    )  # fmt: skip
    return mule[ev], ring[ev], t, amount


def _mule_forwards(
    rng: np.random.Generator, w: _World, rings: _Rings, inflow: list[np.ndarray], rows: _Rows
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
        receiver = np.where(cash, _draw(rng, w.atms, n), receiver)
        receiver = np.where(onward, rings.member(rng, ring, t, 2), receiver)
        amount = np.where(cash, np.maximum(20.0, np.floor(amount / 20) * 20), np.round(amount, 2))
        rows.add(
            bank=_bank_of(w, mule), sender=mule, receiver=receiver, amount=amount, t=t,
            channel=np.where(cash, CASH, TRANSFER), mcc=np.where(cash, UNKNOWN, MONEY),
            dev=rng.random(n) < 0.2, geo=rng.exponential(3 * w.geo_scale[mule]), typ=MULE,
        )  # fmt: skip
        mule, ring, t, amount = receiver[onward], ring[onward], t[onward], amount[onward]


def _structuring(rng: np.random.Generator, w: _World, b: int, t0: np.ndarray, rows: _Rows) -> None:
    """Cash deposits or transfers just under the reporting threshold, several in a day or two."""
    e = len(t0)
    lo, hi = w.cust_off[b], w.cust_off[b + 1]
    sender = _customers(rng, w, b, e, np.exp(w.mu[lo:hi] - w.mu[lo:hi].max()))
    ev, _ = _bursts(rng, 3 + rng.poisson(2.5, e), 1.0)
    n = len(ev)
    cash = (rng.random(e) < 0.6)[ev]
    t = t0[ev] + rng.random(n) * rng.uniform(12, 48, e)[ev]
    t = np.where(cash, np.floor(t / 24) * 24 + rng.uniform(9, 17, n), t)  # branch hours
    amount = rng.uniform(0.9 * THRESHOLD, 0.999 * THRESHOLD, n)
    u = rng.random(n)
    amount = np.where(u < 0.5, np.round(amount, -1), np.where(u < 0.8, np.floor(amount / 100) * 100,
                      np.round(amount, 2)))  # fmt: skip
    receiver = np.where(cash, _draw(rng, w.atms, n), rng.choice(w.external, e)[ev])
    rows.add(
        bank=b, sender=sender[ev], receiver=receiver, amount=amount, t=t,
        channel=np.where(cash, CASH, TRANSFER), mcc=np.where(cash, UNKNOWN, MONEY), dev=False,
        geo=rng.exponential(w.geo_scale[sender[ev]]), typ=STRUCTURING,
    )  # fmt: skip


def _legit_times(rng: np.random.Generator, w: _World, cust: np.ndarray) -> np.ndarray:
    """Days with growth, weekend dip and paydays; hours around each customer's own peak."""
    d = np.arange(DAYS)
    day_w = (1 + 0.12 * d / DAYS) * np.where(d % 7 >= 5, 0.85, 1.0) * np.where(d % 30 < 2, 1.2, 1.0)
    day = np.minimum(np.searchsorted(_cum(day_w), rng.random(len(cust))), DAYS - 1)
    hour = (w.peak_h[cust] + w.hour_sd[cust] * rng.normal(size=len(cust))) % 24
    return day * 24.0 + hour


def _legit(rng: np.random.Generator, w: _World, b: int, n: int, rows: _Rows) -> None:
    """`n` ordinary transactions of bank b's customers, hard negatives included."""
    lo, hi = w.cust_off[b], w.cust_off[b + 1]
    # Gamers' in-app purchase sessions: bursts of small online payments (card-testing look-alike).
    gamers = lo + np.flatnonzero(w.gamer[lo:hi])
    sizes = 2 + rng.poisson(2.5, int(n * 0.004 / 4.5) if len(gamers) else 0)
    sizes = sizes[np.cumsum(sizes) <= n // 2]
    ev, off = _bursts(rng, sizes, 4.0 / 60)
    gamer = rng.choice(gamers, len(sizes)) if len(sizes) else np.zeros(0, dtype=np.int64)
    s_t = _legit_times(rng, w, gamer)[ev] + off
    overrun = np.zeros(len(sizes))
    np.maximum.at(overrun, ev, s_t - (SPAN_H - 0.01))
    s_t -= overrun[ev]  # a session at the very end starts a little earlier instead
    m = len(ev)
    cust = np.concatenate([gamer[ev], _customers(rng, w, b, n - m, w.activity[lo:hi])])
    t = np.concatenate([s_t, _legit_times(rng, w, cust[m:])])
    ch = np.concatenate([np.full(m, CNP), _pick(rng, w.chan_cum[cust[m:]])])
    ch[(ch == CP) & (rng.random(n) < 0.1 * t / SPAN_H)] = CNP  # shopping drifts online
    mcc = np.full(n, UNKNOWN)
    mcc[ch == TRANSFER] = MONEY
    mcc[:m] = DIGITAL
    for c, cum in ((CP, w.cp_cum), (CNP, w.cnp_cum)):
        sel = np.flatnonzero(ch == c)
        sel = sel[sel >= m]
        mcc[sel] = _pick(rng, cum[cust[sel]])
    receiver = np.empty(n, dtype=np.int64)
    for code, pool in w.merchants.items():
        sel = (mcc == code) & ((ch == CP) | (ch == CNP) | (ch == OTHER))
        receiver[sel] = _draw(rng, pool, int(sel.sum()))
    receiver[:m] = _draw(rng, w.merchants[DIGITAL], len(sizes))[ev]  # one game per session
    sel = ch == CASH
    receiver[sel] = _draw(rng, w.atms, int(sel.sum()))
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


def _assemble(rng: np.random.Generator, w: _World, r: dict[str, np.ndarray]) -> dict:
    """Global ids, label noise, per-bank time order and the canonical column types."""
    # Random account ids: an id tells nothing about the kind of account or its bank.
    ids = 10_000_000 + rng.permutation(w.n_entities).astype(np.int64)
    n = len(r["t"])
    typ = r["typ"].astype(np.int8)
    bank = r["bank"].astype(np.int64)
    # Fraud nobody reported, at banks with labels to spare (small banks keep theirs).
    plenty = np.bincount(bank, weights=typ != LEGIT, minlength=len(w.sizes)) >= 50
    typ[(typ != LEGIT) & plenty[bank] & (rng.random(n) < NOISE)] = LEGIT
    tx_id = np.empty(n, dtype=np.int64)
    tx_id[np.argsort(r["t"], kind="stable")] = np.arange(1, n + 1)  # consortium-wide clock
    order = np.lexsort((r["t"], bank))
    bounds = np.concatenate([[0], np.cumsum(np.bincount(bank, minlength=len(w.sizes)))])
    names = np.array(TYPOLOGIES, dtype=object)
    frames = {}
    for b in range(len(w.sizes)):
        idx = order[bounds[b] : bounds[b + 1]]
        frames[store.bank_name(b)] = pd.DataFrame(
            {
                "tx_id": tx_id[idx],
                "bank": store.bank_name(b),
                "sender": ids[r["sender"][idx].astype(np.int64)],
                "receiver": ids[r["receiver"][idx].astype(np.int64)],
                "amount": r["amount"][idx].astype(np.float64),
                "timestamp": r["t"][idx].astype(np.float64),
                "channel": r["channel"][idx].astype(np.int64),
                "mcc": r["mcc"][idx].astype(np.int64),
                "device_new": r["dev"][idx].astype(np.int8),
                "geo_km": r["geo"][idx].astype(np.float64),
                "is_fraud": (typ[idx] != LEGIT).astype(np.int8),
                "typology": names[typ[idx]],
            }
        )
    return frames
