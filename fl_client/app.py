"""Flower ClientApp run by each bank. Raw rows and plaintext updates never leave this process:
only payloads from the run's secure aggregator and evaluation metrics are sent."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fedfraud.data.features import TEST, TRAIN
from fedfraud.data.scaling import moment_weight, stats_update
from fedfraud.errors import BudgetExceededError, ConfigError, FedfraudError
from fedfraud.metrics import score_metrics
from fedfraud.privacy import BankRound
from fedfraud.run_model import save_run_model
from fedfraud.train import (
    build_model,
    class_weight,
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
    """Send this bank's feature moments and fraud rate, protected, for consortium-wide scaling
    and the models' initial output bias."""
    table = load_table(node.data_path, node.bank_id)
    agg = aggregator(config, _options(msg, context))
    start = time.perf_counter()
    payload = agg.client_protect(stats_update(table), moment_weight(table), round=0)
    metrics = {"protect_s": time.perf_counter() - start}
    return RecordDict(
        {rm.UPDATE: ConfigRecord(payload.to_record()), rm.METRICS: MetricRecord(metrics)}
    )


def _global_model(msg: Message, context: Context, config: RunConfig, node: BankNode):
    """Load data, reveal scaler and global model; returns
    (table, scaler, inputs, model, agg, reveal_s)."""
    table = load_table(node.data_path, node.bank_id)
    agg = aggregator(config, _options(msg, context))
    start = time.perf_counter()
    scaler_payload = Payload.from_record(msg.content[rm.SCALER])
    scaler = revealed_scaler(agg, scaler_payload, table)
    inputs = model_inputs(config.model, table, payload_digest(scaler_payload), scaler)
    # Round 1: the shared-seed initial model, output bias at the consortium's prior log-odds.
    model = build_model(config, table, scaler.fraud_rate)
    if rm.GLOBAL in msg.content:
        global_payload = Payload.from_record(msg.content[rm.GLOBAL])
        set_weights(model, agg.client_reveal(global_payload, weight_shapes(model)))
    return table, scaler, inputs, model, agg, time.perf_counter() - start


# SecAgg+ runs every exchange (stats included) as Flower 'train' messages; its mod masks what
# these functions return and leaves the other backends' messages alone.
@app.train(mods=[secaggplus.client_mod({f"query.{rm.STATS}": stats})])
@_handler
def train(msg: Message, context: Context, config: RunConfig, node: BankNode) -> RecordDict:
    """Train locally from the global model and send the protected, weighted new model."""
    table, _, inputs, model, agg, reveal_s = _global_model(msg, context, config, node)
    rnd = int(msg.content[rm.CONFIG][rm.ROUND])
    # DP (if on): refuses here when the bank's privacy budget would be exceeded.
    run_id = str(msg.metadata.run_id)
    dp = BankRound.start(
        config,
        context.node_config,
        node.data_path,
        node.bank_id,
        run_id,
        rnd,
        inputs.num(TRAIN),
        class_weight=class_weight(inputs),
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


@app.evaluate()
@_handler
def evaluate(msg: Message, context: Context, config: RunConfig, node: BankNode) -> RecordDict:
    """Evaluate the global model on this bank's held-out test split; only metrics leave.
    With node-config `model-dir`, the bank also keeps the revealed model for scoring."""
    table, scaler, inputs, model, _, reveal_s = _global_model(msg, context, config, node)
    if "model-dir" in context.node_config:
        model_dir = Path(str(context.node_config["model-dir"]))
        try:
            save_run_model(model_dir, model, config, table, scaler)
        except OSError as exc:
            raise ConfigError(
                f"node-config model-dir {model_dir} is not writable ({exc.strerror}); "
                "point it at a folder this node may write"
            ) from exc
    y, scores = predict(model, inputs, TEST)
    metrics = {**score_metrics(y, scores), "n_test": float(len(y)), "reveal_s": reveal_s}
    return RecordDict({rm.METRICS: MetricRecord(metrics)})
