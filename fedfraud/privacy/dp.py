"""The DP mechanisms a bank applies, and `BankRound`, which applies them to one training round.

Record level (MLP): Opacus DP-SGD through train_local's `privatizer` hook — Poisson sampling,
per-example clipping to dp-grad-clip, Gaussian noise with a calibrated multiplier.
Bank level (any model): the update delta = new - global is clipped to L2 norm C = dp-clip and
each bank adds N(0, (σC)²/n) with n = num-banks, so the secure sum of all n banks carries σC
while no single party adds or sees all of it. See docs/privacy.md for the reasoning.
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader

from fedfraud.config import RunConfig
from fedfraud.errors import BudgetExceededError
from fedfraud.privacy.accountant import (
    BANK,
    RECORD,
    Mechanism,
    bank_noise_multiplier,
    dp_level,
    epsilon,
    realised_noise_multiplier,
    record_mechanism,
    uses,
)
from fedfraud.privacy.budget import PrivacyLedger, Spend, ledger_path, resolve_budget
from fedfraud.train import Privatizer

# FedAvg weight of every bank under bank-level DP. Uniform, so one bank's size cannot scale its
# contribution (and sensitivity); its value cancels in the mean and only sets the precision of
# fixed-point/CKKS encodings, whose absolute error shrinks as 1 / total weight (1.0 loses ~1e-4
# under our CKKS parameters, 1024 ~1e-7, far below CKKS's 2^24 bound on |weight x value|).
UNIFORM_WEIGHT = 1024.0

# Opacus hooks fire this on the first layer (inputs need no grad); it is expected, not a fault.
warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)


def secure_seed(bits: int = 128) -> int:
    """A seed from the OS CSPRNG, so neither the operator nor other banks can predict noise."""
    return secrets.randbits(bits)


def make_privatizer(mechanism: Mechanism, max_grad_norm: float, seed: int | None = None):
    """A train_local privatizer running Opacus DP-SGD with `mechanism`'s noise multiplier.

    Opacus' own secure_mode needs torchcsprng (unmaintained, no wheels for our torch), so the
    noise and the Poisson sampler use torch generators seeded from `secrets` instead; `seed` is
    for tests only (reproducible noise is known noise)."""

    def privatize(
        model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader
    ) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader]:
        noise_seed = secure_seed(63) if seed is None else seed
        sample_seed = secure_seed(63) if seed is None else seed + 1
        # The Poisson sample must be secret too (amplification by sampling assumes it), so the
        # loader's seeded shuffle generator is replaced before Opacus copies it.
        loader = DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            generator=torch.Generator().manual_seed(sample_seed),
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant="rdp")
        model, optimizer, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=mechanism.noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            noise_generator=torch.Generator().manual_seed(noise_seed),
        )
        rate = loader.batch_sampler.sample_rate
        if not math.isclose(rate, mechanism.sample_rate, rel_tol=1e-12):
            raise RuntimeError(f"Opacus samples at {rate}, accounting assumed {mechanism}")
        return model, optimizer, loader

    return privatize


def clip_update(delta: Sequence[np.ndarray], bound: float) -> tuple[list[np.ndarray], float]:
    """Scale `delta` (float64) to L2 norm at most `bound`; returns it and its original norm."""
    delta = [np.asarray(d, dtype=np.float64) for d in delta]
    norm = math.sqrt(sum(float(np.square(d).sum()) for d in delta))
    factor = min(1.0, bound / norm) if norm > 0 else 1.0
    return [d * factor for d in delta], norm


def noise_generator(seed: int | None = None) -> np.random.Generator:
    """numpy generator seeded from the OS CSPRNG; a fixed `seed` is for tests only."""
    return np.random.Generator(np.random.PCG64(secure_seed() if seed is None else seed))


def privatize_update(
    start: Sequence[np.ndarray],
    new: Sequence[np.ndarray],
    clip: float,
    noise_multiplier: float,
    num_banks: int,
    seed: int | None = None,
) -> list[np.ndarray]:
    """start + clip(new - start, C) + N(0, (σC)²/n): one bank's share of distributed DP.

    Only floating-point tensors carry the update; any other buffer keeps its start value."""
    floats = [np.issubdtype(np.asarray(s).dtype, np.floating) for s in start]
    delta = [
        np.asarray(n, np.float64) - np.asarray(s, np.float64)
        for s, n, f in zip(start, new, floats, strict=True)
        if f
    ]
    clipped, _ = clip_update(delta, clip)
    std = noise_multiplier * clip / math.sqrt(num_banks)
    rng = noise_generator(seed)
    out, parts = [], iter(clipped)
    for s, f in zip(start, floats, strict=True):
        if not f:
            out.append(np.array(s, copy=True))
            continue
        d = next(parts)
        noisy = np.asarray(s, np.float64) + d + rng.normal(0.0, std, size=d.shape)
        out.append(noisy.astype(np.asarray(s).dtype))
    return out


@dataclass
class BankRound:
    """DP for one bank's training round: refuses up front when the budget would be exceeded,
    privatizes training and the update, and charges the ledger before the update leaves."""

    config: RunConfig
    bank_id: str
    run: str
    round: int
    level: str = "off"
    ledger: PrivacyLedger | None = None
    budget: float | None = None
    record: Mechanism | None = None
    bank_sigma: float | None = None
    seed: int | None = None  # tests only
    class_weight: float = 1.0
    spent: dict[str, float] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        config: RunConfig,
        node_config: Mapping[str, Any],
        data_path: Path,
        bank_id: str,
        run: str,
        rnd: int,
        num_train: int,
        seed: int | None = None,
        *,
        delta: float | None = None,
        budget: float | None = None,
        min_contributors: int | None = None,
        class_weight: float = 1.0,
    ) -> BankRound:
        """Plan the round; raises BudgetExceededError if it would exceed the bank's budget.

        `delta`, `budget` and `min_contributors` come from the bank's own policy: with them the
        mechanisms and the ledger use the bank's δ, and each bank's share of distributed noise
        assumes only `min_contributors` banks in the sum, whatever the run-config says.
        `class_weight` is the fraud rows' loss weight (train.class_weight): DP-SGD clips at
        dp-grad-clip x class_weight, see `grad_clip`."""
        if delta is not None or min_contributors is not None:
            m = min_contributors or config.min_banks
            config = config.replace(dp_delta=delta or config.dp_delta, num_banks=m, min_banks=m)
        level = dp_level(config)
        budget = budget if budget is not None else resolve_budget(node_config, config)
        if level == "off":
            if budget is not None:
                raise BudgetExceededError(
                    f"{bank_id}: this bank has a privacy budget (ε={budget:g}) but the run has "
                    "DP off, which spends an unbounded ε; the operator must set dp-epsilon"
                )
            return cls(config, bank_id, run, rnd)
        this = cls(
            config,
            bank_id,
            run,
            rnd,
            level=level,
            ledger=PrivacyLedger(ledger_path(node_config, data_path), bank_id),
            budget=budget,
            record=record_mechanism(config, num_train) if uses(config, RECORD) else None,
            bank_sigma=bank_noise_multiplier(config) if uses(config, BANK) else None,
            seed=seed,
            class_weight=float(class_weight),
        )
        this.ledger.check(this.planned(), budget, config.dp_delta)
        return this

    @property
    def privatizer(self) -> Privatizer | None:
        """DP-SGD for train_local, or None when record-level DP is off."""
        if self.record is None:
            return None
        return make_privatizer(self.record, self.grad_clip, self.seed)

    @property
    def grad_clip(self) -> float:
        """DP-SGD's per-example bound: dp-grad-clip in units of an unweighted example's gradient.

        The loss weights fraud rows by w = class_weight before Opacus clips; with a bound of
        dp-grad-clip alone, clipping cut the weighted fraud gradients (norms 15-45 against ~1
        for a legitimate row) back to the bound and undid the class weight entirely. Clipping at
        w x dp-grad-clip is per-class clipping (a fraud row may contribute w times as much as a
        legitimate one); the sensitivity is the larger bound, and Opacus calibrates its noise
        std to it (z x bound), so the accounting is unchanged."""
        return self.config.dp_grad_clip * self.class_weight

    def planned(self) -> list[Spend]:
        """What this round releases. The bank-level entry assumes the fewest banks the operator
        aggregates (min-banks): the bank cannot see how many others will be in the sum, so it
        charges the least noise its update can end up under (the operator reports the true ε,
        from the m banks actually summed)."""
        spends = []
        if self.record is not None:
            spends.append(Spend.of(RECORD, self.record, self.run, self.round, self.delta))
        if self.bank_sigma is not None:
            cfg = self.config
            z = realised_noise_multiplier(self.bank_sigma, cfg.min_banks, cfg.num_banks)
            spends.append(Spend.of(BANK, Mechanism(z, 1.0, 1), self.run, self.round, self.delta))
        return spends

    @property
    def delta(self) -> float:
        return self.config.dp_delta

    def release(
        self, start: Sequence[np.ndarray], new: Sequence[np.ndarray], weight: float
    ) -> tuple[list[np.ndarray], float]:
        """The weights and FedAvg weight to send. Under bank-level DP: the clipped, noised model
        with UNIFORM_WEIGHT (sample counts would let a bank's size scale its sensitivity).
        The ledger is charged first, so nothing leaves unaccounted."""
        if self.ledger is None:
            return list(new), weight
        self.spent = self.ledger.charge(self.planned(), self.budget, self.delta)
        if self.bank_sigma is None:
            return list(new), weight
        cfg = self.config
        noisy = privatize_update(
            start, new, cfg.dp_clip, self.bank_sigma, cfg.num_banks, seed=self.seed
        )
        return noisy, UNIFORM_WEIGHT

    def metrics(self) -> dict[str, float]:
        """What the operator may learn: ε of this run (record level) and the ledger totals.

        The run's ε is the larger of what the ledger holds for this run id (counts a round
        sent twice) and `round` planned rounds (a run resumed from a checkpoint gets a new
        Flower run id); both are upper bounds when the bank trained in every round."""
        if self.ledger is None:
            return {}
        out = {f"ledger_epsilon_{unit}": eps for unit, eps in self.spent.items()}
        if self.record is not None:
            this_run = self.ledger.spent(self.delta, run=self.run).get(RECORD, 0.0)
            planned = epsilon([self.record] * self.round, self.delta)
            out["epsilon"] = max(this_run, planned)
        return out
