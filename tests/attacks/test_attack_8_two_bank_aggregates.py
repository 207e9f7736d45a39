"""Attack 8 of issue 13, two-bank aggregates: after one dropout in a 3-bank round, the
operator hands the survivors the sum of the two of them, from which each would read the
other's exact update. Banks now open no aggregate of fewer than 3 signed contributions, and
nothing below 3 can be configured."""

from __future__ import annotations

import pytest

from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fedfraud.errors import ConfigError
from fedfraud.policy import BankPolicy
from secure_agg import get
from tests.attacks.conftest import Consortium

pytestmark = pytest.mark.usefixtures("task_identity")


@pytest.mark.parametrize("backend", ["none", "ckks"])
def test_survivor_refuses_the_sum_of_two_banks_after_a_dropout(small_consortium, tmp_path, backend):
    # Before: min-banks=2 let the operator aggregate the two survivors and bank-00 revealed
    # (and trained on) that sum, i.e. learned bank-01's exact update.
    banks = Consortium(small_consortium, tmp_path, backend=backend)
    fed = banks.operator(RunConfig(num_banks=3, num_rounds=2, secure_agg=backend))
    banks.stats(fed)
    replies = banks.train(fed, sorted(banks.contexts), 1)
    assert sorted(replies.payloads) == ["bank-00", "bank-01", "bank-02"]
    # bank-02 "drops out": the operator aggregates the other two and forwards their signatures.
    banks.forged_global(fed, replies, ["bank-00", "bank-01"], 1)
    again = banks.train(fed, [banks.node["bank-00"]], 2)
    assert again.payloads == {}
    (reply,) = fed.grid.replies[-1:]
    assert reply.has_error() and reply.error.code == rm.REFUSED_ERROR_CODE


def test_bank_refuses_a_stage_announcing_two_participants(small_consortium, tmp_path):
    banks = Consortium(small_consortium, tmp_path)
    fed = banks.operator(RunConfig(num_banks=3, num_rounds=1))
    # The operator announces a two-bank participant set (and asks only those two).
    fed.participants = lambda nodes: ("bank-00", "bank-01")
    replies = fed.broadcast([200, 201], f"query.{rm.STATS}", 0, {})
    assert replies.participants == ("bank-00", "bank-01")
    assert replies.payloads == {}
    assert {r.error.code for r in fed.grid.replies} == {rm.REFUSED_ERROR_CODE}


def test_nothing_below_three_banks_can_be_configured(tmp_path):
    with pytest.raises(ConfigError, match="min-banks must be at least 3"):
        RunConfig(num_banks=3, min_banks=2)
    assert RunConfig().min_banks == 3
    with pytest.raises(ConfigError, match="min-contributors"):
        BankPolicy.from_mapping(
            {"bank-id": "b", "roster-path": "r", "identity-path": "i", "min-contributors": 2}
        )
    with pytest.raises(ConfigError, match="crypten-min-banks must be at least 3"):
        get("crypten", "client", {"crypten-min-banks": 2, "crypten-parties-dir": str(tmp_path)})
