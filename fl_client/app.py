"""Flower ClientApp run by each bank. Raw rows, plaintext updates and this bank's own metrics
never leave this process: only payloads from the run's secure aggregator, timings and
consortium-level pooled metrics (from aggregated score counts) are sent."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fedfraud.data.features import TEST, TRAIN, VAL
from fedfraud.data.scaling import local_moments, moment_weight
from fedfraud.errors import BudgetExceededError, ConfigError, FedfraudError
from fedfraud.io import atomic_write_text
from fedfraud.metrics import ScoreCounts, flat_metrics, json_safe, pooled_metrics
from fedfraud.privacy import BankRound
from fedfraud.run_model import save_run_model
from fedfraud.train import (
    build_model,
    get_weights,
    predict,
    set_weights,
    train_local,
    weight_shapes,
)
from fl_client.bank import (
    BankNode,
    aggregator,
    load_table,
    model_inputs,
    payload_digest,
    revealed_scaler,
)
from secure_agg import Payload, secaggplus

log = logging.getLogger("fedfraud.client")
app = ClientApp()
SPLITS = {"val": VAL, "test": TEST}
BANK_METRICS_FILE = "bank_metrics.json"  # in node-config model-dir: this bank's own metrics


def _handler(fn: Callable[[Message, Context, RunConfig, BankNode], RecordDict]):
    """Common envelope: parse config, resolve the bank, turn user errors into error replies."""

    def wrapped(msg: Message, context: Context) -> Message:
        # Two cores are shared by all simulated banks; one thread each avoids oversubscription.
        torch.set_num_threads(int(context.node_config.get("torch-threads", 1)))
        try:
            config = RunConfig.from_mapping(msg.content[rm.CONFIG])
            node = BankNode.from_configs(context.node_config, config)
            content = fn(msg, context, config, node)
            content[rm.BANK] = ConfigRecord({rm.BANK_ID: node.bank_id})
            return Message(content, reply_to=msg)
        except FedfraudError as exc:
            log.error("bank error: %s", exc)
            budget = isinstance(exc, BudgetExceededError)
            code = rm.BUDGET_ERROR_CODE if budget else rm.BANK_ERROR_CODE
            return Message(Error(code=code, reason=str(exc)), reply_to=msg)

    return wrapped


def _options(msg: Message, context: Context) -> dict:
    # Node-config (the bank's own key paths) overrides what the operator's run-config says.
    return {**dict(msg.content[rm.CONFIG]), **dict(context.node_config)}


@app.query(rm.STATS)
@_handler
def stats(msg: Message, context: Context, config: RunConfig, node: BankNode) -> RecordDict:
    """Send this bank's feature moments, protected, for consortium-wide scaling."""
    table = load_table(node.data_path, node.bank_id)
    agg = aggregator(config, _options(msg, context))
    start = time.perf_counter()
    payload = agg.client_protect(local_moments(table), moment_weight(table), round=0)
    metrics = {"protect_s": time.perf_counter() - start}
    return RecordDict(
        {rm.UPDATE: ConfigRecord(payload.to_record()), rm.METRICS: MetricRecord(metrics)}
    )


def _global_model(
    msg: Message, context: Context, config: RunConfig, node: BankNode, key: str = rm.GLOBAL
):
    """Load data, reveal scaler and the model under `key` (the global model, or the model to
    evaluate); returns (table, scaler, inputs, model, agg, reveal_s)."""
    table = load_table(node.data_path, node.bank_id)
    agg = aggregator(config, _options(msg, context))
    start = time.perf_counter()
    scaler_payload = Payload.from_record(msg.content[rm.SCALER])
    scaler = revealed_scaler(agg, scaler_payload, table)
    inputs = model_inputs(config.model, table, payload_digest(scaler_payload), scaler)
    model = build_model(config, table)  # round 1: the shared-seed initial model
    if key in msg.content:
        model_payload = Payload.from_record(msg.content[key])
        set_weights(model, agg.client_reveal(model_payload, weight_shapes(model)))
    return table, scaler, inputs, model, agg, time.perf_counter() - start


@_handler
def evaluate(msg: Message, context: Context, config: RunConfig, node: BankNode) -> RecordDict:
    """Score this bank's validation (or, for the selected model, test) rows and send only the
    protected per-score-bin counts; this bank's own metrics stay here (node-config model-dir:
    bank_metrics.json). The final test evaluation also keeps the model there for scoring."""
    split_name = str(msg.content[rm.CONFIG].get(rm.SPLIT, "val"))
    if split_name not in SPLITS:
        raise ConfigError(f"unknown evaluation split {split_name!r}; expected val or test")
    table, scaler, inputs, model, agg, reveal_s = _global_model(
        msg, context, config, node, key=rm.MODEL
    )
    split = SPLITS[split_name]
    y, scores = predict(model, inputs, split)
    typology = table.typology[table.mask(split)] if table.typology is not None else None
    counts = ScoreCounts.of(y, scores, typology)
    start = time.perf_counter()
    payload = agg.client_protect(
        [counts.to_vector()], 1.0, round=int(msg.content[rm.CONFIG][rm.ROUND])
    )
    protect_s = time.perf_counter() - start
    own = pooled_metrics(counts)
    if own["n_frauds"] == 0:
        log.warning(
            "%s: no fraud in its %s split; its rows count as legit only", node.bank_id, split_name
        )
    if "model-dir" in context.node_config:
        model_dir = Path(str(context.node_config["model-dir"]))
        rnd = int(msg.content[rm.CONFIG][rm.ROUND])
        try:
            if split == TEST:
                save_run_model(model_dir, model, config, table, scaler)
            keep_bank_metrics(model_dir, split_name, rnd, own)
        except OSError as exc:
            raise ConfigError(
                f"node-config model-dir {model_dir} is not writable ({exc.strerror}); "
                "point it at a folder this node may write"
            ) from exc
    # Only timings leave in the clear beside the protected counts.
    metrics = {"reveal_s": reveal_s, "protect_s": protect_s}
    return RecordDict(
        {rm.UPDATE: ConfigRecord(payload.to_record()), rm.METRICS: MetricRecord(metrics)}
    )


app.evaluate()(evaluate)


@app.query(rm.POOLED)
@_handler
def pooled(msg: Message, context: Context, config: RunConfig, node: BankNode) -> RecordDict:
    """Reveal the consortium's aggregated score counts and answer the pooled metrics (the same
    at every bank; the operator checks they agree). Under CKKS only banks can do this."""
    agg = aggregator(config, _options(msg, context))
    contributors = int(msg.content[rm.CONFIG][rm.CONTRIBUTORS])
    payload = Payload.from_record(msg.content[rm.COUNTS])
    # The backends reveal the weighted MEAN; every bank sent weight 1, so the sum is the mean
    # times the number of contributors (a wrong count would only scale the rows, not the metrics).
    mean = agg.client_reveal(payload, [(ScoreCounts.vector_size(),)])[0]
    counts = ScoreCounts.from_vector(mean.astype(np.float64) * contributors)
    return RecordDict({rm.METRICS: MetricRecord(flat_metrics(pooled_metrics(counts)))})


# SecAgg+ runs every exchange that aggregates (stats, train, evaluate) as Flower 'train'
# messages; its mod masks what these functions return and leaves other backends' messages alone.
@app.train(mods=[secaggplus.client_mod({f"query.{rm.STATS}": stats, "evaluate": evaluate})])
@_handler
def train(msg: Message, context: Context, config: RunConfig, node: BankNode) -> RecordDict:
    """Train locally from the global model and send the protected, weighted new model."""
    table, _, inputs, model, agg, reveal_s = _global_model(msg, context, config, node)
    rnd = int(msg.content[rm.CONFIG][rm.ROUND])
    # DP (if on): refuses here when the bank's privacy budget would be exceeded.
    run_id = str(msg.metadata.run_id)
    dp = BankRound.start(
        config, context.node_config, node.data_path, node.bank_id, run_id, rnd, inputs.num(TRAIN)
    )
    global_weights = get_weights(model)
    stats = train_local(
        model, inputs, config, seed=config.seed * 1000 + rnd, privatizer=dp.privatizer
    )
    start = time.perf_counter()
    weights, weight = dp.release(global_weights, get_weights(model), float(inputs.num(TRAIN)))
    payload = agg.client_protect(weights, weight, round=rnd)
    # Only timings, the update's size and DP bookkeeping leave in the clear: a training loss
    # would be computed from the bank's rows outside any DP accounting, and nobody needs it.
    metrics = {
        "num_values": float(sum(w.size for w in weights)),
        "train_s": stats.seconds,
        "protect_s": time.perf_counter() - start,
        "reveal_s": reveal_s,
        **dp.metrics(),
    }
    return RecordDict(
        {rm.UPDATE: ConfigRecord(payload.to_record()), rm.METRICS: MetricRecord(metrics)}
    )


def keep_bank_metrics(model_dir: Path, split: str, rnd: int, metrics: dict) -> None:
    """This bank's own metrics, kept in its model-dir (never sent): validation per round, and
    the selected model's test metrics."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / BANK_METRICS_FILE
    kept = json.loads(path.read_text()) if path.exists() else {}
    entry = {"round": rnd, **metrics}
    if split == "val":
        kept["val"] = [e for e in kept.get("val", []) if e.get("round") != rnd] + [entry]
    else:
        kept["test"] = entry
    atomic_write_text(path, json.dumps(json_safe(kept), indent=2))
