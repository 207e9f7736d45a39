"""Constants of the synthetic consortium: time range, splits, codes, typology budgets, tastes."""

from __future__ import annotations

import numpy as np

from fedfraud.data.schema import CHANNELS, MCC_BUCKETS, TYPOLOGIES

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
MCC_INDEX = {m: MCC_BUCKETS.index(m) for m in MCC_BUCKETS}
UNKNOWN, DIGITAL, MONEY = (MCC_INDEX[m] for m in ("unknown", "digital_goods", "money_transfer"))
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
