"""Flower ClientApp run by each bank. Raw rows, plaintext updates and this bank's own metrics
never leave this process: only payloads from the run's secure aggregator, timings and
consortium-level pooled metrics (from aggregated score counts) are sent.

Every message is first checked against the bank's own policy and roster (fl_client/guard.py):
a weaker run-config, an unsigned or short aggregate, or other code than pinned is refused with
a generic error code; why stays in this bank's log."""

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
from fedfraud.data.scaling import moment_weight, stats_update
from fedfraud.errors import BudgetExceededError, ConfigError, FedfraudError, PayloadError
from fedfraud.io import atomic_write_text
from fedfraud.metrics import ScoreCounts, flat_metrics, json_safe, pooled_metrics
from fedfraud.policy import PolicyRefusal
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
from fl_client.audit_heads import keep_head
from fl_client.bank import (
    BankNode,
    aggregator,
    load_table,
    model_inputs,
    revealed_scaler,
)
from fl_client.crossbank import own_sketch, with_cross_bank
from fl_client.guard import BankGuard, payload_sha256
from secure_agg import StageContext, secaggplus

log = logging.getLogger("fedfraud.client")
app = ClientApp()
SPLITS = {"val": VAL, "test": TEST}
BANK_METRICS_FILE = "bank_metrics.json"  # in node-config model-dir: this bank's own metrics


Handler = Callable[[Message, Context, RunConfig, BankNode, BankGuard], RecordDict]


def _handler(fn: Handler):
    """Common envelope: parse config, resolve the bank and its policy, refuse what the policy
    does not allow, and turn every error into a reply with a code only (details in the log)."""

    def wrapped(msg: Message, context: Context) -> Message:
        # Two cores are shared by all simulated banks; one thread each avoids oversubscription.
        torch.set_num_threads(int(context.node_config.get("torch-threads", 1)))
        try:
            config = RunConfig.from_mapping(msg.content[rm.CONFIG])
            node = BankNode.from_configs(context.node_config, config)
            guard = BankGuard.for_node(context.node_config, _options(msg, context), node.bank_id)
            guard.check_run(config)
            if rm.AUDIT in msg.content:  # banks keep every audit head they are shown
                run = str(msg.metadata.run_id)
                keep_head(msg.content[rm.AUDIT], run, context.node_config, node.data_path)
            content = fn(msg, context, config, node, guard)
            if rm.BANK not in content:
                content[rm.BANK] = ConfigRecord({rm.BANK_ID: node.bank_id})
            return Message(content, reply_to=msg)
        except BudgetExceededError as exc:
            # The operator needs this one bit to stop asking; the ledger's state stays here.
            log.error("bank refused (privacy budget): %s", exc)
            return Message(Error(code=rm.BUDGET_ERROR_CODE), reply_to=msg)
        except (PolicyRefusal, PayloadError) as exc:
            log.error("bank refused the operator's message: %s", exc)
            return Message(Error(code=rm.REFUSED_ERROR_CODE), reply_to=msg)
        except FedfraudError as exc:
            log.error("bank error: %s", exc)
            return Message(Error(code=rm.BANK_ERROR_CODE), reply_to=msg)
        except Exception:  # a malformed message must not crash the node or leak a traceback
            log.exception("bank error while handling %s", msg.metadata.message_type)
            return Message(Error(code=rm.BANK_ERROR_CODE), reply_to=msg)

    return wrapped


def _signed_reply(
    node: BankNode, guard: BankGuard, ctx: StageContext, payload, metrics: dict[str, float]
) -> RecordDict:
    bank = ConfigRecord({rm.BANK_ID: node.bank_id, **guard.sign(ctx, payload)})
    return RecordDict(
        {
            rm.UPDATE: ConfigRecord(payload.to_record()),
            rm.METRICS: MetricRecord(metrics),
            rm.BANK: bank,
        }
    )


def _options(msg: Message, context: Context, guard: BankGuard | None = None) -> dict:
    """Backend options: the run-config, the bank's pinned roster identity (CKKS masks and
    CrypTen signs with it) and node-config, which overrides both."""
    pinned = {}
    if guard is not None:
        pinned = {
            "identity-path": str(guard.policy.identity_path),
            "roster-path": str(guard.policy.roster_path),
        }
    return {**dict(msg.content[rm.CONFIG]), **pinned, **dict(context.node_config)}


@app.query(rm.STATS)
@_handler
def stats(
    msg: Message, context: Context, config: RunConfig, node: BankNode, guard: BankGuard
) -> RecordDict:
    """Send this bank's feature moments and fraud rate, protected, for consortium-wide scaling
    and the models' initial output bias."""
    ctx = guard.stage(msg.content, rm.STATS, 0)
    table = load_table(node.data_path, node.bank_id)
    agg = aggregator(config, _options(msg, context, guard))
    start = time.perf_counter()
    payload = agg.client_protect(stats_update(table), moment_weight(table), round=0, context=ctx)
    return _signed_reply(node, guard, ctx, payload, {"protect_s": time.perf_counter() - start})


@app.query(rm.SKETCH)
@_handler
def sketch(
    msg: Message, context: Context, config: RunConfig, node: BankNode, guard: BankGuard
) -> RecordDict:
    """Send this bank's keyed account sketch, protected, for the consortium sketch."""
    ctx = guard.stage(msg.content, rm.SKETCH, 0)
    vector = own_sketch(node.data_path, node.bank_id, config, guard.policy)
    agg = aggregator(config, _options(msg, context, guard))
    start = time.perf_counter()
    payload = agg.client_protect([vector], 1.0, round=0, context=ctx)
    return _signed_reply(node, guard, ctx, payload, {"protect_s": time.perf_counter() - start})


def _global_model(
    msg: Message,
    context: Context,
    config: RunConfig,
    node: BankNode,
    guard: BankGuard,
    ctx: StageContext,
    model_round: int,
    key: str = rm.GLOBAL,
):
    """Load data, reveal the scaler and the model under `key` (the global model, or the model
    to evaluate: the aggregate of training round `model_round`), each only after checking its
    signed contributions; returns (table, scaler, inputs, model, agg, reveal_s)."""
    table = load_table(node.data_path, node.bank_id)
    agg = aggregator(config, _options(msg, context, guard))
    start = time.perf_counter()
    scaler_payload, scaler_ctx = guard.aggregate(msg.content, rm.SCALER, agg, ctx, 0, rm.STATS)
    scaler = revealed_scaler(agg, scaler_payload, table, context=scaler_ctx)
    table, scaler, sketch_key = with_cross_bank(
        msg.content, config, node.data_path, guard, agg, ctx, table, scaler
    )
    inputs = model_inputs(config.model, table, payload_sha256(scaler_payload) + sketch_key, scaler)
    # Round 1: the shared-seed initial model, output bias at the consortium's prior log-odds.
    model = build_model(config, table, scaler.fraud_rate)
    if key in msg.content or model_round >= 1:
        model_payload, model_ctx = guard.aggregate(
            msg.content, key, agg, ctx, model_round, rm.TRAIN_STAGE
        )
        shapes = weight_shapes(model)
        set_weights(model, agg.client_reveal(model_payload, shapes, context=model_ctx))
    return table, scaler, inputs, model, agg, time.perf_counter() - start


@_handler
def evaluate(
    msg: Message, context: Context, config: RunConfig, node: BankNode, guard: BankGuard
) -> RecordDict:
    """Score this bank's validation (or, for the selected model, test) rows and send only the
    protected per-score-bin counts; this bank's own metrics stay here (node-config model-dir:
    bank_metrics.json). The final test evaluation also keeps the model there for scoring."""
    split_name = str(msg.content[rm.CONFIG].get(rm.SPLIT, "val"))
    if split_name not in SPLITS:
        raise ConfigError(f"unknown evaluation split {split_name!r}; expected val or test")
    rnd = int(msg.content[rm.CONFIG][rm.ROUND])
    ctx = guard.stage(msg.content, rm.evaluation_stage(split_name), rnd)
    table, scaler, inputs, model, agg, reveal_s = _global_model(
        msg, context, config, node, guard, ctx, rnd, key=rm.MODEL
    )
    split = SPLITS[split_name]
    y, scores = predict(model, inputs, split)
    typology = table.typology[table.mask(split)] if table.typology is not None else None
    counts = ScoreCounts.of(y, scores, typology)
    start = time.perf_counter()
    payload = agg.client_protect([counts.to_vector()], 1.0, round=rnd, context=ctx)
    protect_s = time.perf_counter() - start
    own = pooled_metrics(counts)
    if own["n_frauds"] == 0:
        log.warning(
            "%s: no fraud in its %s split; its rows count as legit only", node.bank_id, split_name
        )
    if "model-dir" in context.node_config:
        model_dir = Path(str(context.node_config["model-dir"]))
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
    return _signed_reply(node, guard, ctx, payload, metrics)


app.evaluate()(evaluate)


@app.query(rm.POOLED)
@_handler
def pooled(
    msg: Message, context: Context, config: RunConfig, node: BankNode, guard: BankGuard
) -> RecordDict:
    """Reveal the consortium's aggregated score counts (only after checking their signed
    contributions) and answer the pooled metrics (the same at every bank; the operator checks
    they agree). Under CKKS only banks can do this."""
    agg = aggregator(config, _options(msg, context, guard))
    rnd = int(msg.content[rm.CONFIG][rm.ROUND])
    split_name = str(msg.content[rm.CONFIG].get(rm.SPLIT, "val"))
    contributors = int(msg.content[rm.CONFIG][rm.CONTRIBUTORS])
    ctx = guard.stage(msg.content, f"query.{rm.POOLED}", rnd)
    payload, counts_ctx = guard.aggregate(
        msg.content, rm.COUNTS, agg, ctx, rnd, rm.evaluation_stage(split_name)
    )
    # The backends reveal the weighted MEAN; every bank sent weight 1, so the sum is the mean
    # times the number of contributors (a wrong count would only scale the rows, not the metrics).
    mean = agg.client_reveal(payload, [(ScoreCounts.vector_size(),)], context=counts_ctx)[0]
    counts = ScoreCounts.from_vector(mean.astype(np.float64) * contributors)
    return RecordDict({rm.METRICS: MetricRecord(flat_metrics(pooled_metrics(counts)))})


# SecAgg+ runs every exchange that aggregates (stats, sketch, train, evaluate) as Flower 'train'
# messages; its mod masks what these functions return and leaves other backends' messages alone.
_AGGREGATED = {f"query.{rm.STATS}": stats, f"query.{rm.SKETCH}": sketch, "evaluate": evaluate}


@app.train(mods=[secaggplus.client_mod(_AGGREGATED)])
@_handler
def train(
    msg: Message, context: Context, config: RunConfig, node: BankNode, guard: BankGuard
) -> RecordDict:
    """Train locally from the global model and send the protected, weighted new model."""
    rnd = int(msg.content[rm.CONFIG][rm.ROUND])
    if not 1 <= rnd <= config.num_rounds:
        # DP is calibrated for num-rounds releases: a round beyond them is refused.
        raise PolicyRefusal(f"round {rnd} is outside 1..num-rounds={config.num_rounds}")
    ctx = guard.stage(msg.content, rm.TRAIN_STAGE, rnd)
    table, _, inputs, model, agg, reveal_s = _global_model(
        msg, context, config, node, guard, ctx, rnd - 1
    )
    # DP (if on) with the bank's own δ, budget and minimum contributors, never the operator's:
    # refuses here when the bank's privacy budget would be exceeded.
    policy, num_train = guard.policy, inputs.num(TRAIN)
    dp = BankRound.start(
        config,
        context.node_config,
        node.data_path,
        node.bank_id,
        ctx.run,
        rnd,
        num_train,
        delta=policy.delta(num_train),
        budget=policy.budget(config),
        min_contributors=policy.min_contributors,
        class_weight=class_weight(inputs),
    )
    global_weights = get_weights(model)
    stats = train_local(
        model, inputs, config, seed=config.seed * 1000 + rnd, privatizer=dp.privatizer
    )
    start = time.perf_counter()
    weights, weight = dp.release(global_weights, get_weights(model), float(num_train))
    payload = agg.client_protect(weights, weight, round=rnd, context=ctx)
    # Only timings and the update's size leave in the clear: a training loss would be computed
    # from the bank's rows outside any DP accounting, and ε per round tells the operator the
    # bank's batch count; ε stays in the bank's ledger.
    metrics = {
        "num_values": float(sum(w.size for w in weights)),
        "train_s": stats.seconds,
        "protect_s": time.perf_counter() - start,
        "reveal_s": reveal_s,
    }
    return _signed_reply(node, guard, ctx, payload, metrics)


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
