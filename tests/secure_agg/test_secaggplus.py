"""secagg+: Flower's SecAgg+ through our exchange and mod, checked against exact weighted FedAvg.

One real Flower simulation of 5 synthetic banks runs several exchanges (all banks, a bank lost
during training, a bank lost right after setup, too many lost, an update too large to mask, the
two-digit feature statistics) and the tests check each aggregate against the exact weighted
mean of the vectors the banks held. Option checks need no simulation.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedfraud import round_messages as rm
from fedfraud.errors import ConfigError
from secure_agg import Payload, get, is_interactive, validate
from secure_agg.secaggplus import STATS_TYPE, SecAggPlusAggregator, SecAggPlusSettings

# The synthetic banks below run in Ray workers, which cannot import this test module.
ray_cloudpickle = pytest.importorskip("ray.cloudpickle")
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])

BANKS = 5
ROWS = [300, 2_000, 15_000, 60_000, 140_000]  # skewed banks; weights are training rows
SHAPES = [(40, 30), (30,), (30, 1), (1,)]
LOST_IN_TRAINING = {2: {4}, 4: {2, 3, 4}}  # round -> banks whose training fails
# round -> (SecAgg+ stage, banks that fail it): lost after sending their public keys, lost
# before sending any, lost after their masked vector is in
LOST_AT_STAGE = {3: ("share_keys", {4}), 6: ("setup", {0}), 7: ("unmask", {2})}
TOO_LARGE = {5: {3}}  # round -> banks whose update does not fit the clipping range


def bank_update(bank: int, rnd: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1000 * rnd + bank)
    update = [rng.normal(0, 0.5, s) for s in SHAPES]
    update[1][:2] = (-6.0, 6.0)  # large but inside the range at these weights
    if bank in TOO_LARGE.get(rnd, ()):
        update[0][0, 0] = 1e4
    return update


def bank_moments(bank: int) -> list[np.ndarray]:
    rng = np.random.default_rng(bank)
    return [rng.normal(3, 1, 12), rng.normal(150, 40, 12), rng.random(5), rng.random(5) * 0.01]


def exact_mean(vectors: dict[int, list[np.ndarray]]) -> np.ndarray:
    total = sum(ROWS[b] * np.concatenate([a.ravel() for a in v]) for b, v in vectors.items())
    return total / sum(ROWS[b] for b in vectors)


def make_bank_app(audit_dir: Path):
    """Synthetic banks wired like fl_client.app: stats routed by the mod, train wrapped by it.
    Everything lives in this function so Ray pickles it by value."""
    from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

    from secure_agg.secaggplus import client_mod

    def audit(msg, ctx, call_next):
        # What leaves a bank in SecAgg+ must never hold its clear update.
        reply = call_next(msg, ctx)
        if RECORD_KEY_CONFIGS in msg.content.config_records and reply.has_content():
            clear = rm.UPDATE in reply.content or any(
                len(r) for r in reply.content.array_records.values()
            )
            if clear:
                (audit_dir / f"leak-{ctx.node_config['partition-id']}").touch()
        return reply

    def lose_at_stage(msg, ctx, call_next):
        configs = msg.content.config_records.get(RECORD_KEY_CONFIGS, {})
        stage, banks = LOST_AT_STAGE.get(int(msg.metadata.group_id or -1), ("", ()))
        if configs.get(Key.STAGE) == stage and int(ctx.node_config["partition-id"]) in banks:
            return Message(Error(rm.BANK_ERROR_CODE, f"bank lost at {stage}"), reply_to=msg)
        return call_next(msg, ctx)

    agg = SecAggPlusAggregator("client", SecAggPlusSettings(num_banks=BANKS))
    app = ClientApp(mods=[audit, lose_at_stage])

    def reply(msg, ctx, update, weight) -> Message:
        bank = int(ctx.node_config["partition-id"])
        payload = agg.client_protect(update, weight, round=int(msg.content[rm.CONFIG][rm.ROUND]))
        content = RecordDict(
            {
                rm.UPDATE: ConfigRecord(payload.to_record()),
                rm.BANK: ConfigRecord({rm.BANK_ID: f"bank-{bank}"}),
                rm.METRICS: MetricRecord({"num_values": 1231.0}),
            }
        )
        return Message(content, reply_to=msg)

    @app.query(rm.STATS)
    def stats(msg, ctx):
        bank = int(ctx.node_config["partition-id"])
        return reply(msg, ctx, bank_moments(bank), ROWS[bank])

    @app.train(mods=[client_mod({STATS_TYPE: stats})])
    def train(msg, ctx):
        bank = int(ctx.node_config["partition-id"])
        rnd = int(msg.content[rm.CONFIG][rm.ROUND])
        if bank in LOST_IN_TRAINING.get(rnd, ()):
            return Message(Error(rm.BANK_ERROR_CODE, "bank lost during training"), reply_to=msg)
        return reply(msg, ctx, bank_update(bank, rnd), ROWS[bank])

    return app


@pytest.fixture(scope="module")
def exchanges(tmp_path_factory) -> dict[str, Any]:
    """Run every exchange of the plan in one simulation; returns round -> Exchange."""
    from flwr.app import ConfigRecord, RecordDict
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    tmp = tmp_path_factory.mktemp("secaggplus")
    mp = pytest.MonkeyPatch()
    mp.setenv("FLWR_HOME", str(tmp / "flwr"))
    server = SecAggPlusAggregator("server", SecAggPlusSettings(num_banks=BANKS))
    # What training rounds carry: the stats aggregate, and from round 2 the previous model
    # (whose total weight sets W).
    scaler = Payload("secagg+", (np.array([1.0, 9.0]).astype("<f8").tobytes(),), {"size": 2})
    previous = np.array([0.0, float(sum(ROWS))]).astype("<f8").tobytes()
    model = Payload("secagg+", (previous,), {"size": 2})
    out: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid, context) -> None:
        deadline = time.monotonic() + 120
        while len(nodes := sorted(grid.get_node_ids())) < BANKS and time.monotonic() < deadline:
            time.sleep(0.2)
        out["nodes"] = nodes

        def content(rnd: int) -> RecordDict:
            records = RecordDict({rm.CONFIG: ConfigRecord({rm.ROUND: rnd})})
            if rnd >= 1:
                records[rm.SCALER] = ConfigRecord(scaler.to_record())
            if rnd >= 2:
                records[rm.GLOBAL] = ConfigRecord(model.to_record())
            return records

        out["stats"] = server.server_exchange(grid, nodes, STATS_TYPE, content(0), 60)
        for rnd in range(1, 9):
            out[rnd] = server.server_exchange(grid, nodes, "train", content(rnd), 60)

    run_simulation(
        server_app=server_app,
        client_app=make_bank_app(tmp),
        num_supernodes=BANKS,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"logging_level": logging.ERROR, "log_to_driver": False},
        },
    )
    mp.undo()
    out["leaks"] = sorted(p.name for p in tmp.glob("leak-*"))
    return out


def revealed(exchange) -> np.ndarray:
    """The weighted mean in float64 (client_reveal then casts to float32, as models use)."""
    total = np.frombuffer(exchange.aggregate.payload.chunks[0], "<f8")
    return total[:-1] / total[-1]


def included(exchange) -> set[int]:
    return {int(b.split("-")[1]) for b in exchange.aggregate.included}


def errors(exchange) -> dict[str, str]:
    return {
        f"node-{m.metadata.src_node_id}": m.error.reason for m in exchange.replies if m.has_error()
    }


@pytest.mark.e2e
def test_aggregate_equals_exact_weighted_fedavg_within_quantization_error(exchanges):
    ex = exchanges[8]  # a round after the first: W from the previous total, one digit
    assert ex.error is None and included(ex) == set(range(BANKS))
    expected = exact_mean({b: bank_update(b, 8) for b in range(BANKS)})
    meta = ex.aggregate.payload.meta
    assert np.max(np.abs(revealed(ex) - expected)) <= meta["max_error"] < 1e-6
    # W is twice the previous total weight; T the largest 2^k with 5 * T < 2^32.
    assert (meta["weight_scale"], meta["quantization_range"]) == (2 * sum(ROWS), 2**29)
    total_weight = np.frombuffer(ex.aggregate.payload.chunks[0], "<f8")[-1]
    assert total_weight == pytest.approx(sum(ROWS), rel=1e-12)  # sent as two digits
    client = SecAggPlusAggregator("client", SecAggPlusSettings(num_banks=BANKS))
    assert client.client_reveal(ex.aggregate.payload, [(expected.size,)])[0].dtype == np.float32


@pytest.mark.e2e
def test_first_round_goes_as_two_digits_and_is_exact_to_float64(exchanges):
    ex = exchanges[1]  # no scale known yet: W = secagg-max-weight (2^20 rows)
    assert ex.error is None and included(ex) == set(range(BANKS))
    expected = exact_mean({b: bank_update(b, 1) for b in range(BANKS)})
    assert ex.aggregate.payload.meta["weight_scale"] == 2.0**20
    assert np.max(np.abs(revealed(ex) - expected)) <= ex.aggregate.payload.meta["max_error"] < 1e-11


@pytest.mark.e2e
def test_bank_lost_during_training_leaves_the_exact_mean_of_the_others(exchanges):
    ex = exchanges[2]
    assert ex.error is None and included(ex) == {0, 1, 2, 3}
    expected = exact_mean({b: bank_update(b, 2) for b in range(4)})
    assert np.max(np.abs(revealed(ex) - expected)) <= ex.aggregate.payload.meta["max_error"]
    assert list(errors(ex).values()) == ["bank lost during training"]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("rnd", "summed"), [(3, {0, 1, 2, 3}), (6, {1, 2, 3, 4}), (7, set(range(5)))]
)
def test_bank_lost_at_any_protocol_stage_leaves_the_exact_mean(exchanges, rnd, summed):
    # Lost at share keys or setup: it masked nothing and is left out (Flower 1.42 alone fails
    # these, see _Workflow). Lost at unmask: its vector is in; the others rebuild its mask.
    ex = exchanges[rnd]
    assert ex.error is None and included(ex) == summed
    expected = exact_mean({b: bank_update(b, rnd) for b in summed})
    assert np.max(np.abs(revealed(ex) - expected)) <= ex.aggregate.payload.meta["max_error"]
    stage = LOST_AT_STAGE[rnd][0]
    assert any(f"bank lost at {stage}" in r for r in errors(ex).values()) == (stage != "unmask")


@pytest.mark.e2e
def test_too_many_banks_lost_fails_the_exchange_with_the_reason(exchanges):
    ex = exchanges[4]
    assert ex.aggregate is None
    assert "collect_masked_vectors" in ex.error and "live neighbours" in ex.error
    assert sum("bank lost during training" in r for r in errors(ex).values()) == 3


@pytest.mark.e2e
def test_update_outside_the_clipping_range_is_refused_by_its_bank(exchanges):
    ex = exchanges[5]
    assert ex.error is None and included(ex) == {0, 1, 2, 4}
    (reason,) = errors(ex).values()
    assert "would clip" in reason and "secagg-clipping-range" in reason


@pytest.mark.e2e
def test_feature_statistics_are_exact_to_float64(exchanges):
    ex = exchanges["stats"]
    assert ex.error is None and included(ex) == set(range(BANKS))
    expected = exact_mean({b: bank_moments(b) for b in range(BANKS)})
    assert np.max(np.abs(revealed(ex) - expected)) <= ex.aggregate.payload.meta["max_error"] < 1e-9


@pytest.mark.e2e
def test_masked_replies_carry_no_clear_update_and_bytes_are_counted(exchanges):
    assert exchanges["leaks"] == []
    # int64 masked values (Flower's wire format): 8 bytes per value plus keys and shares;
    # round 1 sends every value as two digits, later rounds only the weight.
    values = sum(int(np.prod(s)) for s in SHAPES) + 1
    for rnd, size in ((1, 2 * values), (8, values + 1)):
        sent = [Payload.from_record(m.content[rm.UPDATE]) for m in exchanges[rnd].replies]
        assert all(8 * size < p.nbytes() < 8 * size + 4096 for p in sent)


# -- options, checked up front ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "fix"),
    [
        ({"num-banks": 2}, "at least 3 banks"),
        ({"secagg-num-shares": 4}, "use an odd number"),
        ({"secagg-num-shares": 7}, "between 3 and the 5 banks"),
        ({"secagg-reconstruction-threshold": 5}, "use 3 (a majority)"),
        ({"secagg-num-shares": 3, "secagg-reconstruction-threshold": 3}, "below the 3 shares"),
        ({"secagg-reconstruction-threshold": 1}, "at least 2"),
        ({"secagg-modulus-range": 3_000_000_000}, "power of two"),
        ({"secagg-modulus-range": 2**40}, "between 2^16 and 2^32"),
        ({"secagg-quantization-range": 2**30}, "use at most 536870912"),
        ({"secagg-clipping-range": 0}, "positive"),
        ({"secagg-num-shares": "three"}, "must be a number"),
        ({"secagg-exact": "maybe"}, "true or false"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(options, fix):
    with pytest.raises(ConfigError, match=re.escape(fix)):
        validate("secagg+", {"num-banks": 5, **options})
    with pytest.raises(ConfigError, match=re.escape(fix)):
        get("secagg+", "server", {"num-banks": 5, **options})


def test_even_share_count_equal_to_the_banks_is_allowed():
    # Every bank shares with every other: Flower does not bump it then.
    assert SecAggPlusSettings.from_options({"num-banks": 4}).shares(4) == (4, 3)
    assert SecAggPlusSettings.from_options({"num-banks": 10}).quantization(10) == 2**28


def test_operator_side_is_interactive_and_refuses_plain_aggregation():
    from fedfraud.errors import PayloadError

    agg = get("secagg+", "server", {"num-banks": 5})
    assert is_interactive(agg) and not is_interactive(get("none", "server", {}))
    with pytest.raises(PayloadError, match="server_exchange"):
        agg.server_aggregate({})


def test_cli_rejects_bad_secagg_settings_before_starting(tmp_path, small_consortium):
    import os
    import subprocess

    args = ["simulate", "--out", str(tmp_path / "run"), "--data", str(small_consortium)]
    args += ["--banks", "3", "--secure-agg", "secagg+"]
    args += ["--secure-agg-option", "secagg-num-shares=2"]
    proc = subprocess.run(
        [sys.executable, "-m", "fedfraud.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "secagg-num-shares=2 must be between 3" in " ".join(proc.stderr.split())
    assert not (tmp_path / "run" / "results.json").exists()


# -- the whole federation: secagg+ against none on the same banks ------------------------------
LOST_BANK, LOST_ROUND = 2, 2  # bank-02 fails while training in round 2, under both backends


def make_losing_bank_app():
    """fl_client.app's functions, wired as there, with bank-02 failing to train in round 2
    (inside the SecAgg+ mod: it has sent its keys and shares, then its masked vector never
    comes)."""
    from flwr.app import Error, Message
    from flwr.clientapp import ClientApp

    from fl_client import app as bank
    from secure_agg.secaggplus import client_mod

    def lose(msg, ctx, call_next):
        rnd = int(msg.content[rm.CONFIG][rm.ROUND])
        if (int(ctx.node_config["partition-id"]), rnd) == (LOST_BANK, LOST_ROUND):
            return Message(Error(rm.BANK_ERROR_CODE, "bank lost during training"), reply_to=msg)
        return call_next(msg, ctx)

    app = ClientApp()
    app.query(rm.STATS)(bank.stats)
    app.query(rm.POOLED)(bank.pooled)
    routes = {STATS_TYPE: bank.stats, "evaluate": bank.evaluate}
    app.train(mods=[client_mod(routes), lose])(bank.train)
    app.evaluate()(bank.evaluate)
    return app


@pytest.fixture(scope="module")
def federations(tmp_path_factory) -> dict[str, Any]:
    """none then secagg+, 3 rounds on the same 4 banks, in one simulation (four since issue 13:
    after bank-02 is lost, min-banks 3 remain), each bank pinning a policy and the roster."""
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from fedfraud.config import RunConfig
    from fedfraud.data.store import write_banks
    from fl_server.federation import Federation
    from tests.conftest import random_bank

    tmp = tmp_path_factory.mktemp("federations")
    rng = np.random.default_rng(7)
    frames = {f"bank-{i:02d}": random_bank(rng, 3000, 100_000 * (i + 1)) for i in range(4)}
    write_banks(frames, tmp / "banks")
    base = RunConfig(num_banks=4, num_rounds=3, data_format="banks", data_dir=str(tmp / "banks"))
    from secure_agg.consortium import CONSORTIUM_DIR_KEY, provision_consortium

    consortium = provision_consortium(
        tmp / "consortium", sorted(frames), allowed_backends=["none", "secagg+"]
    )
    shared = {CONSORTIUM_DIR_KEY: str(consortium)}
    mp = pytest.MonkeyPatch()
    mp.setenv("FLWR_HOME", str(tmp / "flwr"))
    out: dict[str, Any] = {}
    server_app = ServerApp()

    def federate(grid, backend: str) -> tuple[dict[str, Any], list[Payload]]:
        cfg = base.replace(secure_agg=backend)
        models: list[Payload] = []
        agg = get(backend, "server", cfg.to_run_config())
        fed = Federation(
            grid,
            cfg,
            agg,
            on_round=lambda _: models.append(fed.state.global_model),
            shared_options=shared,
        )
        return fed.run(), models

    @server_app.main()
    def main(grid, context) -> None:
        for backend in ("none", "secagg+"):
            out[backend] = federate(grid, backend)

    run_simulation(
        server_app=server_app,
        client_app=make_losing_bank_app(),
        num_supernodes=4,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"logging_level": logging.ERROR, "log_to_driver": False},
        },
    )
    mp.undo()
    return out


def global_models(federations, backend: str) -> list[np.ndarray]:
    agg = get(backend, "client", {"num-banks": 3})
    return [
        np.frombuffer(p.chunks[0], "<f8")[:-1] / np.frombuffer(p.chunks[0], "<f8")[-1]
        if backend == "secagg+"
        else agg.client_reveal(p, [(p.meta["size"] - 1,)])[0].astype(np.float64)
        for p in federations[backend][1]
    ]


@pytest.mark.e2e
def test_federation_with_secaggplus_matches_plaintext_fedavg(federations):
    (plain, _), (secure, _) = federations["none"], federations["secagg+"]
    for results in (plain, secure):
        assert [r["num_results"] for r in results["rounds"]] == [4, 3, 4]
        assert "bank lost during training" in str(results["rounds"][1]["failures"])
    first = [
        m[0] for m in (global_models(federations, "none"), global_models(federations, "secagg+"))
    ]
    # Round 1 differs only by quantization (and 'none''s float32 upload); Adam amplifies any
    # difference in later rounds, so those are compared through the metrics.
    assert np.max(np.abs(first[0] - first[1])) < 1e-5
    final = [global_models(federations, b)[-1] for b in ("none", "secagg+")]
    assert np.max(np.abs(final[0] - final[1])) < 2e-3
    for key in ("pr_auc", "roc_auc"):
        assert secure["final"]["pooled"][key] == pytest.approx(
            plain["final"]["pooled"][key], abs=1e-3
        )
    # int64 masked values: 2x the fp32 bytes; round 1 sends two digits per value: 4x.
    ratios = [r["bytes_up"] / r["bytes_plain"] for r in secure["rounds"]]
    assert 4.0 < ratios[0] < 4.3 and all(2.0 < r < 2.2 for r in ratios[1:])
    errors = [p.meta["max_error"] for p in federations["secagg+"][1]]
    assert max(errors) < 1e-6


def test_bank_payload_names_its_vector_but_carries_no_values():
    # Masking happens in client_mod within the same call; whatever the train function returns
    # is safe to send even if the mod were missing from the wiring.
    agg = SecAggPlusAggregator("client", SecAggPlusSettings(num_banks=BANKS))
    payload = agg.client_protect(bank_update(0, 1), ROWS[0], round=1)
    assert payload.chunks == () and payload.nbytes() < 100


def test_flower_app_declares_the_secagg_options_with_the_backend_defaults():
    # Flower rejects `flwr run --run-config` keys the app does not declare.
    import tomllib
    from dataclasses import fields

    root = Path(__file__).resolve().parents[2]
    declared = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    validate("secagg+", declared)
    settings = SecAggPlusSettings.from_options(declared)
    defaults = SecAggPlusSettings(num_banks=settings.num_banks)
    assert all(getattr(settings, f.name) == getattr(defaults, f.name) for f in fields(defaults))


def test_federation_stops_with_the_reason_when_the_protocol_fails():
    from fedfraud.config import RunConfig
    from fl_server.federation import Federation, FederationError
    from secure_agg import Exchange

    class Stopped(SecAggPlusAggregator):
        def server_exchange(self, grid, nodes, message_type, content, timeout=None):
            return Exchange((), None, "SecAgg+ stopped in its unmask stage: 1 of 3 banks answered")

    cfg = RunConfig(num_banks=3)
    from secure_agg.roster import Roster

    stopped = Stopped("server", SecAggPlusSettings(num_banks=3))
    fed = Federation(None, cfg, stopped, roster=Roster({}))
    replies = fed.broadcast([1, 2, 3], "train", 1, {})
    with pytest.raises(
        FederationError, match=r"round 1: SecAgg\+ stopped in its unmask stage.*node-1"
    ):
        fed._aggregate(replies, "round 1")
