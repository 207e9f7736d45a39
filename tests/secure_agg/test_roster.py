"""Roster keys: signatures bind to one bank, pairwise seeds agree, files round-trip."""

from __future__ import annotations

import pytest

from fedfraud.errors import ConfigError
from secure_agg.roster import (
    IDENTITY_FILE,
    ROSTER_FILE,
    BankIdentity,
    Roster,
    init_roster,
    statement,
)


def test_signature_verifies_only_for_its_bank_and_message(tmp_path):
    init_roster(["bank-00", "bank-01"], tmp_path)
    roster = Roster.load(tmp_path / ROSTER_FILE)
    a = BankIdentity.load(tmp_path / "bank-00" / IDENTITY_FILE)
    msg = statement(run="r", round=1, stage="train", digest="ab", participants=["bank-00", "x"])
    sig = a.sign(msg)
    assert roster.verify("bank-00", msg, sig)
    assert not roster.verify("bank-01", msg, sig)
    assert not roster.verify("bank-00", msg + b" ", sig)
    assert not roster.verify("mallory", msg, sig)


def test_pairwise_seed_agrees_between_two_banks_and_differs_per_context(tmp_path):
    init_roster(["bank-00", "bank-01", "bank-02"], tmp_path)
    roster = Roster.load(tmp_path / ROSTER_FILE)
    a = BankIdentity.load(tmp_path / "bank-00" / IDENTITY_FILE)
    b = BankIdentity.load(tmp_path / "bank-01" / IDENTITY_FILE)
    assert a.pairwise_seed(roster.entry("bank-01"), b"c1") == b.pairwise_seed(
        roster.entry("bank-00"), b"c1"
    )
    assert a.pairwise_seed(roster.entry("bank-01"), b"c1") != a.pairwise_seed(
        roster.entry("bank-01"), b"c2"
    )
    assert a.pairwise_seed(roster.entry("bank-01"), b"c1") != a.pairwise_seed(
        roster.entry("bank-02"), b"c1"
    )


def test_statement_is_independent_of_participant_order():
    one = statement(run="r", round=2, stage="s", digest="d", participants=["b", "a"])
    assert one == statement(run="r", round=2, stage="s", digest="d", participants=["a", "b"])


def test_identity_is_never_overwritten_and_is_private(tmp_path):
    init_roster(["bank-00"], tmp_path)
    path = tmp_path / "bank-00" / IDENTITY_FILE
    assert path.stat().st_mode & 0o077 == 0
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        BankIdentity.generate("bank-00").save(path)
    assert path.read_bytes() == before


def test_tampered_roster_is_refused(tmp_path):
    init_roster(["bank-00"], tmp_path)
    path = tmp_path / ROSTER_FILE
    path.write_text(path.read_text().replace('"sign": "', '"sign": "!'))
    with pytest.raises(ConfigError, match="base64"):
        Roster.load(path)
