"""Attack 7 of issue 13, clear metadata: what a bank's replies tell the operator beyond the
protected payload. No per-bank test-row count, no ε (round 1's ε gives the batch count), no
ledger totals, and error replies carry a code only: no local path, no budget state.
(Per-bank evaluation metrics move to secure aggregation in the evaluation issue.)"""

from __future__ import annotations

import pytest

from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fedfraud.privacy import LEDGER_FILE
from tests.attacks.conftest import BANKS, Consortium

pytestmark = pytest.mark.usefixtures("task_identity")
ALLOWED_TRAIN_METRICS = {"num_values", "train_s", "protect_s", "reveal_s"}


def test_train_and_evaluate_replies_carry_no_epsilon_ledger_or_row_counts(
    small_consortium, tmp_path
):
    # Before: train replies carried "epsilon" and "ledger_epsilon_record" per bank, and
    # evaluate replies "n_test".
    banks = Consortium(small_consortium, tmp_path, max_epsilon=3.0)
    cfg = RunConfig(num_banks=3, num_rounds=2, dp_epsilon=3.0, batch_size=256)
    fed = banks.operator(cfg)
    banks.stats(fed)
    nodes = sorted(banks.contexts)
    replies = banks.train(fed, nodes, 1)
    assert sorted(replies.payloads) == BANKS
    for metrics in replies.metrics.values():
        assert set(metrics) <= ALLOWED_TRAIN_METRICS
    agg, _ = fed._aggregate(replies, "round 1")
    fed.state.global_model = agg.payload
    fed.state.global_proof = fed._proof(replies, agg, 1, rm.TRAIN_STAGE)
    evaluation = fed.broadcast(
        nodes,
        "evaluate",
        1,
        {rm.SCALER: fed.state.scaler, rm.MODEL: fed.state.global_model},
        {rm.SCALER: fed.state.scaler_proof, rm.MODEL: fed.state.global_proof},
        {rm.SPLIT: "val"},
        stage=rm.evaluation_stage("val"),
    )
    assert sorted(evaluation.metrics) == sorted(evaluation.payloads) == BANKS
    for metrics in evaluation.metrics.values():  # counts go protected; only timings in clear
        assert set(metrics) <= {"reveal_s", "protect_s"}
    for bank in BANKS:
        (small_consortium / bank / LEDGER_FILE).unlink()


def test_error_replies_carry_a_code_and_no_local_detail(small_consortium, tmp_path, caplog):
    # Before: the reply's reason was the bank's error text, naming its data folder (and, for a
    # spent budget, the ledger's state).
    banks = Consortium(small_consortium, tmp_path)
    missing = tmp_path / "secret-location" / "bank-00"
    banks.contexts[200].node_config["data-path"] = str(missing)
    fed = banks.operator(RunConfig(num_banks=3, num_rounds=1))
    fed.broadcast(sorted(banks.contexts), f"query.{rm.STATS}", 0, {})
    (failed,) = [r for r in fed.grid.replies if r.has_error()]
    assert failed.error.code == rm.BANK_ERROR_CODE
    assert not failed.error.reason
    assert "secret-location" in caplog.text  # the bank's own log keeps the detail


def test_spent_budget_reply_is_the_budget_code_only(small_consortium, tmp_path):
    banks = Consortium(small_consortium, tmp_path, privacy_budget=0.5)
    fed = banks.operator(RunConfig(num_banks=3, num_rounds=2, dp_epsilon=3.0, batch_size=256))
    banks.stats(fed)
    replies = banks.train(fed, sorted(banks.contexts), 1)
    assert replies.payloads == {}
    refused = [r for r in fed.grid.replies[-3:]]
    assert {r.error.code for r in refused} == {rm.BUDGET_ERROR_CODE}
    assert not any(r.error.reason for r in refused)
