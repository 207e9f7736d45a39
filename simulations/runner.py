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

from fedfraud.baselines import centralized, centralized_same_features, local_only
from fedfraud.config import RunConfig
from fedfraud.data.features import TEST, TRAIN, VAL, BankTable, build_bank_table
from fedfraud.data.scaling import Scaler, local_moments, moment_weight
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
from fedfraud.rings import bank_rings
from fedfraud.run_model import save_run_model
from fedfraud.train import build_model, make_inputs, predict, set_weights, weight_shapes
from fl_server.app import GLOBAL_MODEL_FILE, RESULTS_FILE
from secure_agg import Payload, available, get, provision, validate

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
    for warning in warnings:
        log.warning(warning)
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


def analyse_final_model(
    config: RunConfig,
    out_dir: Path,
    shared_options: dict[str, Any],
    tables: dict[str, BankTable],
    round_models: Mapping[int, Payload],
) -> dict[str, Any]:
    """Researcher-side view of the federated model, only possible because a simulation holds
    all banks' keys: the per-bank tables a deployed bank keeps to itself (selected model), the
    exact (unbinned) pooled metrics beside the binned ones, the pooled test PR-AUC of every
    round's model (to check the validation-selected round against the best in hindsight) and
    the GNN's flagged account groups."""
    agg = get(config.secure_agg, "client", {**config.to_run_config(), **shared_options})
    first = next(iter(tables.values()))
    model = build_model(config, first)
    # Same pooled moments the banks computed through secure aggregation.
    total = sum(moment_weight(t) for t in tables.values())
    per_bank = [(moment_weight(t), local_moments(t)) for t in tables.values()]
    moments = [sum(w * m[i] for w, m in per_bank) / total for i in range(4)]
    scaler = Scaler.from_moments(moments)
    inputs = {name: make_inputs(config.model, t, scaler) for name, t in tables.items()}

    def scored(payload: Payload) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        set_weights(model, agg.client_reveal(payload, weight_shapes(model)))
        return {name: predict(model, inputs[name], TEST) for name in tables}

    by_round = {}
    for rnd, payload in sorted(round_models.items()):
        counts = [ScoreCounts.of(y, s) for y, s in scored(payload).values()]
        by_round[str(rnd)] = pooled_metrics(sum_counts(counts))["pr_auc"]
    selected = scored(Payload.from_bytes((out_dir / GLOBAL_MODEL_FILE).read_bytes()))
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
    if progress:
        progress("data", {"banks": {n: len(f) for n, f in frames.items()}, "warnings": warnings})
    round_models: dict[int, Payload] = {}
    with tempfile.TemporaryDirectory(prefix="fedfraud-keys-") as keys_dir:
        shared = {**provision(config.secure_agg, Path(keys_dir), config.num_banks), **options}
        results = run_federation(config, shared, progress, round_models)
        results["analysis"] = analyse_final_model(config, out_dir, shared, tables, round_models)
    if baselines:
        if progress:
            progress("baselines", {})
        results["baselines"] = {
            "local_only": local_only(config, tables),
            "centralized": centralized(config, frames),
            "centralized_same_features": centralized_same_features(config, tables),
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
