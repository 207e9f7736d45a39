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

Modules: constants, sampling (random-draw helpers), world (banks and accounts), schedule (which
bank sees which typology), rings (mule rings), typologies (fraud events), fraud (budgets and
timing), legit (ordinary rows), assemble (per-bank frames), consortium (the entry points).
"""

from fedfraud.data.synth.consortium import check_args, generate_consortium, write_consortium
from fedfraud.data.synth.constants import (
    ABSENT,
    ALWAYS,
    ATO,
    CARD_TESTING,
    DAYS,
    FRAUD_TYPES,
    LATE,
    LATE_FROM_H,
    LEGIT,
    MAX_BANKS,
    MIN_TX_PER_BANK,
    MULE,
    NOISE,
    SPAN_H,
    STATUS_NAMES,
    STRUCTURING,
    TEST_FROM_H,
    THRESHOLD,
    TRAIN_END_H,
)

__all__ = [
    "ABSENT",
    "ALWAYS",
    "ATO",
    "CARD_TESTING",
    "DAYS",
    "FRAUD_TYPES",
    "LATE",
    "LATE_FROM_H",
    "LEGIT",
    "MAX_BANKS",
    "MIN_TX_PER_BANK",
    "MULE",
    "NOISE",
    "SPAN_H",
    "STATUS_NAMES",
    "STRUCTURING",
    "TEST_FROM_H",
    "THRESHOLD",
    "TRAIN_END_H",
    "check_args",
    "generate_consortium",
    "write_consortium",
]
