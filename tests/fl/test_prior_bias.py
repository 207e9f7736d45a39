"""The stats stage reveals the consortium's training fraud rate through secure aggregation, and
every bank starts the round-1 model with its output bias at that rate's log-odds: the same
weights at every bank, from the real ClientApp handlers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

import fl_client.app as client_app
from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fedfraud.data.features import TRAIN
from fedfraud.train import get_weights
from fl_client.bank import BankNode, load_table
from fl_client.guard import BankGuard
from fl_server.consortium import stage_record
from secure_agg import get
from tests.fl.conftest import bank_consortium
from tests.fl.test_what_a_bank_sends import BANKS, backend_options, signed_stage

pytestmark = pytest.mark.usefixtures("task_identity")


def _context(banks, bank: str, options: dict) -> Context:
    node_config = {"data-path": str(banks / bank), "bank-id": bank, **options}
    return Context(1, 1, node_config, RecordDict(), {})


@pytest.mark.parametrize("backend", ["none", "ckks"])
def test_every_bank_starts_at_the_log_odds_of_the_consortium_fraud_rate(
    unequal_banks, tmp_path, backend
):
    bank_options, server_options = backend_options(backend, tmp_path)
    config = RunConfig(num_banks=3, num_rounds=1, secure_agg=backend, seed=3)
    policies = bank_consortium(tmp_path / "consortium", list(BANKS))
    options = {b: {**bank_options, **policies[b]} for b in BANKS}
    run = "prior-bias"
    server = get(backend, "server", server_options)
    # The real, signed statistics stage of every bank.
    scaler, proof = signed_stage(
        unequal_banks, client_app.stats, "query.stats", rm.STATS, config, options, run, server
    )

    tables = [load_table(unequal_banks / b, b) for b in BANKS]
    fraud = sum(float(t.y[t.mask(TRAIN)].sum()) for t in tables)
    rows = sum(int(t.mask(TRAIN).sum()) for t in tables)
    rates = {float(t.y[t.mask(TRAIN)].mean()) for t in tables}
    assert len(rates) == 3  # banks differ, so the pooled rate is not any bank's own
    prior = math.log(fraud / (rows - fraud))

    models = []
    for bank in BANKS:
        context = _context(unequal_banks, bank, options[bank])
        node = BankNode.from_configs(context.node_config, config)
        content = RecordDict(
            {
                rm.CONFIG: ConfigRecord({**config.to_run_config(), rm.ROUND: 1}),
                rm.STAGE: stage_record(run, rm.TRAIN_STAGE, BANKS),
                rm.SCALER: ConfigRecord(scaler.to_record()),
                **proof.records(rm.SCALER),
            }
        )
        msg = Message(content, dst_node_id=1, message_type="train")
        guard = BankGuard.for_node(context.node_config, client_app._options(msg, context), bank)
        ctx = guard.stage(msg.content, rm.TRAIN_STAGE, 1)
        _, revealed, _, model, _, _ = client_app._global_model(
            msg, context, config, node, guard, ctx, 0
        )
        assert revealed.fraud_rate == pytest.approx(fraud / rows, rel=1e-4)
        assert float(model.net[-1].bias.detach()) == pytest.approx(prior, abs=1e-4)
        models.append(get_weights(model))
    for other in models[1:]:  # identical initial model at every bank
        for a, b in zip(models[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
