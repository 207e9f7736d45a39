"""A bank's policy, pinned at the bank: what it requires before it contributes or reveals.

The operator's run-config says what the operator *wants*; a bank answers only when that is at
least as strong as its own policy (allowed backends and model families, DP floor, minimum
distinct contributors per aggregate, the app bundle's hash) and its DP noise and ledger use the
bank's own δ, budget and minimum-contributor count, never the operator's numbers. The policy
comes from the bank's node-config: `policy-path=FILE` (TOML, `[policy]` table or top level;
relative paths are relative to the file) and/or the same keys directly in the node-config,
which take precedence. See docs/bank-guide.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fedfraud.config import RunConfig, read_toml
from fedfraud.errors import ConfigError, FedfraudError

# The fewest distinct banks any aggregate may combine: with two, each learns the other's update.
MIN_CONTRIBUTORS_FLOOR = 3
POLICY_PATH_KEY = "policy-path"
ALL_BACKENDS = ("ckks", "secagg+", "crypten", "none")
ALL_MODELS = ("mlp", "gnn")


class PolicyRefusal(FedfraudError):
    """The operator asked for something weaker than this bank's policy allows. The reason stays
    in the bank's log; the operator gets a generic error code."""


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class BankPolicy(BaseModel):
    """What one bank enforces on every message, whatever the run-config says."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=_kebab, populate_by_name=True
    )

    bank_id: str = Field(min_length=1)
    roster_path: Path
    identity_path: Path
    # SHA-256 of the roster file's canonical form, compared out of band in the key ceremony.
    roster_fingerprint: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    # Hash of the whole app bundle (`fedfraud app-hash DIR`); unset: the bank does not pin code.
    app_hash: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    allowed_backends: tuple[str, ...] = ("ckks", "secagg+", "crypten")
    allowed_models: tuple[str, ...] = ALL_MODELS
    min_contributors: int = Field(default=MIN_CONTRIBUTORS_FLOOR, ge=MIN_CONTRIBUTORS_FLOOR)
    # Largest ε per run the bank accepts; set: the run must have DP on with dp-epsilon <= it.
    max_epsilon: float | None = Field(default=None, gt=0)
    # Largest δ; the bank always uses min(max-delta, 1 / (10 · its training rows)).
    max_delta: float | None = Field(default=None, gt=0, lt=1)
    # ε budget across runs (the run-config's privacy-budget can only tighten it).
    privacy_budget: float | None = Field(default=None, gt=0)
    # Consortium sketch key (cross-bank=sketch): 32+ secret bytes every bank holds and the
    # operator never does, handed out among the banks out of band. Unset: the bank does not
    # take part in cross-bank sketches.
    sketch_key_path: Path | None = None

    @field_validator("allowed_backends", "allowed_models", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        # node-config values are scalars: "ckks,secagg+" is a list.
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("allowed_backends")
    @classmethod
    def _known_backends(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(ALL_BACKENDS))
        if unknown or not value:
            raise ValueError(f"must name some of {', '.join(ALL_BACKENDS)} (got {value})")
        return value

    @field_validator("allowed_models")
    @classmethod
    def _known_models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or set(value) - set(ALL_MODELS):
            raise ValueError(f"must name some of {', '.join(ALL_MODELS)} (got {value})")
        return value

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: Path | None = None) -> BankPolicy:
        """Validate `values` (kebab- or snake-case keys); relative paths resolve under `base`."""
        values = {_kebab(k): v for k, v in values.items() if _kebab(k) in _KEYS}
        for key in ("roster-path", "identity-path", "sketch-key-path"):
            if key in values and base is not None and not Path(str(values[key])).is_absolute():
                values[key] = Path(base) / str(values[key])
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigError(
                f"bank policy is invalid ({problems}); fix the bank's policy file or node-config "
                "(docs/bank-guide.md)"
            ) from exc

    @classmethod
    def from_file(cls, path: Path, overrides: Mapping[str, Any] | None = None) -> BankPolicy:
        data = read_toml(Path(path), "bank policy")
        section = data.get("policy", data)
        return cls.from_mapping({**section, **dict(overrides or {})}, base=Path(path).parent)

    @classmethod
    def from_node_config(
        cls, node_config: Mapping[str, Any], default_path: Path | None = None
    ) -> BankPolicy:
        """node-config `policy-path` (or `default_path`, which simulations use) plus any policy
        keys set directly in the node-config."""
        direct = {k: v for k, v in node_config.items() if _kebab(k) in _KEYS}
        path = node_config.get(POLICY_PATH_KEY) or default_path
        if path:
            return cls.from_file(Path(str(path)), direct)
        if not {"roster-path", "identity-path"} <= set(direct):
            raise ConfigError(
                "this bank has no policy: set node-config policy-path=FILE (or roster-path, "
                "identity-path and the other policy keys); see docs/bank-guide.md"
            )
        return cls.from_mapping(direct)

    # -- what the bank derives from it -----------------------------------------------------
    def delta(self, num_train: int) -> float:
        """The δ this bank uses: its own cap, and never above 1 / (10 · training rows)."""
        cap = 1.0 / (10.0 * max(1, int(num_train)))
        return min(cap, self.max_delta) if self.max_delta is not None else cap

    def budget(self, config: RunConfig) -> float | None:
        """The ε budget across runs: the bank's, tightened by the run-config's if smaller."""
        budgets = [b for b in (self.privacy_budget, config.privacy_budget or None) if b]
        return min(budgets) if budgets else None

    def check_run(self, config: RunConfig) -> None:
        """Refuse a run-config weaker than this policy (the reason is for the bank's log)."""
        if config.secure_agg not in self.allowed_backends:
            raise PolicyRefusal(
                f"backend {config.secure_agg!r} is not allowed by this bank's policy "
                f"(allowed: {', '.join(self.allowed_backends)})"
            )
        if config.model not in self.allowed_models:
            raise PolicyRefusal(f"model family {config.model!r} is not allowed by the policy")
        if self.max_epsilon is not None and not 0 < config.dp_epsilon <= self.max_epsilon:
            raise PolicyRefusal(
                f"dp-epsilon={config.dp_epsilon:g} is not within this bank's max-epsilon="
                f"{self.max_epsilon:g} (0 = DP off is refused too)"
            )

    def to_toml_dict(self) -> dict[str, Any]:
        """The policy as TOML-ready values (kebab keys, paths as strings, no unset keys)."""
        out = self.model_dump(by_alias=True, exclude_none=True)
        return {
            k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in out.items()
        }


_KEYS = frozenset(_kebab(name) for name in BankPolicy.model_fields)
