"""What leaves a bank, byte for byte: the reply of the bank's own train handler, serialized into
the objects its SuperNode pushes to the SuperLink. Under CKKS neither the bank's rows nor its
plaintext update may appear in those bytes; the plaintext backend is the control that shows the
search would find them."""

from __future__ import annotations

import secrets
from functools import partial

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

import fl_client.app as client_app
from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fedfraud.data.store import read_bank
from fl_client.bank import load_table
from fl_server.consortium import Proof, stage_record
from secure_agg import Payload, get
from secure_agg.base import flatten
from tests.fl.conftest import bank_consortium

BANK = "bank-00"
BANKS = ["bank-00", "bank-01", "bank-02"]


pytestmark = pytest.mark.usefixtures("task_identity")


class Spy:
    """Wraps the bank's aggregator to see the update it is asked to protect."""

    def __init__(self, inner):
        self.inner = inner
        self.protected: list[tuple[np.ndarray, float]] = []

    def client_protect(self, update, weight, round, **kw):
        self.protected.append((flatten(update), float(weight)))
        return self.inner.client_protect(update, weight, round, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def wire_bytes(message: Message) -> bytes:
    """Every object Flower pushes for this message (the message, its records, their arrays)."""
    return b"".join(obj.deflate() for obj in get_all_nested_objects(message).values())


def send(
    handler,
    banks,
    bank: str,
    config: RunConfig,
    options,
    kind: str,
    run: str,
    extra=None,
    stage: str | None = None,
    settings=None,
) -> Message:
    stage = stage or (rm.STATS if kind == f"query.{rm.STATS}" else kind)
    rnd = 0 if stage == rm.STATS else 1
    content = RecordDict(
        {
            rm.CONFIG: ConfigRecord({**config.to_run_config(), rm.ROUND: rnd, **(settings or {})}),
            rm.STAGE: stage_record(run, stage, BANKS),
        }
    )
    for key, value in (extra or {}).items():
        content[key] = value
    msg = Message(content, dst_node_id=1, message_type=kind)
    node_config = {"data-path": str(banks / bank), "bank-id": bank, **options}
    context = Context(1, 1, node_config, RecordDict(), {})
    reply = handler(msg, context)
    assert not reply.has_error(), reply.error
    return reply


def backend_options(backend: str, tmp_path) -> tuple[dict, dict]:
    """Bank and operator options for `backend` (CKKS: fresh keys under tmp_path)."""
    if backend != "ckks":
        return {}, {}
    from secure_agg.keys import init_keys

    paths = init_keys(tmp_path / "keys")
    return {"ckks-secret-context": str(paths.secret)}, {"ckks-public-context": str(paths.public)}


def train_reply(banks, tmp_path, backend: str, monkeypatch) -> tuple[bytes, Spy, Message]:
    """Run the stats stage for three banks and one train call for BANK; return what BANK sent."""
    bank_options, server_options = backend_options(backend, tmp_path)
    config = RunConfig(num_banks=3, num_rounds=1, secure_agg=backend, seed=3)
    policies = bank_consortium(tmp_path / "consortium", BANKS)
    run = secrets.token_hex(8)  # the operator's run label, signed over
    stats, signatures = {}, {}
    for bank in BANKS:
        options = {**bank_options, **policies[bank]}
        reply = send(client_app.stats, banks, bank, config, options, "query.stats", run)
        stats[bank] = Payload.from_record(reply.content[rm.UPDATE])
        record = reply.content[rm.BANK]
        signatures[bank] = (record[rm.DIGEST], record[rm.SIGNATURE])
    scaler = get(backend, "server", server_options).server_aggregate(stats).payload
    proof = Proof(run, 0, rm.STATS, tuple(BANKS), signatures, stats)
    extra = {rm.SCALER: ConfigRecord(scaler.to_record()), **proof.records(rm.SCALER)}
    bank_options = {**bank_options, **policies[BANK]}

    spy: list[Spy] = []

    def spying_aggregator(cfg, options):
        spy.append(Spy(real_aggregator(cfg, options)))
        return spy[-1]

    real_aggregator = client_app.aggregator
    monkeypatch.setattr(client_app, "aggregator", spying_aggregator)
    reply = send(client_app.train, banks, BANK, config, bank_options, "train", run, extra)
    assert Payload.from_record(reply.content[rm.UPDATE]).backend == backend
    return wire_bytes(reply), spy[-1], reply


def float_windows(values: np.ndarray, dtype: str, width: int) -> list[bytes]:
    """Byte strings of `width` consecutive values, from several places in `values`."""
    raw = np.asarray(values, dtype=dtype).ravel()
    starts = np.linspace(0, max(0, raw.size - width), num=min(40, raw.size), dtype=int)
    return [raw[s : s + width].tobytes() for s in sorted(set(starts))]


def row_patterns(banks) -> dict[str, list[bytes]]:
    """Byte patterns of BANK's raw rows: 8+ bytes each, so chance matches in a megabyte of
    ciphertext are ~1e-13 rather than the ~1e-4 of a lone float32."""
    frame = read_bank(banks / BANK).head(200)
    table = load_table(banks / BANK, BANK)
    ids = np.concatenate([frame["sender"].to_numpy(), frame["receiver"].to_numpy()])
    return {
        "amount (float64)": [np.float64(a).tobytes() for a in frame["amount"]],
        "amount pairs (float32)": float_windows(frame["amount"].to_numpy(), "<f4", 2),
        "timestamp (float64)": [np.float64(t).tobytes() for t in frame["timestamp"]],
        "account id (int64)": [np.int64(i).tobytes() for i in ids],
        "account id (text)": [str(int(i)).encode() for i in ids if i >= 100_000],
        "feature rows (float32)": [row.astype("<f4").tobytes() for row in table.x[:50]],
    }


def update_patterns(spy: Spy) -> dict[str, list[bytes]]:
    update, weight = spy.protected[-1]
    return {
        "update (float32)": float_windows(update, "<f4", 2),
        "weighted update (float32)": float_windows(update * weight, "<f4", 2),
        "update (float64)": float_windows(update, "<f8", 1),
        "weighted update (float64)": float_windows(update * weight, "<f8", 1),
    }


def found(blob: bytes, patterns: dict[str, list[bytes]]) -> dict[str, int]:
    return {name: sum(p in blob for p in ps) for name, ps in patterns.items()}


@pytest.mark.skipif("ckks" not in __import__("secure_agg").available(), reason="no CKKS backend")
def test_ckks_bank_sends_neither_its_rows_nor_its_plaintext_update(
    small_consortium, tmp_path, monkeypatch
):
    blob, spy, reply = train_reply(small_consortium, tmp_path, "ckks", monkeypatch)
    assert len(blob) > 50_000  # the ciphertexts are in there
    assert set(found(blob, row_patterns(small_consortium)).values()) == {0}
    assert set(found(blob, update_patterns(spy)).values()) == {0}
    # Beside the ciphertexts only timings and the update's size leave in the clear: nothing
    # computed from the bank's rows (a training loss, say, which DP accounting does not cover).
    assert set(reply.content[rm.METRICS]) == {"num_values", "train_s", "protect_s", "reveal_s"}


def test_control_plaintext_bank_visibly_sends_its_update(small_consortium, tmp_path, monkeypatch):
    # Proves the search above would catch a leak: "none" sends float32(weight * update).
    blob, spy, _ = train_reply(small_consortium, tmp_path, "none", monkeypatch)
    hits = found(blob, update_patterns(spy))
    assert hits["weighted update (float32)"] == len(
        update_patterns(spy)["weighted update (float32)"]
    )
    # Rows never travel, whatever the backend (only the model does).
    assert set(found(blob, row_patterns(small_consortium)).values()) == {0}


# -- evaluation: only protected score counts leave, never the bank's own metrics ---------------
def signed_stage(banks, handler, kind, stage, config, options, run, server, extra=None):
    """Every bank answers one stage; returns the aggregate and the records proving it."""
    payloads, signatures = {}, {}
    for bank in BANKS:
        reply = send(handler, banks, bank, config, options[bank], kind, run, extra, stage)
        payloads[bank] = Payload.from_record(reply.content[rm.UPDATE])
        record = reply.content[rm.BANK]
        signatures[bank] = (record[rm.DIGEST], record[rm.SIGNATURE])
    agg = server.server_aggregate(payloads).payload
    rnd = 0 if stage == rm.STATS else 1
    return agg, Proof(run, rnd, stage, tuple(BANKS), signatures, payloads)


def evaluate_reply(banks, tmp_path, backend: str, monkeypatch) -> tuple[bytes, Message, dict]:
    """Stats + one train round for three banks, then BANK's evaluate reply for the global
    model; returns what BANK sent, the reply, and the counts / own metrics it computed."""
    bank_options, server_options = backend_options(backend, tmp_path)
    config = RunConfig(num_banks=3, num_rounds=1, secure_agg=backend, seed=3)
    server = get(backend, "server", server_options)
    policies = bank_consortium(tmp_path / "consortium", BANKS)
    options = {b: {**bank_options, **policies[b]} for b in BANKS}
    run = secrets.token_hex(8)
    stage = partial(signed_stage, banks, config=config, options=options, run=run, server=server)
    scaler, scaler_proof = stage(client_app.stats, "query.stats", rm.STATS)
    scaler_records = {
        rm.SCALER: ConfigRecord(scaler.to_record()),
        **scaler_proof.records(rm.SCALER),
    }
    model, model_proof = stage(client_app.train, "train", rm.TRAIN_STAGE, extra=scaler_records)
    seen: dict = {}
    real_pooled = client_app.pooled_metrics

    def spying_pooled(counts):
        seen.setdefault("counts", counts)
        seen.setdefault("own", real_pooled(counts))
        return real_pooled(counts)

    monkeypatch.setattr(client_app, "pooled_metrics", spying_pooled)
    extra = {
        **scaler_records,
        rm.MODEL: ConfigRecord(model.to_record()),
        **model_proof.records(rm.MODEL),
    }
    val = rm.evaluation_stage("val")
    reply = send(
        client_app.evaluate, banks, BANK, config, options[BANK], "evaluate", run, extra, val
    )
    return wire_bytes(reply), reply, seen


def counts_patterns(counts) -> dict[str, list[bytes]]:
    """Windows of 4 consecutive bins around the bank's non-empty bins (16+ bytes each)."""
    vector = counts.to_vector()
    busy = np.flatnonzero(vector)
    starts = busy[np.linspace(0, busy.size - 1, num=min(40, busy.size), dtype=int)]
    return {
        f"counts ({dtype})": [vector[s : s + 4].astype(dtype).tobytes() for s in starts]
        for dtype in ("<f4", "<f8")
    }


def own_metric_patterns(own: dict) -> dict[str, list[bytes]]:
    values = [own[k] for k in ("pr_auc", "roc_auc", "recall_at_1pct_fpr")]
    values += list(own["typology_recall"].values())
    # Short binary fractions (0, 1, 0.5) have common byte patterns; the rest are distinctive.
    values = [v for v in values if (v * 1024) % 1]
    assert values
    # A short text such as "0.2" turns up by chance in megabytes of ciphertext (about one run
    # in three): text patterns must be as long as the 8-byte float64 ones to mean anything.
    texts = [repr(float(v)).encode() for v in values[:3]]
    return {
        "own metric (float64)": [np.float64(v).tobytes() for v in values],
        "own metric (text)": [t for t in texts if len(t) >= 8],
    }


@pytest.mark.skipif("ckks" not in __import__("secure_agg").available(), reason="no CKKS backend")
def test_ckks_bank_evaluation_sends_neither_its_counts_nor_its_own_metrics(
    small_consortium, tmp_path, monkeypatch
):
    blob, reply, seen = evaluate_reply(small_consortium, tmp_path, "ckks", monkeypatch)
    assert seen["own"]["n_frauds"] > 0  # the bank did compute its own figures ...
    assert len(blob) > 50_000  # ... and sent ciphertexts of its counts
    assert set(found(blob, counts_patterns(seen["counts"])).values()) == {0}
    assert set(found(blob, own_metric_patterns(seen["own"])).values()) == {0}
    # In the clear: timings only (no n_test, no per-bank PR-AUC as before).
    assert set(reply.content[rm.METRICS]) == {"reveal_s", "protect_s"}


def test_control_plaintext_bank_evaluation_visibly_sends_its_counts(
    small_consortium, tmp_path, monkeypatch
):
    # Proves the search above would find the counts: "none" sends float32 counts as they are.
    blob, _, seen = evaluate_reply(small_consortium, tmp_path, "none", monkeypatch)
    patterns = counts_patterns(seen["counts"])
    assert found(blob, patterns)["counts (<f4)"] == len(patterns["counts (<f4)"])
    # Even in the clear backend a bank's own metrics are not sent, only the counts.
    assert set(found(blob, own_metric_patterns(seen["own"])).values()) == {0}
