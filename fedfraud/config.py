"""One typed run configuration, built from Flower run-config, CLI flags or a TOML file."""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedfraud.errors import ConfigError

MODELS = ("mlp", "gnn")
GNN_CONVS = ("sage", "gcn")
DATA_FORMATS = ("synthetic", "csv", "parquet", "paysim", "ulb", "txgraph", "banks")
PARTITIONS = ("iid", "dirichlet")
# What DP protects (docs/privacy.md): "record" = Opacus DP-SGD in the bank (MLP only), "bank" =
# clipped update + distributed Gaussian noise, "both", or "auto" (MLP: record, GNN: bank).
DP_LEVELS = ("auto", "record", "bank", "both")
# Cross-bank signals (docs/cross-bank.md): "sketch" adds a secure account-sketch stage and its
# features; "sketch+psi" also matches alerts privately (not wired into the federation yet).
CROSS_BANK = ("off", "sketch", "sketch+psi")


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's contents, or a ConfigError naming `what` and the problem."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} not found; check the path.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from exc


@dataclass(frozen=True)
class RunConfig:
    """Everything a federated run needs; field names map to run-config keys with '-' for '_'."""

    num_banks: int = 5
    num_rounds: int = 10
    model: str = "mlp"
    gnn_conv: str = "sage"
    hidden: int = 64
    local_epochs: int = 1
    batch_size: int = 1024
    lr: float = 3e-3
    secure_agg: str = "none"
    dp_epsilon: float = 0.0  # 0 disables differential privacy
    dp_delta: float = 1e-5
    dp_clip: float = 1.0  # L2 bound C on a bank's update (bank-level DP)
    dp_grad_clip: float = 1.0  # per-example gradient bound of DP-SGD (record-level DP)
    dp_level: str = "auto"
    privacy_budget: float = 0.0  # per-bank ε budget across runs (0: none; node-config may tighten)
    # Fewest banks in any aggregate; never below 3 (with two, each learns the other's update).
    min_banks: int = 3
    # Early stopping: stop after this many rounds without a better pooled validation PR-AUC
    # (0: run every round). The best validation round's model is kept either way.
    patience: int = 3
    round_timeout: float = 600.0  # seconds to wait for banks in one round
    seed: int = 0
    data_dir: str = ""
    out_dir: str = ""
    keys_dir: str = ""
    # Data preparation (used by `simulate` before federation starts).
    data_format: str = "synthetic"
    data_path: str = ""
    mapping: str = ""
    partition: str = "dirichlet"
    dirichlet_alpha: float = 0.5
    transactions: int = 200_000
    # Simulation engine only: CPUs reserved per simulated bank (banks training at once =
    # machine CPUs / client_cpus; fractions let more banks share a core).
    client_cpus: float = 1.0
    # Cross-bank account sketches (fedfraud/crossbank/sketch.py): the same shape at every bank.
    cross_bank: str = "off"
    sketch_width: int = 2048  # cells per hash row (error e/width of a window's mass)
    sketch_depth: int = 2  # hash rows (failure probability exp(-depth))
    sketch_windows: int = 32  # time windows from hour 0; later rows fall into the last one
    sketch_window_h: float = 72.0  # hours per window

    def __post_init__(self) -> None:
        _check(self.num_banks >= 1, "num-banks must be at least 1")
        _check(self.num_rounds >= 1, "num-rounds must be at least 1")
        _check(self.model in MODELS, f"model must be one of {', '.join(MODELS)}")
        _check(self.gnn_conv in GNN_CONVS, f"gnn-conv must be one of {', '.join(GNN_CONVS)}")
        _check(self.hidden >= 4, "hidden must be at least 4")
        _check(self.local_epochs >= 1, "local-epochs must be at least 1")
        _check(self.batch_size >= 8, "batch-size must be at least 8")
        _check(0 < self.lr < 10, "lr must be in (0, 10)")
        _check(
            math.isfinite(self.dp_epsilon) and self.dp_epsilon >= 0,
            f"dp-epsilon must be a finite number >= 0 (0 disables DP), got {self.dp_epsilon}",
        )
        _check(0 < self.dp_delta < 1, "dp-delta must be in (0, 1)")
        _check(self.dp_clip > 0, "dp-clip must be positive")
        _check(self.dp_grad_clip > 0, "dp-grad-clip must be positive")
        _check(self.dp_level in DP_LEVELS, f"dp-level must be one of {', '.join(DP_LEVELS)}")
        _check(
            not (self.model == "gnn" and self.dp_level in ("record", "both")),
            "dp-level record/both runs DP-SGD, which message passing breaks; use dp-level bank "
            "(or auto) for the GNN (see docs/privacy.md)",
        )
        _check(self.privacy_budget >= 0, "privacy-budget must be >= 0 (0: no budget)")
        _check(
            self.min_banks >= 3,
            "min-banks must be at least 3: with two banks in an aggregate each learns the "
            "other's exact update",
        )
        _check(self.patience >= 0, "patience must be >= 0 (0 disables early stopping)")
        _check(self.round_timeout > 0, "round-timeout must be positive")
        _check(self.seed >= 0, f"seed must be 0 or more, got {self.seed}")
        _check(
            self.min_banks <= self.num_banks,
            f"{_plural(self.num_banks, 'bank')} is too few: every round needs at least "
            f"min-banks={self.min_banks} banks; pass --banks {self.min_banks} or more "
            "(min-banks itself is set in a --config file)",
        )
        _check(self.data_format in DATA_FORMATS, f"format must be one of {', '.join(DATA_FORMATS)}")
        _check(self.partition in PARTITIONS, f"partition must be one of {', '.join(PARTITIONS)}")
        _check(self.dirichlet_alpha > 0, "dirichlet-alpha must be positive")
        _check(self.transactions >= 100, "transactions must be at least 100")
        _check(self.client_cpus > 0, "client-cpus must be positive (e.g. 1 or 0.5)")
        _check(
            not self.mapping or self.data_format not in ("synthetic", "banks"),
            f"--mapping applies to a CSV/Parquet file (--data FILE), not to {self.data_format} "
            "data; drop --mapping or pass --data FILE",
        )
        _check(
            self.cross_bank in CROSS_BANK,
            f"cross-bank must be one of {', '.join(CROSS_BANK)} (got {self.cross_bank!r})",
        )
        _check(
            self.cross_bank != "sketch+psi",
            "cross-bank=sketch+psi: private alert matching is not wired into the federation "
            "yet (fedfraud/crossbank/psi.py is the library only); use cross-bank=sketch",
        )
        self.sketch_spec()  # raises ConfigError on a bad sketch shape

    def sketch_spec(self):
        """The consortium sketch's shape (fedfraud.crossbank.sketch.SketchSpec)."""
        from fedfraud.crossbank.sketch import SketchSpec

        return SketchSpec(
            window_h=self.sketch_window_h,
            windows=self.sketch_windows,
            depth=self.sketch_depth,
            width=self.sketch_width,
        )

    @property
    def dp(self) -> bool:
        """Whether differential privacy is on."""
        return self.dp_epsilon > 0

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_run_config(self) -> dict[str, int | float | str]:
        """Flat run-config for Flower (hyphenated keys, scalar values)."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (underscored keys), as written to results.json."""
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build from run-config/TOML keys (hyphens or underscores); unknown keys are ignored
        so the Flower app can carry settings of other components beside ours."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                continue
            kwargs[name] = _coerce(name, value, type(getattr(cls(), name)))
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: Path, overrides: Mapping[str, Any] | None = None) -> RunConfig:
        """Read `[fedfraud]` (or the top level) of a TOML file, then apply `overrides`."""
        data = read_toml(path, "config file")
        section = data.get("fedfraud", data)
        unknown = [k for k in section if k.replace("-", "_") not in {f.name for f in fields(cls)}]
        if unknown:
            raise ConfigError(f"config file {path}: unknown key(s) {', '.join(sorted(unknown))}")
        return cls.from_mapping({**section, **(overrides or {})})


_BOOL_WORDS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_KIND_WORDS = {int: "a whole number", float: "a finite number", str: "text", bool: "true or false"}


def _coerce(name: str, value: Any, kind: type) -> Any:
    """`value` as `kind`, strictly: 1.5 is not an int, true is not a number, inf is not a
    setting. Strings (Flower node-config, CLI) are parsed; anything else is a ConfigError."""
    key = name.replace("_", "-")
    wrong = ConfigError(f"{key} must be {_KIND_WORDS.get(kind, kind.__name__)}, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower() if isinstance(value, str | int) else None
        if word not in _BOOL_WORDS:
            raise wrong
        return _BOOL_WORDS[word]
    if kind is str:
        if isinstance(value, str | os.PathLike):
            return str(value)
        raise wrong
    if isinstance(value, bool):
        raise wrong
    if isinstance(value, str):
        try:
            value = float(value.strip()) if kind is float else int(value.strip())
        except ValueError:
            raise wrong from None
    if not isinstance(value, int | float):
        raise wrong
    if not math.isfinite(value):
        hint = " (0 disables DP)" if key == "dp-epsilon" else ""
        raise ConfigError(f"{key} must be a finite number{hint}, got {value!r}")
    if kind is int:
        if float(value) != int(value):
            raise wrong
        return int(value)
    return float(value)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
