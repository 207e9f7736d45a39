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
from secure_agg import Payload, get

BANKS = ("bank-00", "bank-01", "bank-02")

pytestmark = pytest.mark.usefixtures("task_identity")


def _message(config: RunConfig, kind: str, extra: dict[str, Payload] | None = None) -> Message:
    content = RecordDict({rm.CONFIG: ConfigRecord({**config.to_run_config(), rm.ROUND: 1})})
    for key, payload in (extra or {}).items():
        content[key] = ConfigRecord(payload.to_record())
    return Message(content, dst_node_id=1, message_type=kind)


def _context(banks, bank: str, options: dict) -> Context:
    node_config = {"data-path": str(banks / bank), "bank-id": bank, **options}
    return Context(1, 1, node_config, RecordDict(), {})


@pytest.mark.parametrize("backend", ["none", "ckks"])
def test_every_bank_starts_at_the_log_odds_of_the_consortium_fraud_rate(
    unequal_banks, tmp_path, backend
):
    bank_options, server_options = {}, {}
    if backend == "ckks":
        from secure_agg.keys import init_keys

        paths = init_keys(tmp_path / "keys")
        bank_options = {"ckks-secret-context": str(paths.secret)}
        server_options = {"ckks-public-context": str(paths.public)}
    config = RunConfig(num_banks=3, num_rounds=1, secure_agg=backend, seed=3)
    stats = {}
    for bank in BANKS:
        reply = client_app.stats(
            _message(config, "query.stats"), _context(unequal_banks, bank, bank_options)
        )
        assert not reply.has_error(), reply.error
        stats[bank] = Payload.from_record(reply.content[rm.UPDATE])
    scaler = get(backend, "server", server_options).server_aggregate(stats).payload

    tables = [load_table(unequal_banks / b, b) for b in BANKS]
    fraud = sum(float(t.y[t.mask(TRAIN)].sum()) for t in tables)
    rows = sum(int(t.mask(TRAIN).sum()) for t in tables)
    rates = {float(t.y[t.mask(TRAIN)].mean()) for t in tables}
    assert len(rates) == 3  # banks differ, so the pooled rate is not any bank's own
    prior = math.log(fraud / (rows - fraud))

    models = []
    for bank in BANKS:
        context = _context(unequal_banks, bank, bank_options)
        node = BankNode.from_configs(context.node_config, config)
        msg = _message(config, "train", {rm.SCALER: scaler})
        _, revealed, _, model, _, _ = client_app._global_model(msg, context, config, node)
        assert revealed.fraud_rate == pytest.approx(fraud / rows, rel=1e-4)
        assert float(model.net[-1].bias.detach()) == pytest.approx(prior, abs=1e-4)
        models.append(get_weights(model))
    for other in models[1:]:  # identical initial model at every bank
        for a, b in zip(models[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
