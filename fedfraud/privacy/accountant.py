"""Privacy accounting: ε of a history of (subsampled) Gaussian mechanisms with Opacus' RDP
accountant, σ calibrated to a target ε, and the per-round plans of both DP levels.

Everything here is a pure function of public quantities (noise multiplier, sample rate, steps),
so ε can be recomputed from a persisted history at any time: deterministic and restart-safe.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from fedfraud.config import RunConfig

# Levels name the mechanism; the *_UNIT strings name what each one protects. Record level is
# per-example DP-SGD: it bounds one training row (its feature vector and label), NOT one
# transaction, whose removal also changes later rows' account features (privacy/unit.py).
RECORD = "record"  # DP-SGD inside the bank
BANK = "bank"  # clipped update + distributed noise
UNITS = (RECORD, BANK)
RECORD_UNIT = "training example (one row: its feature vector and label)"
BANK_UNIT = "a bank's whole round update"
PROTECTED_UNITS = {RECORD: RECORD_UNIT, BANK: BANK_UNIT}


@dataclass(frozen=True)
class Mechanism:
    """`steps` compositions of a Gaussian mechanism with noise multiplier z (std / sensitivity),
    each applied to a Poisson sample drawn with probability `sample_rate`."""

    noise_multiplier: float
    sample_rate: float
    steps: int


def epsilon(history: Iterable[Mechanism], delta: float) -> float:
    """ε at `delta` of the composition of `history` (Opacus RDPAccountant); inf without noise."""
    merged: dict[tuple[float, float], int] = {}
    for m in history:
        if m.steps <= 0:
            continue
        if m.noise_multiplier <= 0:
            return math.inf
        key = (float(m.noise_multiplier), float(m.sample_rate))
        merged[key] = merged.get(key, 0) + int(m.steps)
    if not merged:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [(z, q, steps) for (z, q), steps in merged.items()]
    with warnings.catch_warnings():
        # Opacus warns when the best RDP order is at the edge of its grid (very large or small
        # ε); the bound it returns is still valid, only not the tightest.
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta=delta))


@lru_cache(maxsize=256)
def calibrate(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier (to 0.5 % of ε) whose `steps` steps spend at most
    `target_epsilon` (Opacus `get_noise_multiplier`, RDP)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant="rdp",
                epsilon_tolerance=0.005 * target_epsilon,
            )
        )


def dp_level(config: RunConfig) -> str:
    """ "off", "record", "bank" or "both" (resolving "auto": MLP -> record, GNN -> bank)."""
    if not config.dp:
        return "off"
    if config.dp_level != "auto":
        return config.dp_level
    return RECORD if config.model == "mlp" else BANK


def protected_unit(config: RunConfig) -> str | list[str] | None:
    """results.json `privacy.unit`: what the run's ε is about (both units for "both", None off)."""
    level = dp_level(config)
    if level == "off":
        return None
    if level == "both":
        return [RECORD_UNIT, BANK_UNIT]
    return PROTECTED_UNITS[level]


def uses(config: RunConfig, unit: str) -> bool:
    """Whether the run's DP level includes the mechanism protecting `unit`."""
    return dp_level(config) in (unit, "both")


# -- record level: DP-SGD over a bank's training rows --------------------------------------
def batches_per_epoch(num_train: int, batch_size: int) -> int:
    """Batches of the bank's DataLoader; Opacus samples each row with rate 1 / this."""
    return max(1, math.ceil(num_train / batch_size))


def record_mechanism(config: RunConfig, num_train: int) -> Mechanism:
    """DP-SGD of one round: local_epochs x batches Poisson-sampled steps, σ calibrated so the
    planned num_rounds spend exactly the target ε (accounting counts every planned step, also
    the rare empty Poisson batch training skips, which can only overstate ε)."""
    batches = batches_per_epoch(num_train, config.batch_size)
    q = 1.0 / batches
    steps = config.local_epochs * batches
    z = calibrate(config.dp_epsilon, config.dp_delta, q, config.num_rounds * steps)
    return Mechanism(z, q, steps)


# -- bank level: clipped update + distributed Gaussian noise -------------------------------
def bank_noise_multiplier(config: RunConfig) -> float:
    """σ of the distributed mechanism (each of n = num_banks banks adds std σC/√n).

    The sum of m banks carries σC·√(m/n), and the operator aggregates any m >= min_banks, so σ
    is calibrated for the worst case m = min_banks: num_rounds releases with noise multiplier
    σ·√(min_banks/n) (sensitivity C, every bank in every round, so no sampling) spend exactly
    the target ε. With more banks in a round the realised ε is lower, and it is reported as
    such; setting min-banks = num-banks buys less noise at the price of stopping on a dropout.
    A bank can therefore charge its ledger without knowing how many others will be summed."""
    z = calibrate(config.dp_epsilon, config.dp_delta, 1.0, config.num_rounds)
    return z * math.sqrt(config.num_banks / config.min_banks)


def realised_noise_multiplier(sigma: float, included: int, expected: int) -> float:
    """Each bank adds std σC/√n; with m of n banks in the sum it carries σC·√(m/n)."""
    return sigma * math.sqrt(included / expected)


def bank_level_epsilons(
    participation: Sequence[Sequence[str]], sigma: float, expected: int, delta: float
) -> dict[str, float]:
    """ε per bank of its rounds so far, from who was in each round's aggregate (m = its size)."""
    history: dict[str, list[Mechanism]] = {}
    for included in participation:
        z = realised_noise_multiplier(sigma, len(included), expected)
        for bank in included:
            history.setdefault(bank, []).append(Mechanism(z, 1.0, 1))
    return {bank: epsilon(h, delta) for bank, h in sorted(history.items())}


def epsilons_by_unit(history: Iterable[tuple[str, Mechanism]], delta: float) -> dict[str, float]:
    """ε per unit of a history of (unit, mechanism) pairs (units are never composed together)."""
    per_unit: dict[str, list[Mechanism]] = {}
    for unit, mechanism in history:
        per_unit.setdefault(unit, []).append(mechanism)
    return {unit: epsilon(ms, delta) for unit, ms in per_unit.items()}


def describe(epsilons: Mapping[str, float]) -> str:
    """'record ε=1.23, bank ε=4.56' for messages."""
    return ", ".join(f"{unit} ε={eps:.3g}" for unit, eps in sorted(epsilons.items())) or "ε=0"
