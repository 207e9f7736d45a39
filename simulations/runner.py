"""`fedfraud simulate`: a whole consortium on one machine with Flower's simulation engine."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedfraud.baselines import centralized, centralized_same_features, local_only
from fedfraud.config import RunConfig
from fedfraud.data.features import TEST, TRAIN, BankTable, build_bank_table
from fedfraud.data.scaling import Scaler, moment_weight, stats_update
from fedfraud.data.schema import has_accounts, require_fraud
from fedfraud.data.store import MANIFEST_FILE, list_banks, read_bank
from fedfraud.errors import ConfigError, DataError, FedfraudError
from fedfraud.metrics import json_safe, score_metrics, typology_recall
from fedfraud.rings import bank_rings
from fedfraud.run_model import save_run_model
from fedfraud.train import build_model, make_inputs, predict, set_weights, weight_shapes
from fl_server.app import GLOBAL_MODEL_FILE, RESULTS_FILE
from secure_agg import Payload, available, get, provision, validate

log = logging.getLogger("fedfraud.simulate")
Progress = Callable[[str, dict[str, Any]], None]  # (event, details)


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


def run_federation(
    config: RunConfig, shared_options: dict[str, Any], progress: Progress | None = None
) -> dict[str, Any]:
    """Run the Flower ServerApp + ClientApps in the simulation engine; return results."""
    from flwr.simulation import run_simulation

    from fl_client.app import app as client_app
    from fl_server.app import make_server_app

    outcome: dict[str, Any] = {}
    server_app = make_server_app(
        config,
        on_round=(lambda r: progress("round", r)) if progress else None,
        outcome=outcome,
        shared_options=shared_options,
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
) -> dict[str, Any]:
    """Researcher-side check of the final global model on every bank's test split, including
    recall per fraud typology. Only possible here because a simulation holds all banks' keys."""
    agg = get(config.secure_agg, "client", {**config.to_run_config(), **shared_options})
    first = next(iter(tables.values()))
    model = build_model(config, first)
    payload = Payload.from_bytes((out_dir / GLOBAL_MODEL_FILE).read_bytes())
    set_weights(model, agg.client_reveal(payload, weight_shapes(model)))
    # Same pooled moments the banks computed through secure aggregation.
    total = sum(moment_weight(t) for t in tables.values())
    per_bank = [(moment_weight(t), stats_update(t)) for t in tables.values()]
    moments = [sum(w * m[i] for w, m in per_bank) / total for i in range(len(per_bank[0][1]))]
    scaler = Scaler.from_moments(moments)
    ys, ss, typ, rings = [], [], [], {}
    for table in tables.values():
        inputs = make_inputs(config.model, table, scaler)
        y, s = predict(model, inputs, TEST)
        if config.model == "gnn":  # flagged groups of accounts per bank (fedfraud/rings.py)
            rings[table.name] = bank_rings(model, inputs, table)
        ys.append(y)
        ss.append(s)
        if table.typology is not None:
            typ.append(table.typology[table.mask(TEST)])
    save_run_model(out_dir, model, config, first, scaler)  # for score / serve / explain
    y, s = np.concatenate(ys), np.concatenate(ss)
    out: dict[str, Any] = {"pooled_test": score_metrics(y, s)}
    if typ:
        out["typology_recall"] = typology_recall(y, s, np.concatenate(typ))
    if rings:
        out["fraud_rings"] = rings
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
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data_dir = prepare_data(config, out_dir)
    config = config.replace(data_dir=str(data_dir.resolve()), out_dir=str(out_dir.resolve()))
    frames, tables = load_banks(config, data_dir)
    if progress:
        progress("data", {"banks": {n: len(f) for n, f in frames.items()}})
    with tempfile.TemporaryDirectory(prefix="fedfraud-keys-") as keys_dir:
        shared = {**provision(config.secure_agg, Path(keys_dir), config.num_banks), **options}
        results = run_federation(config, shared, progress)
        results["analysis"] = analyse_final_model(config, out_dir, shared, tables)
    if baselines:
        if progress:
            progress("baselines", {})
        local = local_only(config, tables)
        results["baselines"] = {
            "local_only": local,
            "centralized": centralized(config, frames),
            "centralized_same_features": centralized_same_features(config, tables),
        }
    results["timing"]["simulate_total_s"] = time.perf_counter() - start
    results["data"] = (
        json.loads((data_dir / MANIFEST_FILE).read_text())
        if (data_dir / MANIFEST_FILE).exists()
        else {"banks": list(frames)}
    )
    results = json_safe(results)
    (out_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
    from simulations.report import write_report

    write_report(results, out_dir)
    return results
