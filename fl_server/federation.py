"""One federated run as the operator sees it: send, collect, securely aggregate, record.

The operator only ever handles protected payloads: it never needs the model architecture,
the initial weights or any bank's update in the clear (banks start from a shared seed).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

import fedfraud
from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fedfraud.errors import FedfraudError, PayloadError
from fedfraud.metrics import METRICS, json_safe, weighted_mean
from fedfraud.privacy.operator import privacy_summary, round_privacy
from secure_agg import Aggregate, Exchange, Payload, SecureAggregator, is_interactive

log = logging.getLogger("fedfraud.server")


class FederationError(FedfraudError):
    """The federation cannot go on (too few banks answered, no banks connected, ...)."""


@dataclass
class Replies:
    """Answers to one broadcast, split into bank payloads/metrics and failures."""

    payloads: dict[str, Payload] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)  # bank -> the node it answered from
    silent: set[int] = field(default_factory=set)  # nodes that did not answer in time
    halted: dict[int, str] = field(default_factory=dict)  # node -> why its privacy budget is spent
    exchange: Exchange | None = None  # set when an interactive backend ran its own protocol

    @property
    def num_results(self) -> int:
        return len(self.metrics)


@dataclass
class RunState:
    """Everything the operator holds between rounds (what a checkpoint stores)."""

    scaler: Payload | None = None
    global_model: Payload | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    # bank -> why it refused to train (privacy budget spent); it is not asked to train again
    halted: dict[str, str] = field(default_factory=dict)


RoundCallback = Callable[[dict[str, Any]], None]


class Journal(Protocol):
    """Where completed stages are recorded (fl_server/journal.py: audit log + checkpoint)."""

    def stats_done(self, state: RunState, evidence: dict[str, Any]) -> None: ...

    def round_done(self, state: RunState, record: dict[str, Any]) -> None: ...

    def head_record(self) -> dict[str, str | int]: ...


class Federation:
    """Drives the stats stage, the rounds and the final evaluation over a Flower Grid."""

    def __init__(
        self,
        grid: Grid,
        config: RunConfig,
        aggregator: SecureAggregator,
        on_round: RoundCallback | None = None,
        node_wait_s: float = 120.0,
        round_timeout_s: float | None = None,
        shared_options: Mapping[str, str | int | float] | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.grid = grid
        self.config = config
        self.aggregator = aggregator
        self.on_round = on_round
        self.node_wait_s = node_wait_s
        self.round_timeout_s = round_timeout_s or config.round_timeout
        self.state = RunState()
        # Backend options every bank needs too (e.g. where simulation keys live).
        self.shared_options = dict(shared_options or {})
        self.journal = journal
        self.node_banks: dict[int, str] = {}  # learned from replies; names halted banks
        self.halted_nodes: set[int] = set()

    # -- messaging -------------------------------------------------------------------------
    def wait_for_banks(self) -> list[int]:
        """Wait until the expected number of bank nodes is connected."""
        deadline = time.monotonic() + self.node_wait_s
        while True:
            nodes = sorted(self.grid.get_node_ids())
            if len(nodes) >= self.config.num_banks:
                return nodes
            if time.monotonic() > deadline:
                if len(nodes) >= self.config.min_banks:
                    log.warning(
                        "only %d of %d banks connected; going on", len(nodes), self.config.num_banks
                    )
                    return nodes
                raise FederationError(
                    f"only {len(nodes)} bank node(s) connected after {self.node_wait_s:.0f}s, "
                    f"need at least min-banks={self.config.min_banks}; start more SuperNodes"
                )
            time.sleep(0.5)

    def broadcast(
        self, nodes: Iterable[int], message_type: str, round_: int, extra: Mapping[str, Payload]
    ) -> Replies:
        """Send one message per node and sort the replies."""
        config = ConfigRecord(
            {**self.config.to_run_config(), **self.shared_options, rm.ROUND: round_}
        )

        def content() -> RecordDict:
            out = RecordDict({rm.CONFIG: config})
            if self.journal is not None:  # banks keep every audit head they are shown
                out[rm.AUDIT] = ConfigRecord(self.journal.head_record())
            for key, payload in extra.items():
                out[key] = ConfigRecord(payload.to_record())
            return out

        nodes = list(nodes)
        replies = Replies()
        sent: dict[str, int] = {}
        if is_interactive(self.aggregator) and message_type in ("train", f"query.{rm.STATS}"):
            # SecAgg+: the backend runs its multi-message protocol and aggregates on the way.
            replies.exchange = self.aggregator.server_exchange(
                self.grid, nodes, message_type, content(), self.round_timeout_s
            )
            received = replies.exchange.replies
        else:
            messages = [Message(content(), dst_node_id=n, message_type=message_type) for n in nodes]
            received = self.grid.send_and_receive(messages, timeout=self.round_timeout_s)
            # Flower sets message ids on push. Errors made by the SuperLink itself (a node that
            # missed its heartbeats) come from node 0: find their node by the message replied to.
            sent = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        answered = set()
        for reply in received:
            node = sent.get(reply.metadata.reply_to_message_id) or reply.metadata.src_node_id
            answered.add(node)
            if reply.has_error():
                replies.failures[f"node-{node}"] = reply.error.reason or f"error {reply.error.code}"
                if reply.error.code == rm.BUDGET_ERROR_CODE:
                    replies.halted[node] = replies.failures[f"node-{node}"]
                if reply.error.code == ErrorCode.NODE_UNAVAILABLE:  # missed its heartbeats
                    replies.silent.add(node)
                continue
            bank = str(reply.content[rm.BANK][rm.BANK_ID])
            replies.nodes[bank] = node
            self.node_banks[node] = bank
            replies.metrics[bank] = dict(reply.content.get(rm.METRICS, {}))
            if rm.UPDATE in reply.content:
                try:
                    replies.payloads[bank] = Payload.from_record(reply.content[rm.UPDATE])
                except PayloadError as exc:
                    replies.failures[bank] = str(exc)
                    del replies.metrics[bank]
        for node in set(n for n in nodes) - answered:
            replies.failures[f"node-{node}"] = f"no reply within {self.round_timeout_s:.0f}s"
            replies.silent.add(node)
        for who, why in replies.failures.items():
            log.warning("%s %s failed: %s", message_type, who, why)
        return replies

    def _aggregate(self, replies: Replies, stage: str):
        """Securely aggregate, or stop the run when too few banks contributed."""
        reasons = "; ".join(f"{w}: {r}" for w, r in replies.failures.items()) or "none"
        if replies.exchange is not None and replies.exchange.aggregate is None:
            # The backend's own protocol failed (Flower itself would only log it).
            raise FederationError(f"{stage}: {replies.exchange.error} (failures: {reasons})")
        if len(replies.payloads) < self.config.min_banks:
            raise FederationError(
                f"{stage}: only {len(replies.payloads)} bank(s) answered, min-banks is "
                f"{self.config.min_banks} (failures: {reasons})"
            )
        start = time.perf_counter()
        if replies.exchange is not None:  # aggregated inside the backend's own protocol
            agg, elapsed = replies.exchange.aggregate, replies.exchange.aggregate_s
        else:
            agg = self.aggregator.server_aggregate(replies.payloads)
            elapsed = time.perf_counter() - start
        for bank, why in agg.rejected.items():
            log.warning("%s: payload of %s rejected: %s", stage, bank, why)
            replies.failures[bank] = f"payload rejected: {why}"
        if len(agg.included) < self.config.min_banks:
            raise FederationError(
                f"{stage}: only {len(agg.included)} valid payload(s), min-banks is "
                f"{self.config.min_banks}"
            )
        return agg, elapsed

    # -- stages ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run the whole federation and return the results.json content (federated part)."""
        start = time.perf_counter()
        nodes = self.wait_for_banks()
        if self.state.scaler is None:
            replies = self.broadcast(nodes, f"query.{rm.STATS}", 0, {})
            agg = self._aggregate(replies, "feature statistics")[0]
            self.state.scaler = agg.payload
            if self.journal:
                self.journal.stats_done(self.state, self._evidence(replies, agg))
        first = len(self.state.rounds) + 1
        for rnd in range(first, self.config.num_rounds + 1):
            self.state.rounds.append(self.run_round(nodes, rnd))
            if self.journal:
                self.journal.round_done(self.state, self.state.rounds[-1])
            if self.on_round:
                self.on_round(self.state.rounds[-1])
        return self.results(time.perf_counter() - start)

    def run_round(self, nodes: list[int], rnd: int) -> dict[str, Any]:
        """Train + secure aggregation + evaluation for one round."""
        t0 = time.perf_counter()
        extra = {rm.SCALER: self.state.scaler}
        if self.state.global_model is not None:
            extra[rm.GLOBAL] = self.state.global_model
        training = [n for n in nodes if n not in self.halted_nodes]
        replies = self.broadcast(training, "train", rnd, extra)
        self._halt(replies, rnd)
        agg, aggregate_s = self._aggregate(replies, f"round {rnd}")
        self.state.global_model = agg.payload
        wall_s = time.perf_counter() - t0
        included = [b for b in agg.included]
        record: dict[str, Any] = {
            "round": rnd,
            "wall_s": wall_s,
            "train_s": max(replies.metrics[b].get("train_s", 0.0) for b in included),
            "protect_s": max(replies.metrics[b].get("protect_s", 0.0) for b in included),
            "reveal_s": max(replies.metrics[b].get("reveal_s", 0.0) for b in included),
            "aggregate_s": aggregate_s,
            "bytes_up": sum(replies.payloads[b].nbytes() for b in included),
            "bytes_down": agg.payload.nbytes() * len(nodes),
            "bytes_plain": self._plain_bytes(replies, included),
            "num_results": len(included),
            "num_failures": len(replies.failures),
            "failures": dict(replies.failures),
            **round_privacy(self.config, self.state.rounds, included, replies.metrics),
            **self._evidence(replies, agg),
        }
        # A node that let the training deadline pass is likely down: do not wait for it again.
        evaluation = self.evaluate([n for n in nodes if n not in replies.silent], rnd)
        record["metrics"] = evaluation["metrics"]
        record["eval_s"] = evaluation["eval_s"]
        self.state.final = evaluation
        return record

    def _halt(self, replies: Replies, rnd: int) -> None:
        """Banks that refused for lack of privacy budget train no more; stop cleanly when fewer
        than min-banks can still train."""
        for node, reason in replies.halted.items():
            bank = self.node_banks.get(node, f"node-{node}")
            self.halted_nodes.add(node)
            self.state.halted[bank] = reason
            log.warning("round %d: %s halted: privacy budget spent", rnd, bank)
        if replies.halted and len(replies.payloads) < self.config.min_banks:
            raise FederationError(
                f"round {rnd}: privacy budget exhausted at {', '.join(sorted(self.state.halted))}; "
                f"only {len(replies.payloads)} bank(s) trained, min-banks is "
                f"{self.config.min_banks}. The federation stops here (rounds before {rnd} stand); "
                "the banks' ledgers allow no more training at this dp-epsilon"
            )

    def evaluate(self, nodes: list[int], rnd: int) -> dict[str, Any]:
        """Banks evaluate the current global model locally; only metrics come back."""
        t0 = time.perf_counter()
        extra = {rm.SCALER: self.state.scaler, rm.GLOBAL: self.state.global_model}
        replies = self.broadcast(nodes, "evaluate", rnd, extra)
        per_bank = {b: {k: m[k] for k in METRICS if k in m} for b, m in replies.metrics.items()}
        weights = {b: m.get("n_test", 0.0) for b, m in replies.metrics.items()}
        return {
            "metrics": weighted_mean(per_bank, weights),
            "per_bank": per_bank,
            "eval_s": time.perf_counter() - t0,
        }

    @staticmethod
    def _evidence(replies: Replies, agg: Aggregate) -> dict[str, Any]:
        """Who took part and SHA-256 digests of what they sent and of the aggregate (audit log)."""

        def digest(payload: Payload) -> str:
            return hashlib.sha256(payload.to_bytes()).hexdigest()

        return {
            "banks": list(agg.included),
            "nodes": {b: str(n) for b, n in replies.nodes.items()},
            "payload_sha256": {b: digest(p) for b, p in replies.payloads.items()},
            "aggregate_sha256": digest(agg.payload),
        }

    @staticmethod
    def _plain_bytes(replies: Replies, included: list[str]) -> int:
        # fp32 bytes of the same updates sent in the clear (reported by each bank's payload
        # header-free size: number of model values), the denominator of every bytes ratio.
        return sum(4 * int(replies.metrics[b].get("num_values", 0)) for b in included)

    def results(self, total_s: float) -> dict[str, Any]:
        """The federated part of results.json (see DESIGN.md)."""
        cfg = self.config
        final = self.state.final
        return json_safe(
            {
                "fedfraud_version": fedfraud.__version__,
                "config": cfg.to_dict(),
                "model": cfg.model,
                "secure_agg": cfg.secure_agg,
                "num_banks": cfg.num_banks,
                "rounds": self.state.rounds,
                "final": {**final.get("metrics", {}), "per_bank": final.get("per_bank", {})},
                "privacy": privacy_summary(cfg, self.state.rounds, self.state.halted),
                "timing": {
                    "total_s": total_s,
                    "mean_round_s": (
                        sum(r["wall_s"] for r in self.state.rounds) / max(1, len(self.state.rounds))
                    ),
                    "plaintext_equivalent_round_s": None,
                },
            }
        )
