"""`fedfraud simulate`: a whole consortium on one machine with Flower's simulation engine."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedfraud import round_messages as rm
from fedfraud.baselines import centralized, centralized_same_features, local_only
from fedfraud.config import RunConfig
from fedfraud.crossbank.features import cross_bank_scaler
from fedfraud.data.features import TEST, TRAIN, VAL, BankTable, build_bank_table
from fedfraud.data.scaling import Scaler, moment_weight, stats_update
from fedfraud.data.schema import has_accounts, require_fraud
from fedfraud.data.store import MANIFEST_FILE, list_banks, read_bank
from fedfraud.errors import ConfigError, DataError, FedfraudError
from fedfraud.io import atomic_write_text
from fedfraud.metrics import (
    ScoreCounts,
    binned_metrics,
    json_safe,
    pooled_metrics,
    score_metrics,
    sum_counts,
)
from fedfraud.privacy import LEDGER_FILE, RECORD, PrivacyLedger, uses
from fedfraud.privacy.accountant import epsilons_by_unit, protected_unit
from fedfraud.privacy.unit import privacy_unit_analysis
from fedfraud.rings import bank_rings
from fedfraud.run_model import save_run_model
from fedfraud.train import build_model, make_inputs, predict, set_weights, weight_shapes
from fl_server.app import GLOBAL_MODEL_FILE, RESULTS_FILE
from secure_agg import (
    Payload,
    SecureAggregator,
    StageContext,
    available,
    get,
    provision,
    validate,
)
from secure_agg.consortium import CONSORTIUM_DIR_KEY, provision_consortium
from secure_agg.roster import IDENTITY_FILE, ROSTER_FILE
from simulations.crossbank import research_view

log = logging.getLogger("fedfraud.simulate")
Progress = Callable[[str, dict[str, Any]], None]  # (event, details)


# Rough peak memory per simulated transaction (frames, features, graph, baselines' copies),
# used only to refuse sizes no run on this machine could finish.
BYTES_PER_TRANSACTION = 2_000


def machine_cpus() -> int:
    """CPUs the simulation engine (Ray) will see; cgroup limits included where Ray knows them."""
    try:
        from ray._private.utils import get_num_cpus

        return int(get_num_cpus())
    except Exception:  # ray moved its helper: the OS's view is the next best
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )


def check_resources(config: RunConfig) -> None:
    """Refuse, before anything is written, what this machine cannot run: Ray would otherwise
    wait forever for a CPU share that never frees up ("ActorPool is empty")."""
    cpus = machine_cpus()
    if config.client_cpus > cpus:
        raise ConfigError(
            f"client-cpus {config.client_cpus:g} is more than this machine's {cpus} CPU(s); "
            f"use at most {cpus} (e.g. --client-cpus 1, or 0.5 for two banks per core)"
        )
    if config.data_format == "synthetic" and not config.data_dir:
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return
        if config.transactions * BYTES_PER_TRANSACTION > memory:
            most = memory // BYTES_PER_TRANSACTION
            raise ConfigError(
                f"{config.transactions:,} transactions need more memory than this machine's "
                f"{memory / 2**30:.0f} GiB; use --transactions {most:,} or fewer"
            )


def prepare_data(config: RunConfig, run_dir: Path) -> Path:
    """Make or find the consortium's bank folders; return their parent directory."""
    if config.data_format == "synthetic":
        data_dir = Path(config.data_dir) if config.data_dir else run_dir / "data"
        if not (data_dir / MANIFEST_FILE).exists():
            from fedfraud.data.synth import write_consortium

            write_consortium(data_dir, config.num_banks, config.transactions, config.seed)
        return data_dir
    if not config.data_path:
        raise ConfigError(f"--format {config.data_format} needs --data PATH")
    if config.data_format == "banks":
        return Path(config.data_path)
    from fedfraud.data.partition import prepare_banks

    data_dir = run_dir / "data"
    prepare_banks(
        Path(config.data_path),
        data_dir,
        config.data_format,
        Path(config.mapping) if config.mapping else None,
        config.num_banks,
        config.partition,
        config.dirichlet_alpha,
        config.seed,
    )
    return data_dir


def load_banks(
    config: RunConfig, data_dir: Path
) -> tuple[dict[str, pd.DataFrame], dict[str, BankTable]]:
    """Read and check every bank up front, so bad data fails here with a clear message
    instead of inside a simulated node."""
    names = list_banks(data_dir)
    if len(names) != config.num_banks:
        raise DataError(
            f"{data_dir} holds {len(names)} banks but --banks is {config.num_banks}; "
            f"pass --banks {len(names)} or another data folder"
        )
    frames, tables = {}, {}
    for name in names:
        frame = read_bank(data_dir / name)
        if config.model == "gnn" and not has_accounts(frame):
            raise DataError(
                f"{name}: the GNN needs sender and receiver account ids, which this data "
                "lacks (e.g. the ULB card dataset); use --model mlp or map those columns"
            )
        table = build_bank_table(frame, name, with_graph=config.model == "gnn")
        require_fraud(table.y[table.mask(TRAIN)], f"{data_dir / name}")
        frames[name], tables[name] = frame, table
    return frames, tables


def split_warnings(tables: Mapping[str, BankTable]) -> list[str]:
    """Banks whose validation or test split holds no fraud: their rows still count (as legit)
    in the pooled metrics, but their own figures are undefined. Said before federation starts."""
    warnings = []
    for name, table in tables.items():
        for split, label in ((VAL, "validation"), (TEST, "test")):
            if table.y[table.mask(split)].sum() == 0:
                warnings.append(
                    f"{name} has no fraud in its {label} split (the "
                    f"{'last' if split == TEST else 'second-to-last'} part of its time range): "
                    "its rows count as legit in the pooled metrics and its own "
                    f"{label} figures are undefined"
                )
    return warnings


def run_federation(
    config: RunConfig,
    shared_options: dict[str, Any],
    progress: Progress | None = None,
    round_models: dict[int, Payload] | None = None,
) -> dict[str, Any]:
    """Run the Flower ServerApp + ClientApps in the simulation engine; return results.
    `round_models` receives each round's protected aggregate (for the research analysis)."""
    from flwr.simulation import run_simulation

    from fl_client.app import app as client_app
    from fl_server.app import make_server_app

    outcome: dict[str, Any] = {}
    server_app = make_server_app(
        config,
        on_round=(lambda r: progress("round", r)) if progress else None,
        outcome=outcome,
        shared_options=shared_options,
        on_model=round_models.__setitem__ if round_models is not None else None,
    )
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=config.num_banks,
        backend_config={
            # Default one CPU per simulated bank: on 2 cores, two banks train at a time.
            "client_resources": {"num_cpus": config.client_cpus, "num_gpus": 0.0},
            "init_args": {"logging_level": logging.ERROR, "log_to_driver": False},
        },
    )
    if "error" in outcome:
        raise outcome["error"]
    if "results" not in outcome:
        raise FedfraudError("the simulation ended without results; run with -v to see the log")
    return outcome["results"]


def provision_banks(config: RunConfig, keys_dir: Path, banks: list[str]) -> Path:
    """Roster, identities and one pinned policy per simulated bank (secure_agg/consortium.py):
    each bank allows exactly this run's backend and model, pins the code this process runs,
    and holds the run's DP settings as its own floor."""
    from fl_client.bundle import running_app_hash

    return provision_consortium(
        keys_dir / "consortium",
        banks,
        allowed_backends=[config.secure_agg],
        allowed_models=[config.model],
        min_contributors=config.min_banks,
        max_epsilon=config.dp_epsilon if config.dp else None,
        max_delta=config.dp_delta,
        privacy_budget=config.privacy_budget or None,
        app_hash=running_app_hash(),
    )


def bank_options(config: RunConfig, shared_options: Mapping[str, Any], bank: str) -> dict:
    """Backend options of simulated `bank`, as its ClientApp builds them: the run-config, its
    roster identity (from the consortium the runner or a test provisioned) and the keys."""
    options = {**config.to_run_config(), **shared_options}
    if options.get("roster-path"):
        consortium = Path(str(options["roster-path"])).parent
    elif options.get(CONSORTIUM_DIR_KEY):
        consortium = Path(str(options[CONSORTIUM_DIR_KEY]))
    else:
        return options
    roster = {"roster-path": str(consortium / ROSTER_FILE)}
    return {**options, **roster, "identity-path": str(consortium / bank / IDENTITY_FILE)}


def open_round_model(
    agg: SecureAggregator,
    results: Mapping[str, Any],
    bank: str,
    payload: Payload,
    rnd: int,
    shapes: list[tuple[int, ...]],
) -> list[np.ndarray]:
    """Open training round `rnd`'s aggregate as simulated `bank` opens it (`agg` built from
    `bank_options`): masked CKKS needs the round's stage, its run label and participants."""
    (record,) = [r for r in results["rounds"] if int(r["round"]) == rnd]
    stage = StageContext(
        str(results.get("run_label", "")),
        rnd,
        rm.TRAIN_STAGE,
        tuple(record.get("participants", ())),
        bank,
    )
    return agg.client_reveal(payload, shapes, context=stage)


def ledger_epsilons(
    config: RunConfig, results: dict[str, Any], data_dir: Path, banks: list[str]
) -> None:
    """Per-bank ε for results.json, read from the banks' own ledgers (banks no longer send ε
    to the operator): per round, this run's record-level ε and each ledger's total so far."""
    if not config.dp:
        return
    label = results.get("run_label")
    latest: dict[str, float] = {}
    totals: dict[str, dict[str, float]] = {}
    for bank in banks:
        spends = PrivacyLedger(data_dir / bank / LEDGER_FILE, bank).spends()
        earlier = [s for s in spends if s.run != label]
        mine = [s for s in spends if s.run == label]
        for record in results["rounds"]:
            upto = [s for s in mine if s.round <= record["round"]]
            if not upto:
                continue
            delta = upto[-1].delta
            total = epsilons_by_unit(((s.unit, s.mechanism) for s in earlier + upto), delta)
            record.setdefault("ledger_epsilon", {})[bank] = total
            totals[bank] = total
            if uses(config, RECORD):
                run_eps = epsilons_by_unit(((s.unit, s.mechanism) for s in upto), delta)
                record.setdefault("epsilon", {})[bank] = run_eps[RECORD]
                latest[bank] = run_eps[RECORD]
    privacy = results.setdefault("privacy", {})
    if latest:
        privacy["epsilon_per_bank"] = latest
    privacy["ledger_epsilon_per_bank"] = totals


def analyse_final_model(
    config: RunConfig,
    out_dir: Path,
    shared_options: dict[str, Any],
    tables: dict[str, BankTable],
    round_models: Mapping[int, Payload],
    results: Mapping[str, Any],
    cross: Mapping[str, BankTable] | None = None,
) -> dict[str, Any]:
    """Researcher-side view of the federated model, only possible because a simulation holds
    all banks' keys: the per-bank tables a deployed bank keeps to itself (selected model), the
    exact (unbinned) pooled metrics beside the binned ones, the pooled test PR-AUC of every
    round's model (to check the validation-selected round against the best in hindsight) and
    the GNN's flagged account groups."""
    bank = next(iter(tables))
    agg = get(config.secure_agg, "client", bank_options(config, shared_options, bank))
    # Same pooled moments the banks computed through secure aggregation.
    total = sum(moment_weight(t) for t in tables.values())
    per_bank = [(moment_weight(t), stats_update(t)) for t in tables.values()]
    moments = [sum(w * m[i] for w, m in per_bank) / total for i in range(len(per_bank[0][1]))]
    scaler = Scaler.from_moments(moments)
    if cross:  # the banks' tables with their cross-bank columns (same values, clear sketch)
        tables = dict(cross)
        scaler = cross_bank_scaler(scaler, tables[bank])
    first = tables[bank]
    model = build_model(config, first)
    inputs = {name: make_inputs(config.model, t, scaler) for name, t in tables.items()}

    def scored(payload: Payload, rnd: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        set_weights(model, open_round_model(agg, results, bank, payload, rnd, weight_shapes(model)))
        return {name: predict(model, inputs[name], TEST) for name in tables}

    by_round = {}
    for rnd, payload in sorted(round_models.items()):
        counts = [ScoreCounts.of(y, s) for y, s in scored(payload, rnd).values()]
        by_round[str(rnd)] = pooled_metrics(sum_counts(counts))["pr_auc"]
    selected = scored(
        Payload.from_bytes((out_dir / GLOBAL_MODEL_FILE).read_bytes()),
        int(results["final"]["selected_round"]),
    )
    out: dict[str, Any] = {"per_bank": {}, "test_pr_auc_by_round": by_round}
    for name, (y, s) in selected.items():
        table = tables[name]
        typology = table.typology[table.mask(TEST)] if table.typology is not None else None
        out["per_bank"][name] = binned_metrics(y, s, typology)
    y = np.concatenate([v[0] for v in selected.values()])
    s = np.concatenate([v[1] for v in selected.values()])
    # The same rows in the clear: binned as the banks bin (must equal final.pooled) and exact.
    counts = [
        ScoreCounts.of(
            *v, tables[n].typology[tables[n].mask(TEST)] if tables[n].typology is not None else None
        )
        for n, v in selected.items()
    ]
    out["binned_pooled"] = pooled_metrics(sum_counts(counts))
    out["exact_pooled"] = score_metrics(y, s)
    if config.model == "gnn":  # flagged groups of accounts per bank (fedfraud/rings.py)
        out["fraud_rings"] = {n: bank_rings(model, inputs[n], t) for n, t in tables.items()}
    save_run_model(out_dir, model, config, first, scaler)  # for score / serve / explain
    return out


def simulate(
    config: RunConfig,
    out_dir: Path,
    baselines: bool = True,
    progress: Progress | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Prepare data, run the federation and the baselines, write results.json and report.md.
    `options` are the backend's run-config keys (e.g. secagg-num-shares), checked up front."""
    if config.secure_agg not in available():
        raise ConfigError(
            f"unknown secure aggregation backend '{config.secure_agg}'; choose one of: "
            f"{', '.join(available())}"
        )
    options = dict(options or {})
    validate(config.secure_agg, {**config.to_run_config(), **options})
    check_resources(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data_dir = prepare_data(config, out_dir)
    config = config.replace(data_dir=str(data_dir.resolve()), out_dir=str(out_dir.resolve()))
    frames, tables = load_banks(config, data_dir)
    warnings = split_warnings(tables)
    if progress:  # the CLI prints them
        progress("data", {"banks": {n: len(f) for n, f in frames.items()}, "warnings": warnings})
    else:
        for warning in warnings:
            log.warning(warning)
    round_models: dict[int, Payload] = {}
    with tempfile.TemporaryDirectory(prefix="fedfraud-keys-") as keys_dir:
        shared = {**provision(config.secure_agg, Path(keys_dir), config.num_banks), **options}
        shared[CONSORTIUM_DIR_KEY] = str(provision_banks(config, Path(keys_dir), list(tables)))
        cross = research_view(config, frames, tables, Path(shared[CONSORTIUM_DIR_KEY]))
        results = run_federation(config, shared, progress, round_models)
        ledger_epsilons(config, results, data_dir, list(tables))
        results["analysis"] = analyse_final_model(
            config, out_dir, shared, tables, round_models, results, cross and cross.tables
        )
        if cross:
            results["analysis"]["cross_bank"] = cross.summary
        if config.dp:  # research side: measuring it reads a bank's rows
            results["analysis"]["privacy_unit"] = privacy_unit_analysis(
                protected_unit(config), frames
            )
    if baselines:
        if progress:
            progress("baselines", {})
        results["baselines"] = {
            "local_only": local_only(config, tables),
            "centralized": centralized(config, frames, cross and cross.features),
            "centralized_same_features": centralized_same_features(
                config, cross.tables if cross else tables
            ),
        }
    results["timing"]["simulate_total_s"] = time.perf_counter() - start
    results["data"] = (
        json.loads((data_dir / MANIFEST_FILE).read_text())
        if (data_dir / MANIFEST_FILE).exists()
        else {"banks": list(frames)}
    )
    results["data"]["path"] = str(config.data_path or data_dir)
    results["data"]["format"] = config.data_format
    results["data"]["warnings"] = warnings
    results = json_safe(results)
    atomic_write_text(out_dir / RESULTS_FILE, json.dumps(results, indent=2))
    from simulations.report import write_report

    write_report(results, out_dir)
    return results
