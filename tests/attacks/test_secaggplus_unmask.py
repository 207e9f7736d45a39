"""Attack 3 (issue 14): the operator abuses Flower's SecAgg+ to read one bank's vector.

The real protocol runs in process: Flower's SecAggPlusWorkflow (through our `run_exchange`) on
the operator's side, and on each bank a ClientApp wrapped in our `client_mod` around Flower's
`secaggplus_mod`. The malicious operator edits its own messages on the way out.

Before (main at 14ae96a): the banks answered an unmask request listing bank A as both ACTIVE and
DEAD with A's mask-seed share and A's key share, so the operator alone could rebuild A's masked
vector's masks; public keys relayed by the operator were taken unsigned (it could substitute its
own); masks came from a 32-bit seed (`np.random.RandomState`). Now the banks refuse such
requests, refuse unsigned or re-signed keys, and both sides mask with a 256-bit-seeded ChaCha20.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from fedfraud import round_messages as rm
from secure_agg import secaggplus_hardening as hardening
from secure_agg.roster import IDENTITY_FILE, ROSTER_FILE, init_roster
from secure_agg.secaggplus import SecAggPlusAggregator, SecAggPlusSettings, client_mod

BANKS = ["bank-00", "bank-01", "bank-02", "bank-03"]
ROWS = {"bank-00": 500.0, "bank-01": 1500.0, "bank-02": 4000.0, "bank-03": 900.0}


def update(bank: str) -> list[np.ndarray]:
    return [np.random.default_rng(BANKS.index(bank)).normal(0, 0.5, (20,))]


def bank_app() -> ClientApp:
    agg = SecAggPlusAggregator("client", SecAggPlusSettings(num_banks=len(BANKS)))
    app = ClientApp()

    @app.train(mods=[client_mod()])
    def train(msg, ctx):
        bank = str(ctx.node_config["bank-id"])
        payload = agg.client_protect(update(bank), ROWS[bank], round=1)
        content = RecordDict(
            {
                rm.UPDATE: ConfigRecord(payload.to_record()),
                rm.BANK: ConfigRecord({rm.BANK_ID: bank}),
                rm.METRICS: MetricRecord({"num_values": 20.0}),
            }
        )
        return Message(content, reply_to=msg)

    return app


class OperatorGrid:
    """Delivers the workflow's messages to the banks' real ClientApp; `tamper(stage, msgs)` is
    the malicious operator editing what it sends; replies are kept per stage."""

    run = SimpleNamespace(run_id=7)

    def __init__(self, roster_dir, tamper=None):
        self.app = bank_app()
        self.contexts = {
            11 + i: Context(
                7,
                11 + i,
                {
                    "bank-id": b,
                    "identity-path": str(roster_dir / b / IDENTITY_FILE),
                    "roster-path": str(roster_dir / ROSTER_FILE),
                },
                RecordDict(),
                {},
            )
            for i, b in enumerate(BANKS)
        }
        self.tamper = tamper or (lambda stage, msgs: None)
        self.replies: dict[str, list[Message]] = {}
        self.sent = 0

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, timeout=None):
        messages = list(messages)
        stage = str(messages[0].content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])
        self.tamper(stage, messages)
        replies = []
        for msg in messages:
            self.sent += 1
            msg.metadata.__dict__["_message_id"] = f"m{self.sent}"
            msg.metadata.__dict__["_run_id"] = 7
            # A copy, as the wire gives each node its own (the mod edits what it receives).
            delivered = copy.deepcopy(msg)
            replies.append(self.app(delivered, self.contexts[msg.metadata.dst_node_id]))
        self.replies[stage] = replies
        return replies


@pytest.fixture
def roster_dir(tmp_path, task_identity):  # noqa: F811
    init_roster(BANKS, tmp_path)
    return tmp_path


def exchange(grid):
    server = SecAggPlusAggregator("server", SecAggPlusSettings(num_banks=len(BANKS)))
    content = RecordDict({rm.CONFIG: ConfigRecord({rm.ROUND: 1})})
    return server.server_exchange(grid, grid.get_node_ids(), "train", content, 30)


def test_honest_exchange_with_signed_keys_gives_the_weighted_sum(roster_dir):
    result = exchange(OperatorGrid(roster_dir))
    assert result.aggregate is not None, result.error
    total = np.frombuffer(result.aggregate.payload.chunks[0], "<f8")
    expected = sum(ROWS[b] * update(b)[0] for b in BANKS) / sum(ROWS.values())
    np.testing.assert_allclose(total[:-1] / total[-1], expected, atol=1e-3)


def test_bank_listed_active_and_dead_gets_no_share_revealed(roster_dir):
    target = 11  # bank-00

    def list_target_as_dead_too(stage, messages):
        if stage == Stage.UNMASK:
            for msg in messages:
                configs = msg.content.config_records[RECORD_KEY_CONFIGS]
                configs[Key.DEAD_NODE_ID_LIST] = [*configs[Key.DEAD_NODE_ID_LIST], target]

    grid = OperatorGrid(roster_dir, list_target_as_dead_too)
    result = exchange(grid)
    assert result.aggregate is None
    replies = grid.replies[Stage.UNMASK]
    assert replies and all(r.has_error() for r in replies)
    assert all("both active and dead" in r.error.reason for r in replies)
    # Nothing any bank sent in the unmask stage carries a share.
    assert not any(r.has_content() for r in replies)


def test_unmask_request_outside_the_neighbour_set_is_refused(roster_dir):
    def add_stranger(stage, messages):
        if stage == Stage.UNMASK:
            for msg in messages:
                configs = msg.content.config_records[RECORD_KEY_CONFIGS]
                configs[Key.DEAD_NODE_ID_LIST] = [*configs[Key.DEAD_NODE_ID_LIST], 999]

    grid = OperatorGrid(roster_dir, add_stranger)
    assert exchange(grid).aggregate is None
    assert all("outside" in r.error.reason for r in grid.replies[Stage.UNMASK])


def test_operator_substituting_a_banks_public_keys_is_refused(roster_dir):
    from flwr.supercore.primitives.asymmetric import generate_key_pairs, public_key_to_bytes

    def substitute(stage, messages):
        if stage == Stage.SHARE_KEYS:
            _, pk = generate_key_pairs()
            for msg in messages:
                configs = msg.content.config_records[RECORD_KEY_CONFIGS]
                pk1, _ = configs["12"]
                configs["12"] = [pk1, public_key_to_bytes(pk)]  # operator's key for bank-01

    grid = OperatorGrid(roster_dir, substitute)
    assert exchange(grid).aggregate is None
    replies = grid.replies[Stage.SHARE_KEYS]
    assert len(replies) == len(BANKS) and all(r.has_error() for r in replies)
    assert all("node 12 are not signed" in r.error.reason for r in replies)


def test_keys_relayed_without_signatures_are_refused(roster_dir):
    def strip(stage, messages):
        if stage == Stage.SHARE_KEYS:
            for msg in messages:
                del msg.content[hardening.KEY_SIGNATURES]

    grid = OperatorGrid(roster_dir, strip)
    assert exchange(grid).aggregate is None
    assert all("without roster signatures" in r.error.reason for r in grid.replies["share_keys"])


def test_both_sides_mask_with_the_256_bit_seeded_prg_of_pinned_flower():
    # Fails when Flower changes a function the patch relies on: re-check the patch, then re-pin.
    assert hardening.flower_version() == hardening.FLOWER_VERSION
    assert hardening.pinned_sources() == hardening.FLOWER_PINS
    assert hardening.prg_installed()
    zero = bytes(32)
    folds_to_zero = b"\x01" + bytes(3) + b"\x01" + bytes(27)  # two words that XOR to 0
    # Flower's own PRG folds the 256-bit seed to 32 bits: these two seeds give the same masks.
    original = hardening._ORIGINAL_PRG
    assert np.array_equal(
        original(folds_to_zero, 2**32, [(8,)])[0], original(zero, 2**32, [(8,)])[0]
    )
    ours = [hardening.wide_prg(seed, 2**32, [(8,)])[0] for seed in (zero, folds_to_zero)]
    assert not np.array_equal(*ours)
    assert all(0 <= int(v) < 2**32 for v in ours[0])


from tests.fl.conftest import task_identity  # noqa: E402, F401
