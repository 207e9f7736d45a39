"""A bank's privacy ledger: every release of a DP update, persisted as JSON across runs, and the
budget check that makes the bank refuse a round that would spend more than its ε budget.

The ledger stores mechanisms, not ε values, so the total is recomputed by RDP composition over
all runs (tighter than adding ε's, and the same after any restart). Units are kept apart: a
record-level and a bank-level ε protect different things and are each held to the budget.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedfraud.config import RunConfig
from fedfraud.errors import BudgetExceededError, ConfigError
from fedfraud.io import atomic_write
from fedfraud.privacy.accountant import UNITS, Mechanism, describe, epsilons_by_unit

try:  # POSIX: serialise read-check-append across processes of one bank
    import fcntl
except ImportError:  # pragma: no cover - Windows banks run one process per ledger
    fcntl = None  # type: ignore[assignment]

LEDGER_FILE = "privacy-ledger.json"
FORMAT = "fedfraud-privacy-ledger"
VERSION = 1


class LedgerError(BudgetExceededError):
    """The ledger cannot be read or belongs to another bank: the spent budget is unknown, so the
    bank refuses to train exactly as if the budget were exhausted."""


@dataclass(frozen=True)
class Spend:
    """One release: `unit` protected by `mechanism`, in round `round` of run `run`."""

    unit: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    run: str
    round: int
    delta: float
    time: float = 0.0

    @property
    def mechanism(self) -> Mechanism:
        return Mechanism(self.noise_multiplier, self.sample_rate, self.steps)

    @classmethod
    def of(cls, unit: str, mechanism: Mechanism, run: str, round: int, delta: float) -> Spend:
        return cls(
            unit,
            mechanism.noise_multiplier,
            mechanism.sample_rate,
            mechanism.steps,
            run,
            round,
            delta,
            time.time(),
        )


def ledger_path(node_config: Mapping[str, Any], data_path: Path) -> Path:
    """node-config `privacy-ledger`, else `<bank data folder>/privacy-ledger.json`."""
    configured = str(node_config.get("privacy-ledger", "") or "")
    return Path(configured) if configured else Path(data_path) / LEDGER_FILE


def resolve_budget(node_config: Mapping[str, Any], config: RunConfig) -> float | None:
    """The bank's ε budget: the smaller of node-config `privacy-budget` (the bank's own policy)
    and run-config privacy-budget (the consortium's); either party can only tighten it."""
    budgets = [config.privacy_budget] if config.privacy_budget > 0 else []
    if "privacy-budget" in node_config:
        try:
            own = float(node_config["privacy-budget"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"node-config privacy-budget={node_config['privacy-budget']!r} is not a number; "
                "set it to the bank's total ε (e.g. privacy-budget=8)"
            ) from exc
        if not own >= 0:
            raise ConfigError("node-config privacy-budget must be >= 0 (0: no budget)")
        if own > 0:
            budgets.append(own)
    return min(budgets) if budgets else None


class PrivacyLedger:
    """The JSON ledger of one bank; read from disk on every call so processes and restarts agree."""

    def __init__(self, path: Path, bank_id: str) -> None:
        self.path = Path(path)
        self.bank_id = bank_id

    def spends(self) -> list[Spend]:
        """Every release recorded so far (none when the ledger does not exist yet)."""
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") != FORMAT or data.get("version") != VERSION:
                raise ValueError(f"not a {FORMAT} v{VERSION} file")
            spends = [Spend(**entry) for entry in data["entries"]]
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise LedgerError(
                f"{self.bank_id}: privacy ledger {self.path} is unreadable ({exc}); the spent "
                "budget is unknown, so the bank will not train. Restore the file from a backup."
            ) from exc
        if data.get("bank") != self.bank_id:
            raise LedgerError(
                f"{self.bank_id}: privacy ledger {self.path} belongs to {data.get('bank')!r}; "
                "point node-config privacy-ledger at this bank's own ledger"
            )
        bad = [s for s in spends if s.unit not in UNITS or not s.steps >= 0]
        if bad:
            raise LedgerError(f"{self.bank_id}: privacy ledger {self.path} has invalid entries")
        return spends

    def spent(self, delta: float, run: str | None = None) -> dict[str, float]:
        """ε per unit composed over all runs (or only `run`)."""
        spends = [s for s in self.spends() if run is None or s.run == run]
        return epsilons_by_unit(((s.unit, s.mechanism) for s in spends), delta)

    def check(
        self, planned: Sequence[Spend], budget: float | None, delta: float
    ) -> dict[str, float]:
        """ε per unit after `planned`; raises BudgetExceededError if any unit would exceed
        `budget`."""
        before = self.spent(delta)
        spends = self.spends() + list(planned)
        after = epsilons_by_unit(((s.unit, s.mechanism) for s in spends), delta)
        if budget is not None:
            over = {u: e for u, e in after.items() if not e <= budget * (1 + 1e-9)}
            if over:
                raise BudgetExceededError(
                    f"{self.bank_id}: privacy budget ε={budget:g} exhausted: this round would "
                    f"bring {describe(over)} (spent so far: {describe(before)}; ledger "
                    f"{self.path}). The bank stops training; raise privacy-budget only if "
                    "its privacy policy allows it."
                )
        return after

    def charge(
        self, planned: Sequence[Spend], budget: float | None, delta: float
    ) -> dict[str, float]:
        """Check and append `planned` atomically (before the update leaves the bank)."""
        with self._locked():
            after = self.check(planned, budget, delta)
            entries = [asdict(s) for s in self.spends() + list(planned)]
            self._write(
                {"format": FORMAT, "version": VERSION, "bank": self.bank_id, "entries": entries}
            )
        return after

    def _write(self, data: dict[str, Any]) -> None:
        # Write-then-rename: a crash leaves either the old or the new ledger, never half of one.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(data, indent=1).encode())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            yield
            return
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
