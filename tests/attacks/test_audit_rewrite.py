"""Attack 5 (issue 14): the operator rewrites its audit log.

A real run (operator `run_operator` + the banks' real ClientApp over an in-process grid) writes
the signed log; the banks keep every head the operator showed them. The operator then drops a
bank and edits PR-AUC in round 1, re-chains every later entry, re-signs them with its own key and
patches the checkpoint head; or cuts the final entry off; or hands over an empty log.

Before (main at 14ae96a): `fedfraud audit verify` said "chain intact" for the re-chained log with
a patched checkpoint, "ok: 0 entries" for an empty log and "matches checkpoint" for a log whose
final entry was cut off. Now each exits 2 naming the problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from fedfraud.audit import SIGNATURE, OperatorSigner, canonical, entry_hash
from fedfraud.config import RunConfig
from fl_client.audit_heads import HEADS_FILE
from fl_server.app import run_operator
from fl_server.journal import OPERATOR_KEY_FILE
from tests.conftest import fedfraud
from tests.fl.conftest import RecordingGrid, task_identity, unequal_banks  # noqa: F401

BANKS = ["bank-00", "bank-01", "bank-02"]


class RunGrid(RecordingGrid):
    run = SimpleNamespace(run_id=1)  # the run id Flower gives the banks' Context too


@pytest.fixture
def finished_run(tmp_path, unequal_banks, task_identity):  # noqa: F811
    out = tmp_path / "run"
    config = RunConfig(num_banks=3, num_rounds=2, out_dir=str(out), local_epochs=1, hidden=16)
    grid = RunGrid(unequal_banks, BANKS)
    run_operator(grid, config, grid.options)
    heads = [str(unequal_banks / b / HEADS_FILE) for b in BANKS]
    return out, heads


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewrite(out: Path, edit) -> None:
    """What an operator holding its own key can do: edit, re-chain, re-sign, patch checkpoint."""
    path = out / "audit.jsonl"
    signer = OperatorSigner.load_or_create(out / OPERATOR_KEY_FILE)
    entries = rows(path)
    edit(entries)
    prev = "0" * 64
    for number, entry in enumerate(entries, start=1):
        entry["seq"], entry["prev"] = number, prev
        entry.pop(SIGNATURE, None)
        entry["sha256"] = entry_hash(entry)
        entry[SIGNATURE] = signer.sign(entry["sha256"])
        prev = entry["sha256"]
    path.write_text("".join(canonical(e).decode() + "\n" for e in entries))
    state = out / "checkpoint" / "state.json"
    doc = json.loads(state.read_text())
    last = entries[-2]  # the checkpoint follows the last round entry
    doc["audit"] = {"entries": last["seq"], "sha256": last["sha256"]}
    state.write_text(json.dumps(doc))


def verify(out: Path, *args: str):
    return fedfraud("audit", "verify", str(out / "audit.jsonl"), *args)


def test_honest_log_verifies_with_every_banks_heads(finished_run):
    out, heads = finished_run
    ok = verify(out, *[a for h in heads for a in ("--bank-heads", h)])
    assert ok.returncode == 0, ok.stderr
    assert "operator signatures valid" in ok.stdout and "heads the banks kept found" in ok.stdout


def test_dropped_bank_and_edited_pr_auc_rechained_and_resigned_are_caught(finished_run):
    out, heads = finished_run

    def edit(entries):
        round1 = next(e for e in entries if e.get("event") == "round" and e["round"] == 1)
        round1["banks"] = round1["banks"][:-1]
        round1["metrics"]["pr_auc"] = 0.99

    rewrite(out, edit)
    assert verify(out).returncode == 0  # chain, signatures and checkpoint all agree again...
    bad = verify(out, "--bank-heads", heads[0])  # ...but bank-00 kept the original head
    assert bad.returncode == 2 and "rewritten" in bad.stderr, bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_log_signed_with_another_operator_key_is_caught(finished_run):
    out, heads = finished_run
    (out / OPERATOR_KEY_FILE).unlink()  # the operator re-signs everything with a new key
    start_key = OperatorSigner.load_or_create(out / OPERATOR_KEY_FILE).public_b64
    rewrite(out, lambda entries: entries[0].update(operator_key=start_key))
    bad = verify(out, "--bank-heads", heads[1])
    assert bad.returncode == 2, bad.stdout


def test_log_with_its_final_entry_cut_off_fails(finished_run):
    out, _ = finished_run
    path = out / "audit.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    bad = verify(out)
    assert bad.returncode == 2 and "without a finish entry" in bad.stderr, bad.stdout


def test_empty_log_fails(finished_run):
    out, _ = finished_run
    (out / "audit.jsonl").write_text("")
    bad = verify(out)
    assert bad.returncode == 2 and "empty" in bad.stderr, bad.stdout
