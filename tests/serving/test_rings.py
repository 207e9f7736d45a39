"""Fraud rings: connected groups of accounts among flagged transactions, in results and report."""

import json

import numpy as np
import pytest

from fedfraud.config import RunConfig
from fedfraud.data.features import TEST, TRAIN, BankTable
from fedfraud.rings import find_rings
from simulations.report import rings_section
from simulations.runner import simulate


def table(src, dst, split, y, typology=None) -> BankTable:
    n = len(src)
    return BankTable(
        name="b",
        x=np.zeros((n, 1), np.float32),
        y=np.asarray(y, np.float32),
        split=np.asarray(split, np.int8),
        feature_names=("f",),
        typology=None if typology is None else np.asarray(typology),
        src=np.asarray(src),
        dst=np.asarray(dst),
        node_x=np.zeros((10, 1), np.float32),
    )


def test_flagged_transactions_group_accounts_into_rings():
    # Star 0<-1,0<-2,0<-3 (flagged), chain 4-5-6 (flagged), pair 7-8 (flagged, too small),
    # 3-4 unflagged (must not merge), 8-9 flagged but in the training split (ignored).
    src = [1, 2, 3, 4, 5, 7, 3, 8]
    dst = [0, 0, 0, 5, 6, 8, 4, 9]
    split = [TEST] * 7 + [TRAIN]
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.6, 0.99, 0.1, 0.99])
    y = [1, 1, 0, 1, 1, 1, 0, 1]
    typ = ["mule_ring", "mule_ring", "legit", "structuring", "structuring", "x", "legit", "x"]
    rings = find_rings(table(src, dst, split, y, typ), scores, threshold=0.5)
    assert [(r["accounts"], r["transactions"]) for r in rings] == [(4, 3), (3, 2)]
    star, chain = rings
    assert star["max_score"] == pytest.approx(0.9) and star["mean_score"] == pytest.approx(0.8)
    assert star["fraud_share"] == pytest.approx(2 / 3) and star["typology"] == "mule_ring"
    assert chain["typology"] == "structuring" and chain["fraud_share"] == 1.0


def test_nothing_flagged_means_no_rings():
    t = table([0, 1], [1, 2], [TEST, TEST], [0, 0])
    assert find_rings(t, np.array([0.1, 0.2]), threshold=0.5) == []


def test_rings_section_renders_per_bank_tables():
    rings = {
        "bank-00": {
            "flagged_transactions": 5,
            "num_rings": 1,
            "accounts_in_rings": 4,
            "threshold": 0.3,
            "rings": [
                {
                    "accounts": 4,
                    "transactions": 3,
                    "max_score": 0.9,
                    "mean_score": 0.8,
                    "fraud_share": 0.67,
                    "typology": "mule_ring",
                }
            ],
        }
    }
    text = "\n".join(rings_section(rings))
    assert "## Fraud rings" in text and "| bank-00 | 1 | 4 | 3 |" in text
    assert rings_section({}) == []


def test_gnn_simulation_reports_rings_per_bank(small_consortium, tmp_path):
    cfg = RunConfig(
        num_banks=3, num_rounds=1, model="gnn", data_format="banks", data_path=str(small_consortium)
    )
    results = simulate(cfg, tmp_path / "run", baselines=False)
    rings = results["analysis"]["fraud_rings"]
    assert set(rings) == {"bank-00", "bank-01", "bank-02"}
    for r in rings.values():
        assert r["num_rings"] == len(r["rings"]) or len(r["rings"]) == 10
        assert all(ring["accounts"] >= 3 for ring in r["rings"])
    assert "## Fraud rings (GNN)" in (tmp_path / "run" / "report.md").read_text()
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["model"] == "gnn" and card["node_feature_names"]
