"""The consortium roster in the protocol: a node the operator registers at the SuperLink is not
a bank (its contribution is neither aggregated by an honest operator nor accepted by any bank
from a malicious one), and no bank opens an aggregate that is not exactly the sum of at least
three distinct, validly signed contributions over one participant set."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fl_server.consortium import Proof, payload_sha256
from fl_server.federation import FederationError
from secure_agg import get
from secure_agg.roster import BankIdentity, statement
from tests.attacks.conftest import BANKS, Consortium

pytestmark = pytest.mark.usefixtures("task_identity")
ROGUE = 299


def rogue_node(claims: str, size: int):
    """A node the operator registered at the SuperLink: it answers every stage with a
    contribution of its choosing under bank id `claims`, signed with its own key."""
    identity = BankIdentity.generate(claims)

    def answer(msg: Message) -> Message:
        stage = msg.content[rm.STAGE]
        payload = get("none", "client").client_protect([np.ones(size)], 1.0, round=0)
        digest = payload_sha256(payload)
        signed = statement(
            run=stage[rm.RUN],
            round=0,
            stage=stage[rm.STAGE_NAME],
            digest=digest,
            participants=stage[rm.PARTICIPANTS],
        )
        bank = {rm.BANK_ID: claims, rm.DIGEST: digest, rm.SIGNATURE: identity.sign(signed)}
        content = RecordDict(
            {rm.UPDATE: ConfigRecord(payload.to_record()), rm.BANK: ConfigRecord(bank)}
        )
        return Message(content, reply_to=msg)

    return answer


@pytest.mark.parametrize("claims", ["bank-03", "bank-01"])
def test_unrostered_node_contribution_is_not_aggregated(small_consortium, tmp_path, claims):
    banks = Consortium(small_consortium, tmp_path)
    fed = banks.operator(RunConfig(num_banks=3, num_rounds=1))
    banks.stats(fed)
    size = int(fed.state.scaler.meta["size"]) - 1
    fed.grid.rogue[ROGUE] = rogue_node(claims, size)
    # The rogue node answers first and signs with a key the consortium's roster does not list.
    nodes = [ROGUE, *sorted(banks.contexts)]
    replies = fed.broadcast(nodes, f"query.{rm.STATS}", 0, {})
    agg, _ = fed._aggregate(replies, "stats")
    assert sorted(agg.included) == ["bank-00", "bank-01", "bank-02"]
    assert sorted(replies.signatures) == ["bank-00", "bank-01", "bank-02"]
    assert any("roster" in why or "signature" in why for why in replies.failures.values())


def test_bank_refuses_an_aggregate_holding_an_unrostered_contribution(small_consortium, tmp_path):
    banks = Consortium(small_consortium, tmp_path)
    fed = banks.operator(RunConfig(num_banks=3, num_rounds=1))
    banks.stats(fed)
    # A malicious operator adds its own contribution, signed by a key of its own.
    outsider = BankIdentity.generate("bank-03")
    proof = Proof.from_state(fed.state.scaler_proof)
    extra = get("none", "client").client_protect([np.ones(4)], 1.0, round=0)
    payloads = {**proof.payloads, "bank-03": extra}
    fed.state.scaler = fed.aggregator.server_aggregate(payloads).payload
    proof.payloads = payloads
    proof.participants = (*proof.participants, "bank-03")
    proof.signatures["bank-03"] = ("0" * 64, outsider.sign(b"anything"))
    fed.state.scaler_proof = proof.to_state()
    replies = banks.train(fed, sorted(banks.contexts), 1)
    assert replies.payloads == {}
    assert {r.error.code for r in fed.grid.replies[-3:]} == {rm.REFUSED_ERROR_CODE}


def _tampered_proof(fed, how: str) -> None:
    proof = Proof.from_state(fed.state.scaler_proof)
    banks = sorted(proof.signatures)
    if how == "one signature twice":  # two distinct valid signers only
        proof.signatures[banks[2]] = proof.signatures[banks[1]]
    elif how == "signature over another participant set":
        proof.participants = (*proof.participants, "bank-zz")
    elif how == "two contributions":
        del proof.signatures[banks[2]]
        del proof.payloads[banks[2]]
        fed.state.scaler = fed.aggregator.server_aggregate(proof.payloads).payload
    elif how == "aggregate is not their sum":  # an added chosen plaintext, as in attack 2
        size = int(next(iter(proof.payloads.values())).meta["size"]) - 1
        chosen = get("none", "client").client_protect([np.ones(size)], 1.0, 0)
        fed.state.scaler = fed.aggregator.server_aggregate({**proof.payloads, "x": chosen}).payload
    fed.state.scaler_proof = proof.to_state()


@pytest.mark.parametrize(
    "how",
    [
        "one signature twice",
        "signature over another participant set",
        "two contributions",
        "aggregate is not their sum",
    ],
)
def test_aggregate_without_three_distinct_valid_signatures_is_not_revealed(
    small_consortium, tmp_path, how
):
    # Before issue 13 a bank revealed any aggregate the operator sent (no signatures existed).
    banks = Consortium(small_consortium, tmp_path)
    fed = banks.operator(RunConfig(num_banks=3, num_rounds=1))
    banks.stats(fed)
    _tampered_proof(fed, how)
    replies = banks.train(fed, sorted(banks.contexts), 1)
    assert replies.payloads == {}
    assert {r.error.code for r in fed.grid.replies[-3:]} == {rm.REFUSED_ERROR_CODE}


def test_untampered_proof_is_accepted_as_control(small_consortium, tmp_path):
    banks = Consortium(small_consortium, tmp_path)
    fed = banks.operator(RunConfig(num_banks=3, num_rounds=1))
    banks.stats(fed)
    replies = banks.train(fed, sorted(banks.contexts), 1)
    assert sorted(replies.payloads) == ["bank-00", "bank-01", "bank-02"]


def test_second_valid_aggregate_for_one_stage_is_refused_even_by_a_fresh_process(
    small_consortium, tmp_path
):
    # Two genuine sums of one stage would let differences of subsets leak; a deployed bank
    # starts a new ClientApp process per message, so the record of what it opened is on disk.
    import fl_client.bank as bank
    import fl_client.guard as guard

    def new_process() -> None:  # what a bank keeps in memory only is gone
        guard._verified.clear()
        bank._aggregator.cache_clear()

    banks = Consortium(small_consortium, tmp_path, backend="ckks")
    fed = banks.operator(RunConfig(num_banks=3, num_rounds=1, secure_agg="ckks"))
    banks.stats(fed)
    first = fed.state.scaler
    assert sorted(banks.train(fed, sorted(banks.contexts), 1).payloads) == BANKS
    # In the same process masked CKKS refuses to mask a second vector for the stage ...
    with pytest.raises(FederationError, match="only 0 bank"):
        banks.stats(fed)
    new_process()  # ... a fresh process does not remember that,
    banks.stats(fed)  # so the same stage again: fresh masks, another valid aggregate
    assert fed.state.scaler.to_bytes() != first.to_bytes()
    new_process()  # but the record of the aggregate it opened is on disk
    replies = banks.train(fed, sorted(banks.contexts), 1)
    assert replies.payloads == {}
    assert {r.error.code for r in fed.grid.replies[-3:]} == {rm.REFUSED_ERROR_CODE}
