"""Over real rounds of training, the CKKS aggregate the operator builds equals the plaintext
sample-weighted FedAvg of the very updates the banks sent (max-abs error <= 1e-5).

The banks are the real ClientApp handlers, called in-process through a recording Grid so the
test can open every single bank's payload with the banks' secret key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fedfraud.data.features import TRAIN
from fedfraud.train import build_model, weight_shapes
from fl_client.app import app as client_app
from fl_client.bank import load_table
from fl_server.app import GLOBAL_MODEL_FILE, run_operator
from secure_agg import Payload, get, provision


class RecordingGrid:
    """Delivers each message to the bank's real ClientApp and keeps every train payload."""

    def __init__(self, data_dir: Path, banks: list[str]):
        self.contexts = {
            200 + i: Context(
                1, 200 + i, {"data-path": str(data_dir / b), "bank-id": b}, RecordDict(), {}
            )
            for i, b in enumerate(banks)
        }
        self.train_payloads: dict[int, dict[str, Payload]] = {}
        self.aggregates_sent: dict[int, Payload] = {}  # round -> global model it carried
        self.sent = 0

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for msg in messages:
            self.sent += 1
            msg.metadata.__dict__["_message_id"] = f"m{self.sent}"  # as Flower's push does
            if msg.metadata.message_type == "train" and rm.GLOBAL in msg.content:
                rnd = int(msg.content[rm.CONFIG][rm.ROUND])
                self.aggregates_sent[rnd] = Payload.from_record(msg.content[rm.GLOBAL])
            reply = client_app(msg, self.contexts[msg.metadata.dst_node_id])
            assert not reply.has_error(), reply.error
            if msg.metadata.message_type == "train":
                rnd = int(msg.content[rm.CONFIG][rm.ROUND])
                bank = str(reply.content[rm.BANK][rm.BANK_ID])
                payload = Payload.from_record(reply.content[rm.UPDATE])
                self.train_payloads.setdefault(rnd, {})[bank] = payload
            replies.append(reply)
        return replies


@pytest.fixture(autouse=True)
def task_identity():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


@pytest.mark.parametrize("model", ["mlp", "gnn"])
def test_ckks_aggregate_equals_plaintext_weighted_fedavg_every_round(
    small_consortium, tmp_path, model
):
    banks = sorted(p.name for p in small_consortium.iterdir() if p.is_dir())
    shared = provision("ckks", tmp_path / "keys", len(banks))
    rounds = 3
    cfg = RunConfig(
        num_banks=len(banks),
        num_rounds=rounds,
        model=model,
        secure_agg="ckks",
        out_dir=str(tmp_path / "out"),
    )
    grid = RecordingGrid(small_consortium, banks)
    run_operator(grid, cfg, {}, shared_options=shared)

    bank_key = get("ckks", "client", shared)
    tables = {b: load_table(small_consortium / b, b) for b in banks}
    shapes = weight_shapes(build_model(cfg, tables[banks[0]]))
    aggregates = _globals(grid, tmp_path, rounds)
    for rnd in range(1, rounds + 1):
        sent = grid.train_payloads[rnd]
        assert set(sent) == set(banks)
        # Each bank's own weighted model, opened with the banks' key (the operator cannot).
        models = {b: bank_key.client_reveal(_as_aggregate(p), shapes) for b, p in sent.items()}
        weights = {b: float(tables[b].mask(TRAIN).sum()) for b in banks}
        total = sum(weights.values())
        revealed = bank_key.client_reveal(aggregates[rnd], shapes)
        for i in range(len(shapes)):
            expected = sum(weights[b] * models[b][i].astype(np.float64) for b in banks) / total
            assert np.abs(revealed[i] - expected).max() <= 1e-5


def _globals(grid: RecordingGrid, tmp_path: Path, rounds: int) -> dict[int, Payload]:
    """Aggregate of round r = the global model the operator sent in round r+1 (or saved)."""
    out = {rounds: Payload.from_bytes((tmp_path / "out" / GLOBAL_MODEL_FILE).read_bytes())}
    for rnd in range(1, rounds):
        out[rnd] = grid.aggregates_sent[rnd + 1]
    return out


def _as_aggregate(payload: Payload) -> Payload:
    """A single bank's ciphertexts, read as an aggregate of one bank."""
    return Payload(payload.backend, payload.chunks, {**payload.meta, "count": 1})
