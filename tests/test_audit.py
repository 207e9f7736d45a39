"""The audit log's hash chain names the first edited, dropped or reordered entry."""

import json
from pathlib import Path

import pytest

from fedfraud.audit import AuditError, AuditLog, OperatorSigner, verify
from tests.conftest import fedfraud


def write_log(path: Path, rounds: int = 4) -> AuditLog:
    log = AuditLog(path)
    log.append("start", config={"num_rounds": rounds})
    for rnd in range(1, rounds + 1):
        log.append("round", round=rnd, banks=["bank-00", "bank-01"], epsilon={"bank-00": 0.5})
    return log


def write_signed_log(path: Path, rounds: int = 3) -> AuditLog:
    """What the operator writes: signed entries, ending with `finish` (the CLI requires both)."""
    log = AuditLog(path, OperatorSigner.load_or_create(path.parent / "keys" / "op.pem"))
    log.append("start", config={"num_rounds": rounds})
    for rnd in range(1, rounds + 1):
        log.append("round", round=rnd, banks=["bank-00", "bank-01", "bank-02"])
    log.append("finish", completed_rounds=rounds)
    return log


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def bad_entry(path: Path, **kwargs) -> int:
    with pytest.raises(AuditError) as info:
        verify(path, **kwargs)
    return info.value.entry


def test_appended_log_verifies_and_reports_its_head(tmp_path):
    log = write_log(tmp_path / "audit.jsonl")
    head = verify(tmp_path / "audit.jsonl")
    assert head == log.head and head.entries == 5
    # Reopening continues the same chain.
    AuditLog(tmp_path / "audit.jsonl").append("finish")
    assert verify(tmp_path / "audit.jsonl").entries == 6


def test_edited_entry_is_named(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_log(path)
    rows = lines(path)
    rows[2] = rows[2].replace('"bank-00":0.5', '"bank-00":0.1')
    path.write_text("".join(rows))
    assert bad_entry(path) == 3


def test_edit_with_recomputed_hash_breaks_the_next_link(tmp_path):
    from fedfraud.audit import canonical, entry_hash

    path = tmp_path / "audit.jsonl"
    write_log(path)
    rows = lines(path)
    entry = json.loads(rows[2])
    entry["banks"] = ["bank-00"]
    entry["sha256"] = entry_hash(entry)
    rows[2] = canonical(entry).decode() + "\n"
    path.write_text("".join(rows))
    assert bad_entry(path) == 4


def test_dropped_entry_is_named(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_log(path)
    rows = lines(path)
    del rows[1]
    path.write_text("".join(rows))
    assert bad_entry(path) == 2


def test_reordered_entries_are_named(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_log(path)
    rows = lines(path)
    rows[2], rows[3] = rows[3], rows[2]
    path.write_text("".join(rows))
    assert bad_entry(path) == 3


def test_dropped_tail_is_caught_by_a_recorded_head_or_anchor(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = write_log(path)
    path.write_text("".join(lines(path)[:-1]))
    assert verify(path).entries == 4  # a shorter chain is still a chain...
    assert bad_entry(path, head=log.head.sha256) == 5  # ...but not the one recorded
    assert bad_entry(path, anchors=[log.head]) == 5


def test_garbage_line_is_named(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_log(path)
    rows = lines(path)
    rows.insert(2, "not json\n")
    path.write_text("".join(rows))
    assert bad_entry(path) == 3


def test_appending_to_a_tampered_log_is_refused(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_log(path)
    rows = lines(path)
    del rows[0]
    path.write_text("".join(rows))
    with pytest.raises(AuditError):
        AuditLog(path)


def test_cli_audit_verify_exits_2_with_the_entry_number(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_signed_log(path)
    ok = fedfraud("audit", "verify", str(path), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "5 entries" in ok.stdout
    rows = lines(path)
    del rows[3]
    path.write_text("".join(rows))
    bad = fedfraud("audit", "verify", str(path), cwd=tmp_path)
    assert bad.returncode == 2
    assert "entry 4" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_audit_verify_checks_the_checkpoint_anchor(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = write_signed_log(path)
    (tmp_path / "checkpoint").mkdir()
    state = {"audit": {"entries": log.head.entries, "sha256": log.head.sha256}}
    (tmp_path / "checkpoint" / "state.json").write_text(json.dumps(state))
    path.write_text("".join(lines(path)[:-1]))
    bad = fedfraud("audit", "verify", str(path), cwd=tmp_path)
    assert bad.returncode == 2 and "entry 5" in bad.stderr, bad.stderr


def test_cli_audit_verify_refuses_unsigned_and_unfinished_logs(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_log(path)  # no operator key, no finish entry
    bad = fedfraud("audit", "verify", str(path), cwd=tmp_path)
    assert bad.returncode == 2 and "unsigned" in bad.stderr
    signed = tmp_path / "signed" / "audit.jsonl"
    write_signed_log(signed)
    signed.write_text("".join(lines(signed)[:-1]))  # finish entry cut off
    bad = fedfraud("audit", "verify", str(signed), cwd=tmp_path)
    assert bad.returncode == 2 and "without a finish entry" in bad.stderr
    ok = fedfraud("audit", "verify", str(signed), "--allow-unfinished", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_operator_signature_over_an_edited_entry_fails(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = write_signed_log(path)
    assert verify(path, signed=True, finished=True) == log.head
    rows = lines(path)
    entry = json.loads(rows[1])
    entry["op_sig"] = json.loads(rows[2])["op_sig"]  # another entry's signature
    rows[1] = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    path.write_text("".join(rows))
    assert bad_entry(path, signed=True) == 2


def test_round_entries_need_every_participants_roster_signature(tmp_path):
    import base64

    from secure_agg.roster import IDENTITY_FILE, BankIdentity, Roster, init_roster, statement

    banks = ["bank-00", "bank-01", "bank-02"]
    roster = init_roster(banks, tmp_path / "roster")
    ids = {b: BankIdentity.load(tmp_path / "roster" / b / IDENTITY_FILE) for b in banks}

    def contribution(bank: str, digest: str) -> dict[str, str]:
        msg = statement(run="r1", round=1, stage="train", digest=digest, participants=banks)
        return {"digest": digest, "signature": base64.b64encode(ids[bank].sign(msg)).decode()}

    def write(path: Path, contributions: dict, participants=banks) -> Path:
        log = AuditLog(path, OperatorSigner.load_or_create(tmp_path / "op.pem"))
        log.append("start", run="r1")
        log.append(
            "round",
            round=1,
            banks=banks,
            participants=participants,
            contributions=contributions,
        )
        log.append("finish")
        return path

    checks = (Roster.load(tmp_path / "roster" / "roster.json").verify, statement)
    good = {b: contribution(b, f"{i:064x}") for i, b in enumerate(banks)}
    assert verify(write(tmp_path / "ok.jsonl", good), signed=True, banks=checks).entries == 3
    dropped = {b: good[b] for b in banks[:2]}
    assert bad_entry(write(tmp_path / "drop.jsonl", dropped), banks=checks) == 2
    forged = {**good, "bank-02": {**good["bank-02"], "digest": "ff" * 32}}
    assert bad_entry(write(tmp_path / "forged.jsonl", forged), banks=checks) == 2
    assert roster.banks == tuple(banks)
