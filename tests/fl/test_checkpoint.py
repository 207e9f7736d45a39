"""Operator checkpoints and resume, driven by an in-process fake Grid (no Flower processes):
a run killed after round k resumes at k+1 and ends with the same model as an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from fedfraud import round_messages as rm
from fedfraud.audit import verify
from fedfraud.config import RunConfig
from fedfraud.errors import ConfigError
from fedfraud.metrics import ScoreCounts, flat_metrics, pooled_metrics
from fl_server.app import run_operator
from fl_server.checkpoint import CHECKPOINT_DIR, STATE_FILE
from secure_agg import Payload, get
from secure_agg.roster import IDENTITY_FILE, ROSTER_FILE, BankIdentity, init_roster, statement

SHAPES = [(4,)]
BANKS = [f"bank-{i:02d}" for i in range(4)]
CONSORTIUM: dict[str, Path] = {}


@pytest.fixture(autouse=True, scope="module")
def consortium(tmp_path_factory):
    """Roster and identities of the fake banks (they sign what they send, as real ones do)."""
    CONSORTIUM["dir"] = tmp_path_factory.mktemp("consortium")
    init_roster(BANKS, CONSORTIUM["dir"])


def opts(**extra) -> dict:
    """Operator run-config: the consortium roster, plus `extra`."""
    return {"roster-path": str(CONSORTIUM["dir"] / ROSTER_FILE), **extra}


class OperatorKilled(Exception):
    """Stands in for the operator process dying."""


class FakeGrid:
    """Banks answering with the plaintext backend: each adds (index + 1) to the global model."""

    def __init__(self, banks=3, kill_at: tuple[str, int] | None = None, silent=(), unavailable=()):
        self.nodes = {100 + i: f"bank-{i:02d}" for i in range(banks)}
        self.kill_at = kill_at
        self.silent = set(silent)  # nodes that never answer
        self.unavailable = set(unavailable)  # nodes the SuperLink reports as gone
        self.sent: list[tuple[str, int, int]] = []  # (message type, round, node)
        self.agg = get("none", "client")

    def get_node_ids(self):
        return list(self.nodes)

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for msg in messages:
            kind = msg.metadata.message_type
            rnd = int(msg.content[rm.CONFIG][rm.ROUND])
            if self.kill_at == (kind, rnd):
                raise OperatorKilled(f"killed at {kind} {rnd}")
            node = msg.metadata.dst_node_id
            msg.metadata.__dict__["_message_id"] = f"m{len(self.sent)}"  # as Flower's push does
            self.sent.append((kind, rnd, node))
            if node in self.unavailable:
                replies.append(superlink_error(msg))
            elif node not in self.silent:
                replies.append(Message(self._answer(msg, self.nodes[node]), reply_to=msg))
        return replies

    def _answer(self, msg: Message, bank: str) -> RecordDict:
        index = int(bank.split("-")[1])
        content = RecordDict({rm.BANK: ConfigRecord({rm.BANK_ID: bank})})
        kind = msg.metadata.message_type
        if kind == "evaluate":
            # Counts whose PR-AUC grows with the round: the last round is the best one.
            rnd = int(msg.content[rm.CONFIG][rm.ROUND])
            y = np.r_[np.zeros(90), np.ones(10)]
            scores = np.r_[np.full(90, 0.5), np.where(np.arange(10) < rnd, 0.9, 0.1)]
            counts = ScoreCounts.of(y, scores).to_vector()
            payload = self.agg.client_protect([counts], 1.0, round=rnd)
            content[rm.UPDATE] = ConfigRecord(payload.to_record())
            content[rm.BANK] = ConfigRecord({rm.BANK_ID: bank, **self._sign(msg, bank, payload)})
            return content
        if kind == f"query.{rm.POOLED}":
            total = self.agg.client_reveal(
                Payload.from_record(msg.content[rm.COUNTS]), [(ScoreCounts.vector_size(),)]
            )[0] * int(msg.content[rm.CONFIG][rm.CONTRIBUTORS])
            metrics = flat_metrics(pooled_metrics(ScoreCounts.from_vector(total)))
            content[rm.METRICS] = MetricRecord(metrics)
            return content
        if kind == "train":
            model = np.zeros(4)
            if rm.GLOBAL in msg.content:
                g = Payload.from_record(msg.content[rm.GLOBAL])
                model = self.agg.client_reveal(g, SHAPES)[0].astype(np.float64)
            update = [model + index + 1]
        else:
            update = [np.full(4, float(index))]
        payload = self.agg.client_protect(update, 10.0 * (index + 1), round=0)
        content[rm.UPDATE] = ConfigRecord(payload.to_record())
        content[rm.BANK] = ConfigRecord({rm.BANK_ID: bank, **self._sign(msg, bank, payload)})
        content[rm.METRICS] = MetricRecord({"num_values": 4.0, "train_s": 0.0})
        return content

    @staticmethod
    def _sign(msg: Message, bank: str, payload: Payload) -> dict:
        stage = msg.content[rm.STAGE]
        digest = hashlib.sha256(payload.to_bytes()).hexdigest()
        signed = statement(
            run=stage[rm.RUN],
            round=int(msg.content[rm.CONFIG][rm.ROUND]),
            stage=stage[rm.STAGE_NAME],
            digest=digest,
            participants=stage[rm.PARTICIPANTS],
        )
        identity = BankIdentity.load(CONSORTIUM["dir"] / bank / IDENTITY_FILE)
        return {rm.DIGEST: digest, rm.SIGNATURE: identity.sign(signed)}


def superlink_error(msg: Message) -> Message:
    """What the SuperLink answers for a node that missed its heartbeats: an error from node 0."""
    reply = Message(Error(ErrorCode.NODE_UNAVAILABLE, "Error: Node Unavailable"), reply_to=msg)
    reply.metadata.__dict__["_src_node_id"] = 0
    return reply


pytestmark = pytest.mark.usefixtures("task_identity")


def config(out: Path, rounds: int = 4, num: int = 3, **kw) -> RunConfig:
    return RunConfig(num_banks=num, num_rounds=rounds, out_dir=str(out), round_timeout=5.0, **kw)


def model_bytes(out: Path) -> bytes:
    return (out / "global_model.payload").read_bytes()


def test_checkpoint_after_each_round_holds_model_round_and_config(tmp_path):
    out = tmp_path / "run"
    results = run_operator(FakeGrid(), config(out, rounds=2), opts())
    doc = json.loads((out / CHECKPOINT_DIR / STATE_FILE).read_text())
    assert doc["completed_rounds"] == 2
    assert doc["config"]["num_rounds"] == 2
    assert doc["state"]["rounds"] == results["rounds"]
    files = {p.name for p in (out / CHECKPOINT_DIR).iterdir()}
    # Only what state.json names is left: no temp files, no older rounds' models.
    assert files == {STATE_FILE, *(ref["file"] for ref in doc["payloads"].values())}
    saved = (out / CHECKPOINT_DIR / doc["payloads"]["global_model"]["file"]).read_bytes()
    assert saved == model_bytes(out)


def test_resume_after_kill_loses_and_repeats_no_round(tmp_path):
    reference = tmp_path / "uninterrupted"
    run_operator(FakeGrid(), config(reference), opts())

    out = tmp_path / "killed"
    with pytest.raises(OperatorKilled):
        run_operator(FakeGrid(kill_at=("train", 3)), config(out), opts())
    grid = FakeGrid()
    results = run_operator(grid, config(out), opts(resume=True))

    assert [r["round"] for r in results["rounds"]] == [1, 2, 3, 4]
    assert results["resumed_after_round"] == 2
    # The resumed process only ran rounds 3 and 4, and did not redo the statistics stage.
    assert sorted({(k, r) for k, r, _ in grid.sent}) == [
        ("evaluate", 3),
        ("evaluate", 4),  # validation, then test of the selected round 4
        ("query.pooled", 3),
        ("query.pooled", 4),
        ("train", 3),
        ("train", 4),
    ]
    assert model_bytes(out) == model_bytes(reference)
    ref_rounds = json.loads((reference / "results.json").read_text())["rounds"]
    assert [r["aggregate_sha256"] for r in results["rounds"]] == [
        r["aggregate_sha256"] for r in ref_rounds
    ]
    head = verify(out / "audit.jsonl")
    events = [json.loads(line)["event"] for line in (out / "audit.jsonl").read_text().splitlines()]
    assert events == ["start", "stats", "round", "round", "resume", "round", "round", "finish"]
    assert head.entries == len(events)


def test_audit_round_entries_name_banks_digests_and_model(tmp_path):
    out = tmp_path / "run"
    results = run_operator(FakeGrid(), config(out, rounds=1), opts())
    entries = [json.loads(x) for x in (out / "audit.jsonl").read_text().splitlines()]
    entry = next(e for e in entries if e["event"] == "round")
    assert entry["banks"] == ["bank-00", "bank-01", "bank-02"]
    assert set(entry["payload_sha256"]) == set(entry["banks"])
    assert entry["nodes"] == {"bank-00": "100", "bank-01": "101", "bank-02": "102"}
    assert entry["model_sha256"] == results["rounds"][0]["aggregate_sha256"]

    assert hashlib.sha256(model_bytes(out)).hexdigest() == entry["model_sha256"]
    finish = entries[-1]
    assert finish["event"] == "finish" and finish["selected_round"] == 1
    assert finish["selected_model_sha256"] == hashlib.sha256(model_bytes(out)).hexdigest()
    # Issue 13: round records name the announced participants and each signed contribution.
    assert entry["participants"] == ["bank-00", "bank-01", "bank-02"]  # those that answered
    assert set(entry["contributions"]) == set(entry["banks"])
    for bank, signed in entry["contributions"].items():
        assert signed["digest"] == entry["payload_sha256"][bank] and signed["signature"]


def test_resume_refuses_a_changed_model_setting(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(OperatorKilled):
        run_operator(FakeGrid(kill_at=("train", 2)), config(out), opts())
    with pytest.raises(ConfigError, match="hidden"):
        run_operator(FakeGrid(), config(out, hidden=32), opts(resume=True))
    # More rounds is a legitimate change.
    results = run_operator(FakeGrid(), config(out, rounds=5), opts(resume=True))
    assert [r["round"] for r in results["rounds"]] == [1, 2, 3, 4, 5]


def test_resume_without_checkpoint_starts_fresh_and_new_run_keeps_old_log(tmp_path):
    out = tmp_path / "run"
    results = run_operator(FakeGrid(), config(out, rounds=1), opts(resume="true"))
    assert results["resumed_after_round"] is None
    run_operator(FakeGrid(), config(out, rounds=1), opts())
    assert len(list(out.glob("audit-*.jsonl"))) == 1
    verify(out / "audit.jsonl")


def test_silent_node_completes_round_without_it_and_is_not_asked_to_evaluate(tmp_path):
    # Changed with issue 13: four banks, so three (min-banks) remain after one goes silent.
    grid = FakeGrid(banks=4, silent={102})
    # The silent node also misses the stats stage; min-banks 3 lets the run go on.
    results = run_operator(grid, config(tmp_path / "run", rounds=1, num=4), opts())
    record = results["rounds"][0]
    assert record["num_results"] == 3 and "node-102" in record["failures"]
    assert ("evaluate", 1, 102) not in grid.sent


def test_node_reported_unavailable_is_named_and_not_asked_to_evaluate(tmp_path):
    grid = FakeGrid(banks=4, unavailable={101})
    results = run_operator(grid, config(tmp_path / "run", rounds=1, num=4), opts())
    record = results["rounds"][0]
    assert record["banks"] == ["bank-00", "bank-02", "bank-03"]
    assert "Node Unavailable" in record["failures"]["node-101"]
    assert ("evaluate", 1, 101) not in grid.sent
