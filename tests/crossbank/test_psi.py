"""Private alert matching reveals exactly the intersection, and only to the asking bank."""

from __future__ import annotations

import numpy as np
import pytest

from fedfraud.crossbank.psi import alert_tokens, answer, finish, start
from fedfraud.errors import PayloadError

KEY = b"consortium-alert-key-32-bytes!!!"


def test_psi_reveals_exactly_the_plain_intersection():
    rng = np.random.default_rng(3)
    a_accounts = [f"acct-{i}" for i in rng.choice(5000, 400, replace=False)]
    b_accounts = [f"acct-{i}" for i in rng.choice(5000, 600, replace=False)]
    a_items, b_items = alert_tokens(a_accounts, KEY), alert_tokens(b_accounts, KEY)
    pending, request = start(a_items)
    setup, response = answer(b_items, request)
    found = {a_accounts[i] for i in finish(pending, setup, response)}
    assert found == set(a_accounts) & set(b_accounts)
    assert found  # the draw overlaps, so the test is not vacuous


def test_operator_guesses_without_the_key_match_nothing():
    accounts = [f"acct-{i}" for i in range(100)]
    bank_items = alert_tokens(accounts, KEY)
    guesses = alert_tokens(accounts, b"operator-guessed-key-0123456789!")  # right ids, no key
    pending, request = start(guesses)
    setup, response = answer(bank_items, request)
    assert finish(pending, setup, response) == []


def test_request_carries_no_plain_item():
    items = alert_tokens(["acct-1", "acct-2"], KEY)
    _, request = start(items)
    assert not any(item.encode() in request for item in items)
    assert b"acct-1" not in request


def test_garbage_request_is_a_payload_error():
    with pytest.raises(PayloadError, match="malformed"):
        answer(alert_tokens(["a"], KEY), b"\x00garbage")
