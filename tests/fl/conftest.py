"""Shared by the in-process Flower tests: the task identity Flower's messages need, a Grid that
delivers to the real ClientApp, and banks of unequal sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedfraud import round_messages as rm
from fedfraud.data.store import write_banks
from fedfraud.policy import ALL_BACKENDS
from fl_client.app import app as client_app
from secure_agg import Payload
from secure_agg.consortium import policy_file, provision_consortium
from secure_agg.roster import ROSTER_FILE
from tests.conftest import random_bank


def bank_consortium(directory: Path, banks: list[str], **policy) -> dict[str, dict[str, str]]:
    """Roster, identities and policies for `banks` (every backend allowed unless `policy` says
    otherwise); returns each bank's policy node-config keys."""
    policy = {"allowed_backends": list(ALL_BACKENDS), **policy}
    provision_consortium(directory, banks, **policy)
    return {b: {"policy-path": str(policy_file(directory, b))} for b in banks}


class RecordingGrid:
    """Delivers each message to the bank's real ClientApp; keeps what each bank protected.
    Every bank pins a policy and the consortium roster (in `data_dir`/../consortium); pass
    `options` to the operator (it names the roster)."""

    def __init__(self, data_dir: Path, banks: list[str], consortium: Path | None = None, **policy):
        # Roster and identities are made once per folder (keys are never overwritten): a test
        # running several federations over one data folder gives each its own `consortium`.
        consortium = consortium or data_dir.parent / "consortium"
        policies = bank_consortium(consortium, banks, **policy)
        self.options = {"roster-path": str(consortium / ROSTER_FILE)}
        self.contexts = {
            200 + i: Context(
                1,
                200 + i,
                {"data-path": str(data_dir / b), "bank-id": b, **policies[b]},
                RecordDict(),
                {},
            )
            for i, b in enumerate(banks)
        }
        self.protected: dict[int, dict[str, tuple[list[np.ndarray], float]]] = {}
        self.current_bank = ""
        self.current_type = ""
        self.evaluated: dict[int, Payload] = {}  # round -> its aggregate, sent to be validated
        self.sent = 0

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for msg in messages:
            self.sent += 1
            msg.metadata.__dict__["_message_id"] = f"m{self.sent}"  # as Flower's push does
            config = msg.content[rm.CONFIG]
            if msg.metadata.message_type == "evaluate" and config.get(rm.SPLIT) == "val":
                rnd = int(config[rm.ROUND])
                self.evaluated[rnd] = Payload.from_record(msg.content[rm.MODEL])
            context = self.contexts[msg.metadata.dst_node_id]
            self.current_bank = str(context.node_config["bank-id"])
            self.current_type = msg.metadata.message_type
            reply = client_app(msg, context)
            assert not reply.has_error(), reply.error
            replies.append(reply)
        return replies

    def recording(self, protect):
        """Wrap an aggregator's client_protect to keep each bank's clear training update (rounds
        >= 1; evaluation's score counts are protected too, and are not an update)."""

        def wrapped(aggregator, update, weight, round, **kw):
            if round >= 1 and self.current_type == "train":
                clear = [np.array(a, dtype=np.float64) for a in update]
                self.protected.setdefault(round, {})[self.current_bank] = (clear, float(weight))
            return protect(aggregator, update, weight, round, **kw)

        return wrapped


@pytest.fixture
def unequal_banks(tmp_path: Path) -> Path:
    """Three banks of different sizes, so weighted and unweighted means differ."""
    rng = np.random.default_rng(11)
    sizes = {"bank-00": 1500, "bank-01": 3000, "bank-02": 6000}
    frames = {b: random_bank(rng, n, 100_000 * (i + 1)) for i, (b, n) in enumerate(sizes.items())}
    write_banks(frames, tmp_path / "banks")
    return tmp_path / "banks"


@pytest.fixture
def task_identity():
    # Flower's Message needs the identity of the running task (set by Flower in a real run).
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None
