"""What the operator writes as a run goes: the audit log entry, then the checkpoint, per stage.

The audit entry is written first and the checkpoint records the audit head it follows, so after a
crash between the two the log shows the stage that will be repeated, and the `resume` entry says
which entries the resumed run discards (nothing is silently rewritten).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fedfraud
from fedfraud.audit import AuditLog, OperatorSigner, canonical, read_entries, sha256_hex
from fedfraud.config import RunConfig
from fedfraud.metrics import json_safe
from fl_server.checkpoint import CHECKPOINT_DIR, Checkpoint
from fl_server.federation import RunState

log = logging.getLogger("fedfraud.server")
AUDIT_FILE = "audit.jsonl"
# The operator's audit signing key: generated on first use into the run folder's keys/ (run
# folders are git-ignored); its public half is named in the log's start entry.
OPERATOR_KEY_FILE = Path("keys") / "operator-audit.pem"
# Round-record keys copied into the audit entry when present (signed contributions, issue 13).
SIGNED_FIELDS = ("run", "stage", "participants", "contributions")


class RunJournal:
    """Checkpoint + audit log of one operator run in `out_dir`."""

    def __init__(
        self, out_dir: Path, config: RunConfig, resume: bool = False, run: str = ""
    ) -> None:
        self.out_dir = Path(out_dir)
        self.run = str(run)
        self.signer = OperatorSigner.load_or_create(self.out_dir / OPERATOR_KEY_FILE)
        self.config = config
        self.resume = resume
        self.checkpoint = Checkpoint(self.out_dir / CHECKPOINT_DIR)
        self.audit_path = self.out_dir / AUDIT_FILE
        self.audit: AuditLog | None = None
        self.resumed_from: int | None = None

    def open(self) -> RunState | None:
        """Start the log; with resume and a checkpoint, return the state to continue from."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.resume and self.checkpoint.exists():
            return self._resume()
        if self.resume:
            log.warning("resume=true but %s holds no checkpoint; starting a new run", self.out_dir)
        self._archive_previous_run()
        self.audit = AuditLog(self.audit_path, self.signer)
        config = self.config.to_dict()
        self.audit.append(
            "start",
            run=self.run,
            fedfraud_version=fedfraud.__version__,
            config=config,
            config_sha256=sha256_hex(canonical(config)),
        )
        return None

    def _resume(self) -> RunState:
        state, doc = self.checkpoint.load(self.config)
        self.audit = AuditLog(self.audit_path, self.signer)  # verifies the chain first
        saved = doc.get("audit") or {}
        discarded = []
        if saved.get("entries", 0) < self.audit.head.entries:
            entries = read_entries(self.audit_path)[saved.get("entries", 0) :]
            discarded = [e["seq"] for e in entries]
        elif saved and saved.get("entries", 0) > self.audit.head.entries:
            log.warning("the audit log is shorter than the checkpoint says (entries lost)")
        if saved and self.audit.head.entries >= saved["entries"] > 0:
            at = read_entries(self.audit_path)[saved["entries"] - 1]
            if at["sha256"] != saved["sha256"]:
                log.warning("the audit log does not contain the entry the checkpoint follows")
        self.resumed_from = len(state.rounds)
        self.audit.append(
            "resume",
            completed_rounds=len(state.rounds),
            checkpoint_sha256=sha256_hex(self.checkpoint.state_file.read_bytes()),
            checkpoint_audit_seq=saved.get("entries"),
            discarded_entries=discarded,
            config=self.config.to_dict(),
        )
        log.info("resuming from %s after round %d", self.checkpoint.directory, len(state.rounds))
        return state

    def _archive_previous_run(self) -> None:
        # A new run in a used out-dir keeps the old audit log (it is evidence) under a new name.
        if self.audit_path.exists():
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            self.audit_path.rename(self.out_dir / f"audit-{stamp}.jsonl")
            log.warning("kept the previous run's audit log as audit-%s.jsonl", stamp)
        if self.checkpoint.exists():
            self.checkpoint.state_file.unlink()

    # -- called by Federation ----------------------------------------------------------------
    def head_record(self) -> dict[str, str | int]:
        """The current head, sent to the banks in every message so they can keep it."""
        assert self.audit is not None, "open() the journal first"
        head = self.audit.head
        return {"seq": head.entries, "sha256": head.sha256, "operator_key": self.signer.public_b64}

    def stats_done(self, state: RunState, evidence: dict[str, Any]) -> None:
        """The consortium's feature moments are aggregated (stage 0)."""
        self._record("stats", state, {"round": 0, **evidence})

    def round_done(self, state: RunState, record: dict[str, Any]) -> None:
        """Round `record['round']` is complete: training, aggregation and evaluation."""
        fields = {
            "round": record["round"],
            "banks": record.get("banks", []),
            "nodes": record.get("nodes", {}),
            "payload_sha256": record.get("payload_sha256", {}),
            # Announced participant set and each included bank's signed contribution (issue 13).
            "participants": record.get("participants", []),
            "contributions": record.get("contributions", {}),
            "epsilon": record.get("epsilon", {}),
            "model_sha256": record.get("aggregate_sha256"),
            "failures": record.get("failures", {}),
            "metrics": record.get("metrics", {}),
            **{k: record[k] for k in SIGNED_FIELDS if k in record},
        }
        self._record("round", state, fields)

    def finish(self, state: RunState) -> None:
        """The run ended normally."""
        assert self.audit is not None
        model, best = state.global_model, state.best_model
        self.audit.append(
            "finish",
            completed_rounds=len(state.rounds),
            model_sha256=sha256_hex(model.to_bytes()) if model is not None else None,
            # The model scored on test and kept as global_model.payload (best validation).
            selected_round=state.best_round,
            selected_model_sha256=sha256_hex(best.to_bytes()) if best is not None else None,
        )

    def _record(self, event: str, state: RunState, fields: dict[str, Any]) -> None:
        assert self.audit is not None, "open() the journal first"
        entry = self.audit.append(event, **json_safe(fields))
        self.checkpoint.save(
            state, self.config, {"entries": entry["seq"], "sha256": entry["sha256"]}
        )
