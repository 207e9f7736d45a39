"""Attack 4 (issue 14): the operator fabricates CrypTen contributions to isolate one bank.

Sealing a share needs only the compute parties' public keys, so the operator can make payloads
for banks that never sent any and sum them with bank A's: the sum minus its own inputs is A's
exact update. Before (main at 14ae96a): the parties took min-banks from the operator's job
(default 2), accepted any sealed share, and the operator ran every party with all their keys
(only a warning). Now a party that pins the roster opens only shares signed by the bank named,
keeps its own floor of three contributors and one sum per stage, and an operator holding more
than one party's key refuses to run unless it is a simulation.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import secure_agg
from fedfraud.errors import ConfigError, PayloadError
from secure_agg.base import StageContext, flatten
from secure_agg.crypten_mpc import init_parties
from secure_agg.roster import IDENTITY_FILE, ROSTER_FILE, init_roster

BANKS = ("bank-a", "bank-b", "bank-c")
SHAPES = [(6, 4), (4,)]


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    root = tmp_path_factory.mktemp("crypten-attack")
    init_parties(root / "parties", 3)
    init_roster(list(BANKS), root / "roster")
    return root


def options(root, **extra):
    return {"crypten-parties-dir": str(root / "parties"), **extra}


def bank(root, name):
    return secure_agg.get(
        "crypten",
        "client",
        options(
            root,
            **{
                "identity-path": str(root / "roster" / name / IDENTITY_FILE),
                "roster-path": str(root / "roster" / ROSTER_FILE),
            },
        ),
    )


@pytest.fixture(scope="module")
def operator(consortium):
    # A simulation (the operator runs the parties), but the parties pin the roster.
    server = secure_agg.get(
        "crypten",
        "server",
        options(
            consortium,
            **{
                "crypten-simulation": True,
                "crypten-party-roster": str(consortium / "roster" / ROSTER_FILE),
            },
        ),
    )
    # A deviating operator asks for sums of two (its own code refuses min-banks < 3); the
    # parties' floor of 3 is theirs.
    server.settings = dataclasses.replace(server.settings, min_banks=2)
    yield server
    server.close()


def update(i: int) -> list[np.ndarray]:
    rng = np.random.default_rng(i)
    return [rng.normal(0, 0.1, s) for s in SHAPES]


def stage(name: str, rnd: int) -> StageContext:
    return StageContext("run-9", rnd, "train", BANKS, name)


def test_operator_holding_every_party_key_refuses_outside_simulation(consortium):
    with pytest.raises(ConfigError, match="crypten-simulation=true only for a local simulation"):
        secure_agg.get("crypten", "server", options(consortium))


@pytest.mark.e2e
def test_fabricated_contributions_next_to_one_real_bank_reveal_nothing(consortium, operator):
    real = bank(consortium, "bank-a").client_protect(update(0), 5.0, 1, context=stage("bank-a", 1))
    forger = secure_agg.get("crypten", "client", options(consortium))  # public keys only
    payloads = {"bank-a": real}
    for name in ("bank-b", "bank-c"):
        payloads[name] = forger.client_protect([np.zeros(s) for s in SHAPES], 1.0, 1)
    with pytest.raises(PayloadError, match="fewer than 3 banks"):
        operator.server_aggregate(payloads)


@pytest.mark.e2e
def test_signed_sum_is_revealed_once_per_stage(consortium, operator):
    banks = {name: bank(consortium, name) for name in BANKS}
    payloads = {
        name: banks[name].client_protect(update(i), 1.0 + i, 2, context=stage(name, 2))
        for i, name in enumerate(BANKS)
    }
    agg = operator.server_aggregate(payloads)
    assert agg.included == BANKS
    mean = flatten(banks["bank-a"].client_reveal(agg.payload, SHAPES))
    exact = sum((1.0 + i) * flatten(update(i)) for i in range(3)) / 6.0
    np.testing.assert_allclose(mean, exact, atol=1e-5)
    # Asking again for the same stage with two of them (to difference out the third): refused.
    again = {name: payloads[name] for name in BANKS[:2]}
    again["bank-c"] = banks["bank-c"].client_protect(update(9), 1.0, 2, context=stage("bank-c", 2))
    with pytest.raises(PayloadError, match="one sum per stage"):
        operator.server_aggregate(again)
