"""One federated run as the operator sees it: send, collect, securely aggregate, record.

The operator only ever handles protected payloads: it never needs the model architecture,
the initial weights or any bank's update in the clear (banks start from a shared seed).
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
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
from fedfraud.metrics import json_safe
from fedfraud.privacy.operator import privacy_summary, round_privacy
from fl_server.consortium import REAGGREGABLE, Proof, check_signature, operator_roster, stage_record
from fl_server.selection import agreed_metrics, select_round
from fl_server.sketch_stage import run_sketch_stage, sketch_records
from secure_agg import Aggregate, Exchange, Payload, SecureAggregator, is_interactive
from secure_agg.roster import Roster

log = logging.getLogger("fedfraud.server")


# Stages whose replies are securely aggregated (an interactive backend runs them itself).
AGGREGATED_STAGES = ("train", f"query.{rm.STATS}", f"query.{rm.SKETCH}", "evaluate")


class FederationError(FedfraudError):
    """The federation cannot go on (too few banks answered, no banks connected, ...)."""


@dataclass
class Replies:
    """Answers to one broadcast, split into bank payloads/metrics and failures."""

    payloads: dict[str, Payload] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)  # bank -> the node it answered from
    signatures: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # bank -> (digest, sig)
    silent: set[int] = field(default_factory=set)  # nodes that did not answer in time
    halted: dict[int, str] = field(default_factory=dict)  # node -> why its privacy budget is spent
    exchange: Exchange | None = None  # set when an interactive backend ran its own protocol
    participants: tuple[str, ...] = ()  # the banks announced for this stage (signed over)

    @property
    def num_results(self) -> int:
        return len(self.metrics)


@dataclass
class RunState:
    """Everything the operator holds between rounds (what a checkpoint stores)."""

    scaler: Payload | None = None
    global_model: Payload | None = None  # the last round's aggregate (training goes on from it)
    best_model: Payload | None = None  # the aggregate of the round with the best validation
    best_round: int = 0
    rounds: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    # bank -> why it refused to train (privacy budget spent); it is not asked to train again
    halted: dict[str, str] = field(default_factory=dict)
    # The run label banks sign over, and the signed contributions behind scaler / global model
    # (Proof.to_state(); forwarded with each aggregate so banks can check it).
    run_label: str = ""
    scaler_proof: dict[str, Any] | None = None
    global_proof: dict[str, Any] | None = None
    best_proof: dict[str, Any] | None = None
    # Cross-bank sketch stage (cross-bank=sketch): the protected consortium sketch, its proof,
    # how many banks it sums and the stage's audit evidence.
    sketch: Payload | None = None
    sketch_proof: dict[str, Any] | None = None
    sketch_banks: int = 0
    sketch_evidence: dict[str, Any] = field(default_factory=dict)


RoundCallback = Callable[[dict[str, Any]], None]
ModelCallback = Callable[[int, Payload], None]  # (round, protected aggregate): research runs


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
        on_model: ModelCallback | None = None,
        roster: Roster | None = None,
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
        self.on_model = on_model
        self.evaluating_nodes: list[int] = []  # nodes that answered the last evaluation
        self.node_banks: dict[int, str] = {}  # learned from replies; names halted banks
        self.halted_nodes: set[int] = set()
        self.roster = roster

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

    def participants(self, nodes: Iterable[int]) -> tuple[str, ...]:
        """The banks announced for a stage: those of `nodes` once known, else the roster's."""
        roster = self._roster()
        known = [self.node_banks.get(n) for n in nodes]
        if known and all(known):
            return tuple(sorted({b for b in known if b in roster}))
        return tuple(b for b in roster.banks if b not in self.state.halted)

    def _roster(self) -> Roster:
        if self.roster is None:
            self.roster = operator_roster({**self.config.to_run_config(), **self.shared_options})
        return self.roster

    def broadcast(
        self,
        nodes: Iterable[int],
        message_type: str,
        round_: int,
        extra: Mapping[str, Payload],
        proofs: Mapping[str, dict[str, Any] | None] | None = None,
        settings: Mapping[str, str | int | float] | None = None,
        stage: str | None = None,
    ) -> Replies:
        """Send one message per node (with the stage's participants, the proofs of the
        aggregates it carries and `settings` joined to the config) and sort the replies,
        keeping only signed contributions. The stage name defaults to the message type."""
        config = ConfigRecord(
            {
                **self.config.to_run_config(),
                **self.shared_options,
                rm.ROUND: round_,
                **dict(settings or {}),
            }
        )
        nodes = list(nodes)
        if not self.state.run_label:
            self.state.run_label = secrets.token_hex(16)
        stage = stage or (rm.STATS if message_type == f"query.{rm.STATS}" else message_type)
        participants = self.participants(nodes)

        def content() -> RecordDict:
            out = RecordDict({rm.CONFIG: config})
            if self.journal is not None:  # banks keep every audit head they are shown
                out[rm.AUDIT] = ConfigRecord(self.journal.head_record())
            out[rm.STAGE] = stage_record(self.state.run_label, stage, participants)
            for key, payload in extra.items():
                out[key] = ConfigRecord(payload.to_record())
            for key, proof in (proofs or {}).items():
                if proof is not None:
                    out.update(Proof.from_state(proof).records(key))
            return out

        replies = Replies(participants=participants)
        sent: dict[str, int] = {}
        if is_interactive(self.aggregator) and message_type in AGGREGATED_STAGES:
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
        signed = not is_interactive(self.aggregator)
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
            # One bank's reply, however malformed, only ever makes that bank a failure.
            try:
                self._accept(replies, reply, node, (round_, stage, participants), signed)
            except (KeyError, TypeError, ValueError, PayloadError) as exc:
                replies.failures[f"node-{node}"] = f"reply rejected: {exc}"
        for node in set(n for n in nodes) - answered:
            replies.failures[f"node-{node}"] = f"no reply within {self.round_timeout_s:.0f}s"
            replies.silent.add(node)
        for who, why in replies.failures.items():
            log.warning("%s %s failed: %s", message_type, who, why)
        if self._lost_a_masked_participant(replies, message_type):
            # Pairwise masks cancel only over the announced set: ask the banks that answered
            # again, as a new participant set (fresh masks; the first contributions never open).
            survivors = [replies.nodes[b] for b in sorted(replies.payloads)]
            log.warning(
                "%s %d: %d of %d announced banks answered; masked contributions only combine "
                "over the announced set, so the stage runs again with those %d",
                message_type,
                round_,
                len(survivors),
                len(replies.participants),
                len(survivors),
            )
            again = self.broadcast(survivors, message_type, round_, extra, proofs, settings, stage)
            again.failures = {**replies.failures, **again.failures}
            again.silent |= replies.silent
            again.halted = {**replies.halted, **again.halted}
            return again
        return replies

    def _lost_a_masked_participant(self, replies: Replies, message_type: str) -> bool:
        needs_all = getattr(self.aggregator, "needs_every_participant", None)
        return (
            message_type in AGGREGATED_STAGES
            and replies.exchange is None
            and needs_all is not None
            and needs_all(replies.payloads)
            and self.config.min_banks <= len(replies.payloads) < len(replies.participants)
        )

    def _accept(
        self,
        replies: Replies,
        reply: Message,
        node: int,
        stage: tuple[int, str, tuple[str, ...]],
        signed: bool,
    ) -> None:
        bank_record = reply.content[rm.BANK]
        bank = bank_record[rm.BANK_ID]
        if not isinstance(bank, str):
            raise TypeError("bank id is not a string")
        if bank in replies.nodes:
            raise ValueError(f"{bank!r} already answered from node {replies.nodes[bank]}")
        # Only finite scalars: a list or a huge value from one bank must not break the round.
        metrics = {
            str(k): float(v)
            for k, v in dict(reply.content.get(rm.METRICS, {})).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        if rm.UPDATE in reply.content:
            payload = Payload.from_record(reply.content[rm.UPDATE])
            if signed:  # an unrostered node or a forged contribution stops here
                rnd, name, participants = stage
                replies.signatures[bank] = check_signature(
                    self._roster(),
                    self.state.run_label,
                    rnd,
                    name,
                    participants,
                    bank,
                    payload,
                    bank_record,
                )
            replies.payloads[bank] = payload
        replies.nodes[bank] = node
        self.node_banks[node] = bank
        replies.metrics[bank] = metrics

    def _proof(self, replies: Replies, agg: Aggregate, rnd: int, stage: str) -> dict | None:
        """What banks need to check this aggregate (None for SecAgg+'s own protocol)."""
        if replies.exchange is not None:
            return None
        proof = Proof(
            self.state.run_label,
            rnd,
            stage,
            replies.participants,
            {b: replies.signatures[b] for b in agg.included},
            {b: replies.payloads[b] for b in agg.included}
            if self.aggregator.name in REAGGREGABLE
            else {},
        )
        return proof.to_state()

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
            self.state.scaler_proof = self._proof(replies, agg, 0, rm.STATS)
            if self.journal:
                self.journal.stats_done(self.state, self._evidence(replies, agg))
        if self.config.cross_bank != "off" and self.state.sketch is None:
            self.state.sketch_evidence = run_sketch_stage(self, nodes)
            if self.journal:
                self.journal.stats_done(self.state, self.state.sketch_evidence)
        while len(self.state.rounds) < self.config.num_rounds and not self._patience_spent():
            rnd = len(self.state.rounds) + 1
            record = self.run_round(nodes, rnd)
            self.state.rounds.append(record)
            self._select(record)
            if self.journal:
                self.journal.round_done(self.state, record)
            if self.on_round:
                self.on_round(record)
        if self._patience_spent() and len(self.state.rounds) < self.config.num_rounds:
            log.info(
                "early stop after round %d: validation PR-AUC has not improved for %d rounds "
                "since round %d",
                len(self.state.rounds),
                self.config.patience,
                self.state.best_round,
            )
        self.state.final = self.final_evaluation(nodes)
        return self.results(time.perf_counter() - start)

    def run_round(self, nodes: list[int], rnd: int) -> dict[str, Any]:
        """Train + secure aggregation + evaluation for one round."""
        t0 = time.perf_counter()
        x_extra, x_proofs, x_settings = sketch_records(self.state)
        extra = {rm.SCALER: self.state.scaler, **x_extra}
        proofs = {rm.SCALER: self.state.scaler_proof, **x_proofs}
        if self.state.global_model is not None:
            extra[rm.GLOBAL] = self.state.global_model
            proofs[rm.GLOBAL] = self.state.global_proof
        training = [n for n in nodes if n not in self.halted_nodes]
        replies = self.broadcast(training, rm.TRAIN_STAGE, rnd, extra, proofs, x_settings)
        self._halt(replies, rnd)
        agg, aggregate_s = self._aggregate(replies, f"round {rnd}")
        self.state.global_model = agg.payload
        if self.on_model:
            self.on_model(rnd, agg.payload)
        self.state.global_proof = self._proof(replies, agg, rnd, rm.TRAIN_STAGE)
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
        alive = [n for n in nodes if n not in replies.silent]
        evaluation = self.evaluate(alive, rnd, agg.payload, self.state.global_proof, "val")
        record["metrics"] = {"pooled": evaluation["pooled"]}
        record["eval_banks"] = evaluation["banks"]
        self.evaluating_nodes = evaluation["nodes"]
        record["eval_s"] = evaluation["eval_s"]
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

    def evaluate(
        self, nodes: list[int], rnd: int, model: Payload, proof: dict | None, split: str
    ) -> dict[str, Any]:
        """Pooled metrics of `model` on the banks' `split` rows without any bank's metrics
        leaving it: banks send protected per-score-bin counts, the backend sums them, and the
        banks reveal the sum and answer the consortium's metrics (the same at every bank)."""
        t0 = time.perf_counter()
        where = f"round {rnd} evaluation ({split})"
        stage = rm.evaluation_stage(split)
        x_extra, x_proofs, x_settings = sketch_records(self.state)
        extra = {rm.SCALER: self.state.scaler, rm.MODEL: model, **x_extra}
        proofs = {rm.SCALER: self.state.scaler_proof, rm.MODEL: proof, **x_proofs}
        settings = {rm.SPLIT: split, **x_settings}
        replies = self.broadcast(nodes, "evaluate", rnd, extra, proofs, settings, stage=stage)
        agg, _ = self._aggregate(replies, where)
        revealing = [replies.nodes[b] for b in agg.included if b in replies.nodes]
        answers = self.broadcast(
            revealing,
            f"query.{rm.POOLED}",
            rnd,
            {rm.COUNTS: agg.payload},
            {rm.COUNTS: self._proof(replies, agg, rnd, stage)},
            {rm.CONTRIBUTORS: len(agg.included), rm.SPLIT: split},
        )
        return {
            "pooled": agreed_metrics(answers.metrics, where),
            "banks": list(agg.included),
            "nodes": revealing,
            "eval_s": time.perf_counter() - t0,
        }

    def final_evaluation(self, nodes: list[int]) -> dict[str, Any]:
        """Test metrics of the selected round's model (chosen on validation rows only)."""
        if self.state.best_model is None:
            raise FederationError("no round completed, so there is no model to evaluate")
        rnd = self.state.best_round
        # Banks that evaluated the last round (a node gone silent is not waited for again).
        nodes = self.evaluating_nodes or nodes
        evaluation = self.evaluate(nodes, rnd, self.state.best_model, self.state.best_proof, "test")
        return {
            "selected_round": rnd,
            "last_round": len(self.state.rounds),
            "pooled": evaluation["pooled"],
            "banks": evaluation["banks"],
            "eval_s": evaluation["eval_s"],
        }

    def _select(self, record: dict[str, Any]) -> None:
        """Keep the model of the round with the best pooled validation PR-AUC so far."""
        if record["round"] == select_round(self.state.rounds):
            self.state.best_model = self.state.global_model
            self.state.best_proof = self.state.global_proof
            self.state.best_round = record["round"]

    def _patience_spent(self) -> bool:
        patience = self.config.patience
        done = len(self.state.rounds)
        return patience > 0 and done > 0 and done - self.state.best_round >= patience

    @staticmethod
    def _evidence(replies: Replies, agg: Aggregate) -> dict[str, Any]:
        """Who took part and SHA-256 digests of what they sent and of the aggregate, with the
        participants announced and each included bank's signed contribution (audit log)."""

        def digest(payload: Payload) -> str:
            return hashlib.sha256(payload.to_bytes()).hexdigest()

        signed = {b: replies.signatures[b] for b in agg.included if b in replies.signatures}
        return {
            "participants": list(replies.participants),
            "contributions": Proof("", 0, "", (), signed).contributions(),
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
                "run_label": self.state.run_label,
                "config": cfg.to_dict(),
                "model": cfg.model,
                "secure_agg": cfg.secure_agg,
                "num_banks": cfg.num_banks,
                "rounds": self.state.rounds,
                "final": dict(final),
                "privacy": privacy_summary(cfg, self.state.rounds, self.state.halted),
                **({"sketch_stage": self.state.sketch_evidence} if self.state.sketch else {}),
                "timing": {
                    "total_s": total_s,
                    "mean_round_s": (
                        sum(r["wall_s"] for r in self.state.rounds) / max(1, len(self.state.rounds))
                    ),
                    "plaintext_equivalent_round_s": None,
                },
            }
        )
