"""The federated model is chosen on pooled validation rows only: a deliberately bad late round is
not selected, the test rows are scored once (with the selected model), and patience stops the
run when validation stops improving. Real ClientApp handlers through an in-process Grid."""

from __future__ import annotations

import pytest
import torch

import fl_client.app as client_app
from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fl_server.app import GLOBAL_MODEL_FILE, run_operator
from secure_agg import Payload
from tests.fl.conftest import RecordingGrid

pytestmark = pytest.mark.usefixtures("task_identity")


class EvaluationGrid(RecordingGrid):
    """Also keeps (round, split, model) of every evaluate message."""

    def __init__(self, data_dir, banks):
        super().__init__(data_dir, banks)
        self.evaluations: list[tuple[int, str, bytes]] = []

    def send_and_receive(self, messages, timeout=None):
        for msg in messages:
            if msg.metadata.message_type == "evaluate":
                config = msg.content[rm.CONFIG]
                model = b"".join(Payload.from_record(msg.content[rm.MODEL]).chunks)
                self.evaluations.append((int(config[rm.ROUND]), str(config[rm.SPLIT]), model))
        return super().send_and_receive(messages, timeout)


def sabotage(monkeypatch, bad_round: int) -> None:
    """Every bank flips the sign of its output layer after training in `bad_round`: the
    aggregate then ranks legit above fraud."""
    real = client_app.train_local

    def train_then_flip(model, inputs, config, seed=0, privatizer=None, **kw):
        stats = real(model, inputs, config, seed=seed, privatizer=privatizer, **kw)
        if seed % 1000 == bad_round:
            last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
            with torch.no_grad():
                last.weight.neg_()
                last.bias.neg_()
        return stats

    monkeypatch.setattr(client_app, "train_local", train_then_flip)


def banks_of(data_dir):
    return sorted(p.name for p in data_dir.iterdir() if p.is_dir())


def test_a_bad_last_round_is_not_selected_and_test_rows_score_the_selected_model(
    unequal_banks, tmp_path, monkeypatch
):
    sabotage(monkeypatch, bad_round=3)
    out = tmp_path / "out"
    cfg = RunConfig(num_banks=3, num_rounds=3, patience=0, out_dir=str(out))
    grid = EvaluationGrid(unequal_banks, banks_of(unequal_banks))
    results = run_operator(grid, cfg, grid.options)

    val = [r["metrics"]["pooled"]["pr_auc"] for r in results["rounds"]]
    assert val[2] < max(val[:2]) - 0.1  # the sabotage did make round 3 worse on validation
    selected = results["final"]["selected_round"]
    assert selected == 1 + val.index(max(val)) and selected != 3
    # Rounds are evaluated on validation only; test once, at the end, with the selected model.
    stages = list(dict.fromkeys(grid.evaluations))  # one message per bank and stage
    assert len(stages) == 4 and len(grid.evaluations) == 3 * 4
    assert [(r, s) for r, s, _ in stages] == [
        (1, "val"),
        (2, "val"),
        (3, "val"),
        (selected, "test"),
    ]
    tested = stages[-1][2]
    assert tested == stages[selected - 1][2]  # the model validated in that round
    assert tested != stages[2][2]  # not the last round's
    kept = Payload.from_bytes((out / GLOBAL_MODEL_FILE).read_bytes())
    assert b"".join(kept.chunks) == tested  # what the operator keeps


def test_patience_stops_after_rounds_without_validation_gain(unequal_banks, tmp_path, monkeypatch):
    sabotage(monkeypatch, bad_round=3)
    cfg = RunConfig(num_banks=3, num_rounds=6, patience=1, out_dir=str(tmp_path / "out"))
    grid = EvaluationGrid(unequal_banks, banks_of(unequal_banks))
    results = run_operator(grid, cfg, grid.options)
    val = [r["metrics"]["pooled"]["pr_auc"] for r in results["rounds"]]
    assert val[1] > val[0] and val[2] < val[1]
    assert [r["round"] for r in results["rounds"]] == [1, 2, 3]  # not the 6 asked for
    assert results["final"]["selected_round"] == 2
    assert results["final"]["last_round"] == 3
