"""A bank that goes silent mid-round does not kill a masked-CKKS round: pairwise masks cancel
only over the announced participant set, so the operator runs the stage again with the banks
that answered (a new set, fresh masks) and the round completes with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fedfraud.data.store import write_banks
from fl_server.app import run_operator
from secure_agg import provision
from tests.conftest import random_bank
from tests.fl.conftest import RecordingGrid

BANKS = [f"bank-{i:02d}" for i in range(4)]
VICTIM = "bank-03"

pytestmark = pytest.mark.usefixtures("task_identity")


@pytest.fixture
def four_banks(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    frames = {b: random_bank(rng, 2000, 100_000 * (i + 1)) for i, b in enumerate(BANKS)}
    write_banks(frames, tmp_path / "banks")
    return tmp_path / "banks"


class DropoutGrid(RecordingGrid):
    """The victim bank never answers its round-1 training message (and nothing after)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gone = False
        self.trains: list[list[str]] = []  # banks asked in each train broadcast

    def send_and_receive(self, messages, timeout=None):
        live = []
        asked = []
        for msg in messages:
            bank = str(self.contexts[msg.metadata.dst_node_id].node_config["bank-id"])
            if msg.metadata.message_type == rm.TRAIN_STAGE:
                asked.append(bank)
                self.gone = self.gone or bank == VICTIM
            if not (self.gone and bank == VICTIM):
                live.append(msg)
        if asked:
            self.trains.append(sorted(asked))
        return super().send_and_receive(live, timeout)


def test_masked_ckks_round_survives_a_silent_bank(four_banks, tmp_path):
    shared = provision("ckks", tmp_path / "keys", len(BANKS))
    cfg = RunConfig(
        num_banks=4, num_rounds=2, secure_agg="ckks", round_timeout=5.0, out_dir=str(tmp_path / "o")
    )
    grid = DropoutGrid(four_banks, BANKS)
    results = run_operator(grid, cfg, grid.options, shared_options=shared)

    first = results["rounds"][0]
    assert first["banks"] == BANKS[:3]
    assert first["participants"] == BANKS[:3]  # the re-run stage announced the survivors
    assert any(VICTIM in why or "no reply" in why for why in first["failures"].values())
    # Each round asks every bank (one may be back), then again the three that answered.
    assert grid.trains == [BANKS, BANKS[:3], BANKS, BANKS[:3]]
    assert [r["num_results"] for r in results["rounds"]] == [3, 3]
    assert 0.0 <= results["final"]["pooled"]["pr_auc"] <= 1.0
