"""The operator's side of DP accounting: the privacy fields of each round record and the
`privacy` section of results.json.

The operator knows who was in each aggregate (m of n banks), so it reports the bank-level ε of
the noise actually realised, σC·√(m/n), rather than the planned σC. Everything is recomputed
from the round records, so a run resumed from a checkpoint reports the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedfraud.config import RunConfig
from fedfraud.privacy.accountant import (
    BANK,
    RECORD,
    bank_level_epsilons,
    bank_noise_multiplier,
    dp_level,
    protected_unit,
    realised_noise_multiplier,
    uses,
)

LEDGER_PREFIX = "ledger_epsilon_"


def round_privacy(
    config: RunConfig,
    previous_rounds: Sequence[Mapping[str, Any]],
    included: Sequence[str],
    metrics: Mapping[str, Mapping[str, float]],
) -> dict[str, Any]:
    """ "epsilon" per bank (record level when DP-SGD runs, else bank level), plus
    "bank_level_epsilon", the realised noise multiplier and the banks' ledger totals."""
    if not config.dp:
        return {"epsilon": {}}
    out: dict[str, Any] = {
        "epsilon": {b: metrics[b]["epsilon"] for b in included if "epsilon" in metrics[b]}
    }
    if uses(config, BANK):
        sigma = bank_noise_multiplier(config)
        participation = [list(r.get("bank_level_epsilon", {})) for r in previous_rounds]
        participation.append(list(included))
        eps = bank_level_epsilons(participation, sigma, config.num_banks, config.dp_delta)
        out["bank_level_epsilon"] = {b: eps[b] for b in included}
        out["noise_multiplier"] = realised_noise_multiplier(sigma, len(included), config.num_banks)
        if not uses(config, RECORD):
            out["epsilon"] = dict(out["bank_level_epsilon"])
    out["ledger_epsilon"] = {
        b: {
            k[len(LEDGER_PREFIX) :]: v for k, v in metrics[b].items() if k.startswith(LEDGER_PREFIX)
        }
        for b in included
    }
    return out


def _latest(rounds: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    latest: dict[str, Any] = {}
    for record in rounds:
        latest.update(record.get(key, {}))
    return latest


def privacy_summary(
    config: RunConfig, rounds: Sequence[Mapping[str, Any]], halted: Mapping[str, str]
) -> dict[str, Any]:
    """results.json `privacy`: the protected unit, ε per bank after its last round, budgets and
    halted banks."""
    summary: dict[str, Any] = {
        "dp": config.dp,
        "delta": config.dp_delta,
        "level": dp_level(config),
        "unit": protected_unit(config),
        "target_epsilon": config.dp_epsilon if config.dp else None,
        "epsilon_per_bank": _latest(rounds, "epsilon"),
        "budget": config.privacy_budget or None,
        "halted_banks": sorted(halted),
        "halted_reasons": dict(sorted(halted.items())),
    }
    if uses(config, BANK):
        summary["bank_level_epsilon_per_bank"] = _latest(rounds, "bank_level_epsilon")
        summary["bank_noise_multiplier"] = bank_noise_multiplier(config)
        summary["clip"] = config.dp_clip
    if uses(config, RECORD):
        summary["grad_clip"] = config.dp_grad_clip
    if config.dp:
        summary["ledger_epsilon_per_bank"] = _latest(rounds, "ledger_epsilon")
    return summary
