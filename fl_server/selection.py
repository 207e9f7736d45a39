"""Model selection on validation rows, and the check that every bank revealed the same pooled
metrics."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from fedfraud.errors import FedfraudError
from fedfraud.metrics import nested_metrics

# Banks decrypt the same aggregate and round it to whole rows: their answers are identical.
AGREEMENT_TOL = 1e-9


class EvaluationError(FedfraudError):
    """The banks' pooled metrics disagree or none came back."""


def validation_pr_auc(record: Mapping[str, Any]) -> float:
    """A round's pooled validation PR-AUC (-inf when undefined, e.g. no fraud in validation)."""
    value = (record.get("metrics") or {}).get("pooled", {}).get("pr_auc")
    if value is None or not math.isfinite(float(value)):
        return -math.inf
    return float(value)


def select_round(rounds: Sequence[Mapping[str, Any]]) -> int:
    """The round with the highest pooled validation PR-AUC (the earliest on a tie; the last
    round when no round has one). Test rows play no part."""
    if not rounds:
        return 0
    scores = [validation_pr_auc(r) for r in rounds]
    best = max(scores)
    if best == -math.inf:
        return int(rounds[-1]["round"])
    return int(rounds[scores.index(best)]["round"])


def agreed_metrics(answers: Mapping[str, Mapping[str, float]], stage: str) -> dict[str, Any]:
    """The pooled metrics every bank answered, or EvaluationError naming who disagrees."""
    if not answers:
        raise EvaluationError(f"{stage}: no bank revealed the pooled metrics")
    banks = sorted(answers)
    reference = dict(answers[banks[0]])
    for bank in banks[1:]:
        other = dict(answers[bank])
        if set(other) != set(reference) or any(
            not _same(reference[k], other[k]) for k in reference
        ):
            raise EvaluationError(
                f"{stage}: {bank} revealed other pooled metrics than {banks[0]}; the aggregate "
                "they decrypted differs (tampered with, or banks use different keys)"
            )
    return nested_metrics(reference)


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= AGREEMENT_TOL
