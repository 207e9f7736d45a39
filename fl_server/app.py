"""Flower ServerApp of the consortium operator (`flwr run .` and `fedfraud simulate`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedfraud.config import RunConfig
from fl_server.consortium import operator_roster
from fl_server.federation import Federation, ModelCallback, RoundCallback
from fl_server.journal import RunJournal
from secure_agg import get
from secure_agg.consortium import CONSORTIUM_DIR_KEY

log = logging.getLogger("fedfraud.server")
RESULTS_FILE = "results.json"


GLOBAL_MODEL_FILE = "global_model.payload"


def run_operator(
    grid: Grid,
    config: RunConfig,
    run_config: Mapping[str, Any],
    on_round: RoundCallback | None = None,
    shared_options: Mapping[str, Any] | None = None,
    on_model: ModelCallback | None = None,
) -> dict[str, Any]:
    """Run the federation; write results.json and the selected round's aggregate (the model
    with the best pooled validation PR-AUC, the one scored on test) into config.out_dir,
    with a checkpoint and an audit log entry after every stage (run-config `resume = true`
    continues from the checkpoint).

    The final aggregate stays protected (under CKKS only the banks can open it)."""
    options = {**config.to_run_config(), **dict(run_config), **dict(shared_options or {})}
    if options.get(CONSORTIUM_DIR_KEY):
        # A simulation's consortium (`flwr run --run-config consortium-dir=...`): simulated
        # banks read the policies written for them there (deployed banks never do).
        shared_options = {
            **dict(shared_options or {}),
            CONSORTIUM_DIR_KEY: options[CONSORTIUM_DIR_KEY],
        }
    aggregator = get(config.secure_agg, "server", options)
    journal = None
    if config.out_dir:
        resume = str(run_config.get("resume", False)).lower() in ("1", "true", "yes")
        journal = RunJournal(Path(config.out_dir), config, resume=resume, run=_run_id(grid))
    federation = Federation(
        grid,
        config,
        aggregator,
        on_round=on_round,
        shared_options=shared_options,
        journal=journal,
        on_model=on_model,
        roster=operator_roster(options),
    )
    if journal and (state := journal.open()) is not None:
        federation.state = state
    results = federation.run()
    if journal:
        journal.finish(federation.state)
        results["resumed_after_round"] = journal.resumed_from
    if config.out_dir:
        out = Path(config.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / RESULTS_FILE).write_text(json.dumps(results, indent=2))
        if federation.state.best_model is not None:
            (out / GLOBAL_MODEL_FILE).write_bytes(federation.state.best_model.to_bytes())
    return results


def make_server_app(
    config: RunConfig | None = None,
    on_round: RoundCallback | None = None,
    outcome: dict[str, Any] | None = None,
    shared_options: Mapping[str, Any] | None = None,
    on_model: ModelCallback | None = None,
) -> ServerApp:
    """A ServerApp; `config` overrides the run-config (Flower's run_simulation passes none).
    `outcome` receives the results or the exception, for in-process callers."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = config or RunConfig.from_mapping(context.run_config)
        progress = on_round
        if progress is None and config is None:  # `flwr run`: progress in the streamed log
            _show_progress_log()
            progress = _log_round(cfg)
        try:
            results = run_operator(
                grid, cfg, context.run_config, progress, shared_options, on_model=on_model
            )
        except Exception as exc:
            if outcome is not None:
                outcome["error"] = exc
            raise
        if outcome is not None:
            outcome["results"] = results

    return server_app


def _show_progress_log() -> None:
    # The ServerApp process's root logger is streamed to `flwr run --stream` / `flwr log`.
    logging.getLogger("fedfraud").setLevel(logging.INFO)


def _log_round(config: RunConfig) -> RoundCallback:
    def log_round(record: dict[str, Any]) -> None:
        pr_auc = record.get("metrics", {}).get("pooled", {}).get("pr_auc")
        log.info(
            "round %d/%d: %d bank(s) aggregated, %d failure(s), %.1f s train+aggregate, "
            "%.1f s evaluate, pooled validation PR-AUC %s",
            record["round"],
            config.num_rounds,
            record["num_results"],
            record["num_failures"],
            record["wall_s"],
            record.get("eval_s", 0.0),
            f"{pr_auc:.3f}" if isinstance(pr_auc, float) else "n/a",
        )

    return log_round


app = make_server_app()


def _run_id(grid: Grid) -> str:
    # The Flower run id, as the banks see it in msg.metadata.run_id (names their kept heads).
    try:
        return str(grid.run.run_id)
    except (AttributeError, RuntimeError):  # a stand-in grid in tests
        return ""
