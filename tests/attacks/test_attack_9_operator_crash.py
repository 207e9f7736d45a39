"""Attack 9 of issue 13, operator crash: one bank (or any node) answers with a payload whose
chunks are not bytes, or with far too many or too large chunks, or with no bank record at all.
The payload is refused before anything is allocated for it and the run goes on without it."""

from __future__ import annotations

import time

import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fedfraud.errors import PayloadError
from secure_agg import Payload
from secure_agg.base import MAX_CHUNKS
from tests.attacks.conftest import BANKS, Consortium

pytestmark = pytest.mark.usefixtures("task_identity")
HUGE = 2**50  # bytes(HUGE) asks for a petabyte: MemoryError before issue 13


@pytest.mark.parametrize(
    "record, why",
    [
        ({"backend": "none", "chunks": [HUGE], "meta": "{}"}, "must be bytes"),
        ({"backend": "none", "chunks": [b""] * (MAX_CHUNKS + 1), "meta": "{}"}, "chunks"),
        ({"backend": "none", "chunks": b"abc", "meta": "{}"}, "not a list"),
        ({"backend": "none", "chunks": [], "meta": "x" * 100_000}, "meta"),
        ({"backend": HUGE, "chunks": [], "meta": "{}"}, "backend"),
        ({"chunks": []}, "missing"),
    ],
)
def test_ill_typed_or_oversized_payload_is_refused_before_allocating(record, why):
    start = time.perf_counter()
    with pytest.raises(PayloadError, match=why):
        Payload.from_record(record)
    assert time.perf_counter() - start < 1.0


def test_payload_above_the_size_limit_is_refused():
    with pytest.raises(PayloadError, match="larger than"):
        Payload.from_record(
            {"backend": "none", "chunks": [b"x" * 2048], "meta": "{}"}, max_bytes=1024
        )


def hostile(kind: str):
    """A node answering every stage with something malformed."""

    def answer(msg: Message) -> Message:
        bank = ConfigRecord({rm.BANK_ID: f"evil-{kind}"})
        if kind == "huge-int-chunk":
            update = ConfigRecord({"backend": "none", "chunks": [HUGE], "meta": "{}"})
            content = RecordDict({rm.UPDATE: update, rm.BANK: bank})
        elif kind == "no-bank-record":
            content = RecordDict({rm.METRICS: MetricRecord({"train_s": 1.0})})
        else:  # a list where the operator expects a timing, under a rostered bank's name
            metrics = MetricRecord({"train_s": [1e308, 2.0], "pr_auc": [0.0]})
            content = RecordDict({rm.METRICS: metrics, rm.BANK: ConfigRecord({rm.BANK_ID: 7})})
        return Message(content, reply_to=msg)

    return answer


def test_hostile_nodes_cannot_crash_the_run(small_consortium, tmp_path):
    banks = Consortium(small_consortium, tmp_path)
    rogue = {900 + i: hostile(k) for i, k in enumerate(["huge-int-chunk", "no-bank-record", "x"])}
    fed = banks.operator(RunConfig(num_banks=3, num_rounds=1), rogue=rogue)
    results = fed.run()  # the whole run: stats, one round, evaluation
    (record,) = results["rounds"]
    assert record["banks"] == BANKS
    assert {f"node-{n}" for n in rogue} <= set(record["failures"])
    assert 0.0 <= record["metrics"]["pooled"]["pr_auc"] <= 1.0
