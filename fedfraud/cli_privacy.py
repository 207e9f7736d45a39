"""`fedfraud privacy-audit RUN`: retrain a finished run's consortium with canaries and attack
the released model (fedfraud/privacy/canary_audit.py); results go to RUN/results.json
`privacy.audit` and a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fedfraud.errors import ConfigError

console = Console()


def load_run(run_dir: Path) -> tuple[dict[str, Any], Path]:
    """results.json of a run folder and its path, or a ConfigError naming the fix."""
    path = Path(run_dir) / "results.json"
    try:
        return json.loads(path.read_text()), path
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path} not found; pass a folder written by `fedfraud simulate`"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); rerun `fedfraud simulate`") from exc


def audit_run(
    run_dir: Path, canaries: int, bank: str | None, seed: int, significance: float
) -> dict[str, Any]:
    """Audit the run in `run_dir` and store the result under results.json privacy.audit."""
    from fedfraud.config import RunConfig
    from fedfraud.data.features import build_bank_table
    from fedfraud.data.store import list_banks, read_bank
    from fedfraud.privacy.canary_audit import canary_audit

    results, path = load_run(run_dir)
    if "config" not in results:
        raise ConfigError(f"{path} has no config; pass a folder written by `fedfraud simulate`")
    config = RunConfig.from_mapping(results["config"])
    data_dir = Path(config.data_dir)
    tables = {b: build_bank_table(read_bank(data_dir / b), b) for b in list_banks(data_dir)}
    audit = canary_audit(config, tables, canaries, bank, seed, significance)
    results.setdefault("privacy", {})["audit"] = audit
    path.write_text(json.dumps(results, indent=2))
    return audit


def privacy_audit(
    run: Annotated[Path, typer.Argument(help="Run folder written by `fedfraud simulate`.")],
    canaries: Annotated[
        int, typer.Option(min=20, help="Canary rows (each in with p = 1/2).")
    ] = 500,
    bank: Annotated[str | None, typer.Option(help="Bank that holds the canaries.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the canary draw.")] = 0,
    significance: Annotated[float, typer.Option(help="Level of the ε lower bound.")] = 0.05,
) -> None:
    """Membership-inference audit: train the run's consortium again with canaries, attack the
    released model, and set the empirical ε lower bound next to the accounted ε."""
    if not 0 < significance < 1:
        raise ConfigError("--significance must be in (0, 1), e.g. 0.05")
    with console.status(f"training {run}'s consortium with {canaries} canaries"):
        audit = audit_run(run, canaries, bank, seed, significance)
    table = Table(title=f"privacy audit of {run} (canaries in {audit['canary_bank']})")
    for col in ("DP", "accounted ε", "empirical ε ≥", "advantage (noise floor)", "TPR@0.1%FPR"):
        table.add_column(col, justify="right")
    eps = audit["accounted_epsilon"]
    table.add_row(
        "on" if audit["dp"] else "off",
        "∞" if eps is None else f"{eps:.3g}",
        f"{audit['empirical_epsilon_lower_bound']:.3g}",
        f"{audit['advantage']:.3f} ({audit['advantage_null_95']:.3f})",
        f"{audit['tpr_at_0.1pct_fpr']:.3f}",
    )
    console.print(table)
    console.print(f"wrote privacy.audit into {Path(run) / 'results.json'}")
