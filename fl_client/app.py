"""Flower ClientApp run by each bank. Raw rows and plaintext updates never leave this process:
only payloads from the run's secure aggregator and evaluation metrics are sent.

Every message is first checked against the bank's own policy and roster (fl_client/guard.py):
a weaker run-config, an unsigned or short aggregate, or other code than pinned is refused with
a generic error code; why stays in this bank's log."""

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
from fedfraud.data.scaling import local_moments, moment_weight
from fedfraud.errors import BudgetExceededError, ConfigError, FedfraudError, PayloadError
from fedfraud.metrics import score_metrics
from fedfraud.policy import PolicyRefusal
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
    revealed_scaler,
)
from fl_client.guard import BankGuard, payload_sha256
from secure_agg import StageContext, secaggplus

log = logging.getLogger("fedfraud.client")
app = ClientApp()


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


def _options(msg: Message, context: Context) -> dict:
    # Node-config (the bank's own key paths) overrides what the operator's run-config says.
    return {**dict(msg.content[rm.CONFIG]), **dict(context.node_config)}


@app.query(rm.STATS)
@_handler
def stats(
    msg: Message, context: Context, config: RunConfig, node: BankNode, guard: BankGuard
) -> RecordDict:
    """Send this bank's feature moments, protected, for consortium-wide scaling."""
    ctx = guard.stage(msg.content, rm.STATS, 0)
    table = load_table(node.data_path, node.bank_id)
    agg = aggregator(config, _options(msg, context))
    start = time.perf_counter()
    payload = agg.client_protect(local_moments(table), moment_weight(table), round=0, context=ctx)
    return _signed_reply(node, guard, ctx, payload, {"protect_s": time.perf_counter() - start})


def _global_model(
    msg: Message,
    context: Context,
    config: RunConfig,
    node: BankNode,
    guard: BankGuard,
    ctx: StageContext,
    global_round: int,
):
    """Load data, reveal scaler and global model (each only after checking its signed
    contributions); returns (table, scaler, inputs, model, agg, reveal_s)."""
    table = load_table(node.data_path, node.bank_id)
    agg = aggregator(config, _options(msg, context))
    start = time.perf_counter()
    scaler_payload, scaler_ctx = guard.aggregate(msg.content, rm.SCALER, agg, ctx, 0, rm.STATS)
    scaler = revealed_scaler(agg, scaler_payload, table, context=scaler_ctx)
    inputs = model_inputs(config.model, table, payload_sha256(scaler_payload), scaler)
    model = build_model(config, table)  # round 1: the shared-seed initial model
    if rm.GLOBAL in msg.content or global_round >= 1:
        global_payload, global_ctx = guard.aggregate(
            msg.content, rm.GLOBAL, agg, ctx, global_round, rm.TRAIN_STAGE
        )
        shapes = weight_shapes(model)
        set_weights(model, agg.client_reveal(global_payload, shapes, context=global_ctx))
    return table, scaler, inputs, model, agg, time.perf_counter() - start


# SecAgg+ runs every exchange (stats included) as Flower 'train' messages; its mod masks what
# these functions return and leaves the other backends' messages alone.
@app.train(mods=[secaggplus.client_mod({f"query.{rm.STATS}": stats})])
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


@app.evaluate()
@_handler
def evaluate(
    msg: Message, context: Context, config: RunConfig, node: BankNode, guard: BankGuard
) -> RecordDict:
    """Evaluate the global model on this bank's held-out test split; only metrics leave.
    With node-config `model-dir`, the bank also keeps the revealed model for scoring."""
    rnd = int(msg.content[rm.CONFIG][rm.ROUND])
    ctx = guard.stage(msg.content, "evaluate", rnd)
    table, scaler, inputs, model, _, reveal_s = _global_model(
        msg, context, config, node, guard, ctx, rnd
    )
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
    # No n_test: a bank's test-row count narrows its fraud count (issue 13).
    metrics = {**score_metrics(y, scores), "reveal_s": reveal_s}
    return RecordDict({rm.METRICS: MetricRecord(metrics)})
