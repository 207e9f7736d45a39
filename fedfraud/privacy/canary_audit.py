"""Empirical privacy audit with canaries: what an attacker holding the released model learns
about rows a bank trained on, next to the ε the bank accounted.

Canaries: m legitimate rows the canary bank did not train on (its validation and test rows),
relabelled as fraud — mislabelled rows are what a model memorises, since nothing else in the
data supports their label. Each is inserted into the bank's training split independently with
probability 1/2. The consortium then trains as the run did (same config, every bank's own DP
code path: `BankRound` plans, privatizes and charges a scratch ledger) with FedAvg in process;
secure aggregation is left out because its aggregate equals plaintext FedAvg (tests/fl).
The attack scores each canary by the released model's fraud logit (a loss-threshold attack:
for a fraud label the loss is decreasing in the logit) and reports TPR at 0.1 % FPR, the
advantage, and the one-run ε lower bound of Steinke, Nasr & Jagielski 2023 (`one_run`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedfraud.config import RunConfig
from fedfraud.data.features import TRAIN, BankTable
from fedfraud.data.scaling import Scaler, moment_weight, stats_update
from fedfraud.errors import ConfigError
from fedfraud.privacy.accountant import BANK, bank_level_epsilons, bank_noise_multiplier, uses
from fedfraud.privacy.dp import BankRound
from fedfraud.privacy.membership import LOW_FPR, advantage, null_advantage, tpr_at_fpr
from fedfraud.privacy.one_run import one_run_audit
from fedfraud.train import (
    ModelInputs,
    build_model,
    class_weight,
    get_weights,
    make_inputs,
    set_weights,
    train_local,
)

log = logging.getLogger("fedfraud.privacy")


def pooled_scaler(tables: Mapping[str, BankTable]) -> Scaler:
    """The scaler the stats stage reveals (moments and fraud rate, weighted by training rows)."""
    total = sum(moment_weight(t) for t in tables.values())
    parts = [(moment_weight(t), stats_update(t)) for t in tables.values()]
    return Scaler.from_moments(
        [sum(w * p[i] for w, p in parts) / total for i in range(len(parts[0][1]))]
    )


def draw_canaries(
    inputs: ModelInputs, m: int, rng: np.random.Generator
) -> tuple[torch.Tensor, np.ndarray]:
    """m non-training legitimate rows of the bank (features), and which ones are included."""
    pool = torch.nonzero((inputs.split != TRAIN) & (inputs.y == 0)).squeeze(1).numpy()
    if len(pool) < m:
        raise ConfigError(
            f"the canary bank has only {len(pool)} legitimate non-training rows; ask for "
            f"--canaries {len(pool)} or fewer"
        )
    rows = rng.choice(pool, size=m, replace=False)
    return inputs.x[torch.from_numpy(rows)], rng.random(m) < 0.5


def with_canaries(inputs: ModelInputs, canaries: torch.Tensor, included: np.ndarray):
    """The bank's inputs with the included canaries appended as fraud-labelled training rows."""
    chosen = canaries[torch.from_numpy(included)]
    k = len(chosen)
    return replace(
        inputs,
        x=torch.cat([inputs.x, chosen]),
        y=torch.cat([inputs.y, torch.ones(k)]),
        split=torch.cat([inputs.split, torch.full((k,), TRAIN, dtype=inputs.split.dtype)]),
    )


def train_consortium(
    config: RunConfig,
    banks: Mapping[str, ModelInputs],
    template: BankTable,
    fraud_rate: float | None,
    scratch: Path,
) -> tuple[torch.nn.Module, dict[str, float]]:
    """FedAvg over `banks` for config.num_rounds, each bank through BankRound exactly as its
    train handler does (`template` gives the feature sizes); returns the last round's model and
    the ε each bank accounted. A run keeps its validation-selected round instead; every round's
    model is covered by the same accounted ε, and the last has trained on the canaries most."""
    model = build_model(config, template, fraud_rate)
    weights = get_weights(model)
    epsilons: dict[str, float] = {}
    for rnd in range(1, config.num_rounds + 1):
        sent = []
        for bank, inputs in banks.items():
            local = build_model(config, template, fraud_rate)
            set_weights(local, weights)
            node = {"privacy-ledger": str(scratch / f"{bank}.json")}
            dp = BankRound.start(
                config,
                node,
                scratch,
                bank,
                "audit",
                rnd,
                inputs.num(TRAIN),
                class_weight=class_weight(inputs),
            )
            train_local(
                local, inputs, config, seed=config.seed * 1000 + rnd, privatizer=dp.privatizer
            )
            sent.append(dp.release(weights, get_weights(local), float(inputs.num(TRAIN))))
            if "epsilon" in dp.metrics():
                epsilons[bank] = dp.metrics()["epsilon"]
        total = sum(w for _, w in sent)
        weights = [
            (sum(w * np.asarray(u[i], np.float64) for u, w in sent) / total).astype(np.float32)
            for i in range(len(weights))
        ]
    if config.dp and uses(config, BANK) and not epsilons:
        rounds = [list(banks)] * config.num_rounds
        sigma = bank_noise_multiplier(config)
        epsilons = bank_level_epsilons(rounds, sigma, config.num_banks, config.dp_delta)
    set_weights(model, weights)
    return model, epsilons


def canary_audit(
    config: RunConfig,
    tables: Mapping[str, BankTable],
    canaries: int = 500,
    bank: str | None = None,
    seed: int = 0,
    significance: float = 0.05,
) -> dict[str, Any]:
    """Train the consortium with canaries in `bank` (default: the largest) and attack them."""
    if config.model != "mlp":
        raise ConfigError(
            "privacy-audit inserts canary rows into a bank's feature table, which the MLP "
            "trains on row by row; audit an MLP run (the GNN's rows are edges of a graph)"
        )
    rng = np.random.default_rng(seed)
    scaler = pooled_scaler(tables)
    inputs = {name: make_inputs("mlp", t, scaler) for name, t in tables.items()}
    bank = bank or max(inputs, key=lambda b: inputs[b].num(TRAIN))
    if bank not in inputs:
        raise ConfigError(f"--bank {bank} is not one of {', '.join(inputs)}")
    points, included = draw_canaries(inputs[bank], canaries, rng)
    inputs[bank] = with_canaries(inputs[bank], points, included)
    with tempfile.TemporaryDirectory(prefix="fedfraud-audit-") as scratch:
        model, epsilons = train_consortium(
            config, inputs, tables[bank], scaler.fraud_rate, Path(scratch)
        )
    model.eval()
    with torch.no_grad():
        scores = model(points).numpy().astype(np.float64)
    one_run = one_run_audit(scores, included, config.dp_delta, significance)
    log.info("canary audit of %s: %s", bank, one_run)
    return {
        "attack": "loss threshold on mislabelled canaries (score: released model's fraud logit)",
        "canary_bank": bank,
        "canaries": int(canaries),
        "members": int(included.sum()),
        "dp": config.dp,
        "accounted_epsilon": epsilons.get(bank) if config.dp else None,
        "delta": config.dp_delta,
        "tpr_at_0.1pct_fpr": tpr_at_fpr(scores, included, LOW_FPR),
        "advantage": advantage(scores, included),
        "advantage_null_95": null_advantage(included),
        "one_run": one_run.to_dict(),
        "empirical_epsilon_lower_bound": one_run.epsilon_lower_bound,
        "seed": seed,
    }
