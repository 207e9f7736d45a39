"""`fedfraud sweep CONFIG.toml`: a grid of simulations and one comparison of privacy, utility, cost.

The TOML file holds the base run in `[fedfraud]` (any RunConfig key) and the grid in `[sweep]`:
every RunConfig key given a list there is an axis (typically secure-agg, dp-epsilon, model,
num-banks). Other `[sweep]` keys: `out` (folder, overridden by --out), `baselines` (local-only and
centralized per cell; default true) and `options` (backend options, as --secure-agg-option).
Each cell is one `simulations.runner.simulate` run in OUT/cells/NAME; a cell whose results.json
exists is skipped, so an interrupted sweep resumes where it stopped. With --mlflow-uri each
finished cell is also logged as one MLflow run (fedfraud/tracking.py). Synthetic cells with the same
bank count share one generated consortium (OUT/data/...). Writes OUT/summary.csv, summary.md,
sweep.json and report.html (plots inline).
"""

from __future__ import annotations

import csv
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedfraud.config import RunConfig, read_toml
from fedfraud.errors import ConfigError, FedfraudError

SWEEP_KEYS = ("out", "baselines", "options")
Progress = Callable[[str, dict[str, Any]], None]
Track = Callable[["Cell", Path], Any]  # log one finished cell, e.g. to MLflow


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its folder name, the axis values and the resolved config."""

    name: str
    axes: dict[str, Any]
    config: RunConfig


@dataclass(frozen=True)
class Sweep:
    cells: list[Cell]
    out: Path
    baselines: bool
    options: dict[str, str]


def _cell_name(axes: dict[str, Any]) -> str:
    parts = []
    for key, value in axes.items():
        if key == "dp_epsilon":
            parts.append(f"eps{value:g}" if value else "nodp")
        elif key == "num_banks":
            parts.append(f"{value}banks")
        elif key in ("model", "secure_agg"):
            parts.append(str(value).replace("+", "plus"))
        else:
            parts.append(f"{key.replace('_', '-')}{value}")
    return "-".join(parts) or "base"


def load_sweep(path: Path, out: Path | None = None) -> Sweep:
    """Read and validate the whole grid up front: a bad cell fails before any cell runs."""
    from secure_agg import available, validate

    doc = read_toml(path, "sweep file")
    base = doc.get("fedfraud", {})
    grid = doc.get("sweep")
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: add a [sweep] table with list-valued axes, e.g. model = [...]")
    known = {f.name for f in fields(RunConfig)}
    unknown = [k for k in [*base, *grid] if k.replace("-", "_") not in known | set(SWEEP_KEYS)]
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    axes = {k.replace("-", "_"): v for k, v in grid.items() if k not in SWEEP_KEYS}
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: [sweep] {key.replace('_', '-')} must be a non-empty list")
    options = {str(k): str(v) for k, v in (grid.get("options") or {}).items()}
    cells = []
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo, strict=True))
        try:
            config = RunConfig.from_mapping({**base, **values})
        except ConfigError as exc:
            raise ConfigError(f"{path}: cell {_cell_name(values)}: {exc}") from exc
        if config.secure_agg not in available():
            raise ConfigError(
                f"{path}: unknown secure aggregation backend '{config.secure_agg}'; choose one "
                f"of: {', '.join(available())}"
            )
        validate(config.secure_agg, {**config.to_run_config(), **options})
        cells.append(Cell(_cell_name(values), values, config))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: the grid repeats a cell; remove duplicate axis values")
    folder = out or Path(grid.get("out") or Path("runs") / Path(path).stem)
    return Sweep(cells, Path(folder), bool(grid.get("baselines", True)), options)


def _shared_data(sweep: Sweep, cell: Cell) -> RunConfig:
    """Synthetic cells of the same size and seed generate their consortium once."""
    cfg = cell.config
    if cfg.data_format != "synthetic" or cfg.data_dir:
        return cfg
    data = sweep.out / "data" / f"{cfg.num_banks}banks-{cfg.transactions}tx-seed{cfg.seed}"
    return cfg.replace(data_dir=str(data))


def run_sweep(
    sweep: Sweep,
    progress: Progress | None = None,
    simulate: Callable[..., Any] | None = None,
    track: Track | None = None,
) -> list[dict[str, Any]]:
    """Run the cells not finished yet; return one summary row per cell (failed ones too).
    `track(cell, run_dir)` is called for each finished cell, resumed ones included (it skips
    those already tracked); after its first FedfraudError it is not called again and the row
    of each cell left untracked carries `tracking_error`."""
    if simulate is None:
        from simulations.runner import simulate
    sweep.out.mkdir(parents=True, exist_ok=True)
    status: dict[str, dict[str, Any]] = {}
    tracking_error = ""
    for i, cell in enumerate(sweep.cells, start=1):
        run_dir = sweep.out / "cells" / cell.name
        info = {"cell": cell.name, "index": i, "total": len(sweep.cells)}
        if load_results(run_dir) is not None:
            status[cell.name] = {"status": "done (resumed)"}
            if progress:
                progress("skip", info)
            tracking_error = _track(track, cell, run_dir, status[cell.name], tracking_error)
            continue
        if progress:
            progress("start", info)
        start = time.perf_counter()
        try:
            simulate(
                _shared_data(sweep, cell),
                run_dir,
                baselines=sweep.baselines,
                options=sweep.options,
            )
            status[cell.name] = {"status": "done", "wall_s": time.perf_counter() - start}
        except FedfraudError as exc:
            status[cell.name] = {"status": "failed", "error": str(exc)}
        else:
            tracking_error = _track(track, cell, run_dir, status[cell.name], tracking_error)
        if progress:
            progress("end", {**info, **status[cell.name]})
    rows = [summary(cell, load_results(sweep.out / "cells" / cell.name)) for cell in sweep.cells]
    for row in rows:
        row["status"] = status[row["cell"]]["status"]
        if "tracking_error" in status[row["cell"]]:
            row["tracking_error"] = status[row["cell"]]["tracking_error"]
    (sweep.out / "sweep.json").write_text(
        json.dumps({"cells": {c.name: {**c.axes, **status[c.name]} for c in sweep.cells}}, indent=1)
    )
    return rows


def _track(
    track: Track | None, cell: Cell, run_dir: Path, status: dict[str, Any], error: str
) -> str:
    """Track one finished cell unless tracking is off or already failed; return the error."""
    if track is None:
        return error
    if not error:
        try:
            track(cell, run_dir)
            return ""
        except FedfraudError as exc:
            error = str(exc)
    status["tracking_error"] = error
    return error


def mlflow_tracker(uri: str, experiment: str, sweep_name: str) -> Track:
    """A `track` for run_sweep: each finished cell becomes one MLflow run tagged with the sweep
    and cell names, once (a cell's mlflow.json says where it was logged)."""
    from fedfraud.tracking import client, log_run, logged_to

    client(uri)  # a bad URI or missing mlflow fails before any cell runs

    def track(cell: Cell, run_dir: Path) -> None:
        if logged_to(run_dir, uri, experiment) is None:
            tags = {"fedfraud.sweep": sweep_name, "fedfraud.cell": cell.name}
            log_run(run_dir, uri, experiment, run_name=cell.name, tags=tags)

    return track


def load_results(run_dir: Path) -> dict[str, Any] | None:
    """A finished cell's results.json, or None (missing or cut short by a crash)."""
    try:
        return json.loads((run_dir / "results.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def summary(cell: Cell, results: dict[str, Any] | None) -> dict[str, Any]:
    """One comparison row: the axes, utility, privacy spent and cost."""
    cfg = cell.config
    row: dict[str, Any] = {
        "cell": cell.name,
        "model": cfg.model,
        "secure_agg": cfg.secure_agg,
        "dp_epsilon": cfg.dp_epsilon,
        "num_banks": cfg.num_banks,
    }
    if results is None:
        return row
    rounds = results.get("rounds", [])
    final = results.get("final", {}).get("pooled", {})
    base = results.get("baselines", {})
    eps = results.get("privacy", {}).get("epsilon_per_bank") or {}
    plain = sum(r.get("bytes_plain", 0) for r in rounds)
    up = sum(r.get("bytes_up", 0) for r in rounds)
    row.update(
        {
            "epsilon_spent": max(eps.values()) if eps else None,
            "pr_auc": final.get("pr_auc"),
            "roc_auc": final.get("roc_auc"),
            "recall_at_1pct_fpr": final.get("recall_at_1pct_fpr"),
            "selected_round": results.get("final", {}).get("selected_round"),
            "local_only_pr_auc": base.get("local_only", {}).get("pooled", {}).get("pr_auc"),
            "centralized_pr_auc": base.get("centralized", {}).get("pooled", {}).get("pr_auc"),
            "mean_round_s": results.get("timing", {}).get("mean_round_s"),
            "mean_aggregate_s": _mean([r.get("aggregate_s") for r in rounds]),
            "bytes_up_per_round": up / len(rounds) if rounds else None,
            "upload_x_fp32": up / plain if plain else None,
            "rounds": [r["round"] for r in rounds],
            # Pooled validation PR-AUC (what the selection sees).
            "pr_auc_per_round": [
                r.get("metrics", {}).get("pooled", {}).get("pr_auc") for r in rounds
            ],
        }
    )
    return row


def _mean(values: list[Any]) -> float | None:
    nums = [v for v in values if isinstance(v, int | float)]
    return sum(nums) / len(nums) if nums else None


TABLE_COLUMNS = (
    ("cell", "cell", None),
    ("model", "model", None),
    ("secure_agg", "secure agg", None),
    ("dp_epsilon", "target ε", "g"),
    ("epsilon_spent", "ε spent", ".2f"),
    ("num_banks", "banks", None),
    ("pr_auc", "PR-AUC", ".3f"),
    ("recall_at_1pct_fpr", "recall@1%FPR", ".3f"),
    ("local_only_pr_auc", "local-only PR-AUC", ".3f"),
    ("centralized_pr_auc", "centralized PR-AUC", ".3f"),
    ("mean_round_s", "round s", ".2f"),
    ("bytes_up_per_round", "MB up/round", "mb"),
    ("upload_x_fp32", "×fp32", ".2f"),
    ("status", "status", None),
)


def _cell_text(value: Any, fmt: str | None) -> str:
    if value is None:
        return "–"
    if fmt == "mb":
        return f"{value / 1e6:.2f}"
    if fmt == "g":
        return f"{value:g}" if value else "off"
    return format(value, fmt) if fmt and isinstance(value, int | float) else str(value)


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The comparison table as display strings."""
    return [{title: _cell_text(r.get(k), f) for k, title, f in TABLE_COLUMNS} for r in rows]


def write_tables(rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """summary.md (display) and summary.csv (raw numbers, one row per cell)."""
    from simulations.report import markdown_table

    md = out / "summary.md"
    md.write_text(markdown_table(table_rows(rows)) + "\n")
    path = out / "summary.csv"
    keys = [k for k, _, _ in TABLE_COLUMNS] + ["roc_auc", "mean_aggregate_s"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return md, path
