"""Differential privacy for the banks: DP-SGD and distributed DP (dp.py), RDP accounting and
σ calibration (accountant.py), and the per-bank ε ledger that enforces budgets (budget.py)."""

from fedfraud.privacy.accountant import (
    BANK,
    RECORD,
    Mechanism,
    bank_level_epsilons,
    bank_noise_multiplier,
    calibrate,
    dp_level,
    epsilon,
    record_mechanism,
    uses,
)
from fedfraud.privacy.budget import LEDGER_FILE, LedgerError, PrivacyLedger, Spend
from fedfraud.privacy.dp import (
    UNIFORM_WEIGHT,
    BankRound,
    clip_update,
    make_privatizer,
    privatize_update,
)

__all__ = [
    "BANK",
    "LEDGER_FILE",
    "RECORD",
    "UNIFORM_WEIGHT",
    "BankRound",
    "LedgerError",
    "Mechanism",
    "PrivacyLedger",
    "Spend",
    "bank_level_epsilons",
    "bank_noise_multiplier",
    "calibrate",
    "clip_update",
    "dp_level",
    "epsilon",
    "make_privatizer",
    "privatize_update",
    "record_mechanism",
    "uses",
]
