"""A malicious operator, driven in process: the real ServerApp code (Federation) talks to the
real ClientApp of three banks that each pin a policy and the consortium roster, and a test
bends what the operator sends (run-config, participants, aggregates, proofs) as an attacker
who controls the operator would."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from flwr.app import Context, Message, RecordDict

from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fl_client.app import app as client_app
from fl_server.consortium import Proof
from fl_server.federation import Federation, Replies
from secure_agg import Payload, get, provision
from secure_agg.consortium import policy_file, provision_consortium
from secure_agg.roster import ROSTER_FILE, Roster

BANKS = ["bank-00", "bank-01", "bank-02"]


class AttackGrid:
    """Delivers each message to a node's real ClientApp and keeps every reply (errors too).
    `rogue` maps extra node ids to handlers standing in for nodes the operator registered."""

    def __init__(self, contexts: dict[int, Context], rogue: dict[int, Callable] | None = None):
        self.contexts = contexts
        self.rogue = dict(rogue or {})
        self.replies: list[Message] = []
        self.sent = 0

    def get_node_ids(self):
        return [*self.contexts, *self.rogue]

    def send_and_receive(self, messages, timeout=None):
        out = []
        for msg in messages:
            self.sent += 1
            msg.metadata.__dict__["_message_id"] = f"m{self.sent}"  # as Flower's push does
            node = msg.metadata.dst_node_id
            if node in self.rogue:
                reply = self.rogue[node](msg)
            else:
                reply = client_app(msg, self.contexts[node])
            self.replies.append(reply)
            out.append(reply)
        return out


class Consortium:
    """Three banks with policies + roster, and an operator whose every step the test controls."""

    def __init__(self, data_dir: Path, root: Path, backend: str = "none", **policy):
        self.root = root
        self.backend = backend
        self.shared = provision(backend, root / "keys", len(BANKS)) if backend != "none" else {}
        policy = {"allowed_backends": [backend], **policy}
        provision_consortium(root / "consortium", BANKS, **policy)
        self.roster = Roster.load(root / "consortium" / ROSTER_FILE)
        self.contexts = {
            200 + i: Context(
                1,
                200 + i,
                {
                    "data-path": str(data_dir / b),
                    "bank-id": b,
                    "policy-path": str(policy_file(root / "consortium", b)),
                    **self.bank_options(),
                },
                RecordDict(),
                {},
            )
            for i, b in enumerate(BANKS)
        }
        self.node = {b: 200 + i for i, b in enumerate(BANKS)}

    def bank_options(self) -> dict:
        return {k: v for k, v in self.shared.items() if "public" not in k}

    def operator(self, config: RunConfig, rogue: dict[int, Callable] | None = None) -> Federation:
        grid = AttackGrid(self.contexts, rogue)
        server_options = {k: v for k, v in self.shared.items() if "secret" not in k}
        agg = get(config.secure_agg, "server", {**config.to_run_config(), **server_options})
        fed = Federation(grid, config, agg, roster=self.roster, round_timeout_s=60.0)
        fed.state.run_label = secrets.token_hex(8)
        return fed

    @staticmethod
    def stats(fed: Federation) -> None:
        """The honest statistics stage: every bank sends its signed moments."""
        nodes = sorted(fed.grid.contexts)
        replies = fed.broadcast(nodes, f"query.{rm.STATS}", 0, {})
        agg, _ = fed._aggregate(replies, "stats")
        fed.state.scaler = agg.payload
        fed.state.scaler_proof = fed._proof(replies, agg, 0, rm.STATS)

    @staticmethod
    def train(fed: Federation, nodes: list[int], rnd: int) -> Replies:
        """Send round `rnd` to `nodes` with the operator's current scaler and global model."""
        extra = {rm.SCALER: fed.state.scaler}
        proofs = {rm.SCALER: fed.state.scaler_proof}
        if fed.state.global_model is not None:
            extra[rm.GLOBAL] = fed.state.global_model
            proofs[rm.GLOBAL] = fed.state.global_proof
        return fed.broadcast(nodes, rm.TRAIN_STAGE, rnd, extra, proofs)

    @staticmethod
    def forged_global(fed: Federation, replies: Replies, banks: list[str], rnd: int) -> None:
        """What a malicious operator can do with what it received: aggregate any subset of the
        signed contributions and forward their (valid) signatures as the proof."""
        payloads = {b: replies.payloads[b] for b in banks}
        agg = fed.aggregator.server_aggregate(payloads)
        fed.state.global_model = agg.payload
        fed.state.global_proof = Proof(
            fed.state.run_label,
            rnd,
            rm.TRAIN_STAGE,
            replies.participants,
            {b: replies.signatures[b] for b in banks},
            payloads,
        ).to_state()


def update_of(reply: Message) -> Payload | None:
    return Payload.from_record(reply.content[rm.UPDATE]) if reply.has_content() else None


@pytest.fixture
def task_identity():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None
