"""Over real rounds of training, the aggregate the operator builds under CKKS and under CrypTen
secret sharing equals the plaintext sample-weighted FedAvg of the very updates the banks
protected (max-abs error <= 1e-5; CrypTen's fixed point is finer still).

The banks are the real ClientApp handlers, called in-process through a recording Grid; each
bank's clear update is recorded inside its own handler (where it legitimately exists) so the
test can compute the exact mean the protected aggregate must equal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fedfraud.data.store import write_banks
from fedfraud.train import build_model, weight_shapes
from fl_client.app import app as client_app
from fl_client.bank import load_table
from fl_server.app import GLOBAL_MODEL_FILE, run_operator
from secure_agg import Payload, get, provision
from secure_agg.ckks import CKKSAggregator
from secure_agg.crypten_mpc import CryptenAggregator
from tests.conftest import random_bank

AGGREGATORS = {"ckks": CKKSAggregator, "crypten": CryptenAggregator}


class RecordingGrid:
    """Delivers each message to the bank's real ClientApp; keeps what each bank protected."""

    def __init__(self, data_dir: Path, banks: list[str]):
        self.contexts = {
            200 + i: Context(
                1, 200 + i, {"data-path": str(data_dir / b), "bank-id": b}, RecordDict(), {}
            )
            for i, b in enumerate(banks)
        }
        self.protected: dict[int, dict[str, tuple[list[np.ndarray], float]]] = {}
        self.current_bank = ""
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
            context = self.contexts[msg.metadata.dst_node_id]
            self.current_bank = str(context.node_config["bank-id"])
            reply = client_app(msg, context)
            assert not reply.has_error(), reply.error
            replies.append(reply)
        return replies

    def recording(self, protect):
        """Wrap an aggregator's client_protect to keep each bank's clear update (rounds >= 1)."""

        def wrapped(aggregator, update, weight, round):
            if round >= 1:
                clear = [np.array(a, dtype=np.float64) for a in update]
                self.protected.setdefault(round, {})[self.current_bank] = (clear, float(weight))
            return protect(aggregator, update, weight, round)

        return wrapped


@pytest.fixture
def unequal_banks(tmp_path: Path) -> Path:
    """Three banks of different sizes, so weighted and unweighted means differ."""
    rng = np.random.default_rng(11)
    sizes = {"bank-00": 1500, "bank-01": 3000, "bank-02": 6000}
    frames = {b: random_bank(rng, n, 100_000 * (i + 1)) for i, (b, n) in enumerate(sizes.items())}
    write_banks(frames, tmp_path / "banks")
    return tmp_path / "banks"


@pytest.fixture(autouse=True)
def task_identity():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


@pytest.mark.parametrize(
    "backend, model",
    [("ckks", "mlp"), ("ckks", "gnn"), pytest.param("crypten", "mlp", marks=pytest.mark.e2e)],
)
def test_secure_aggregate_equals_plaintext_weighted_fedavg_every_round(
    unequal_banks, tmp_path, monkeypatch, backend, model
):
    banks = sorted(p.name for p in unequal_banks.iterdir() if p.is_dir())
    shared = provision(backend, tmp_path / "keys", len(banks))
    rounds = 3
    cfg = RunConfig(
        num_banks=len(banks),
        num_rounds=rounds,
        model=model,
        secure_agg=backend,
        out_dir=str(tmp_path / "out"),
    )
    grid = RecordingGrid(unequal_banks, banks)
    cls = AGGREGATORS[backend]
    monkeypatch.setattr(cls, "client_protect", grid.recording(cls.client_protect))
    run_operator(grid, cfg, {}, shared_options=shared)

    bank_side = get(backend, "client", shared)
    table = load_table(unequal_banks / banks[0], banks[0])
    shapes = weight_shapes(build_model(cfg, table))
    aggregates = _globals(grid, tmp_path, rounds)
    for rnd in range(1, rounds + 1):
        sent = grid.protected[rnd]
        assert set(sent) == set(banks)
        total = sum(weight for _, weight in sent.values())
        assert len({w for _, w in sent.values()}) == len(banks)  # sample counts, all different
        revealed = bank_side.client_reveal(aggregates[rnd], shapes)
        for i in range(len(shapes)):
            expected = sum(w * update[i] for update, w in sent.values()) / total
            assert np.abs(revealed[i] - expected).max() <= 1e-5, (rnd, i)
    # The operator's files never held a clear model: the saved global is still protected.
    assert aggregates[rounds].backend == backend


def _globals(grid: RecordingGrid, tmp_path: Path, rounds: int) -> dict[int, Payload]:
    """Aggregate of round r = the global model the operator sent in round r+1 (or saved)."""
    out = {rounds: Payload.from_bytes((tmp_path / "out" / GLOBAL_MODEL_FILE).read_bytes())}
    for rnd in range(1, rounds):
        out[rnd] = grid.aggregates_sent[rnd + 1]
    return out
