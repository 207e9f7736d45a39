"""Fraud rings: the connected groups of accounts that a bank's flagged transactions form.

A bank flags the transactions its GNN scores above its threshold (set for a target FPR on its
validation split, as in fedfraud.scoring); the flagged transactions of a split, taken as
undirected edges between accounts, fall into connected components. A component of three or more
accounts (two flagged transactions at least) is a candidate ring for one investigation: mules
fed by many victims, or a chain.
Bank-local: computed from one bank's own graph and scores.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch
from torch import nn

from fedfraud.data.features import SPLITS, TEST, VAL, BankTable
from fedfraud.errors import DataError
from fedfraud.scoring import choose_threshold
from fedfraud.train import ModelInputs


def connected_groups(
    src: np.ndarray, dst: np.ndarray, num_nodes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Component label per edge and per node (undirected), for the given edges only."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    adj = coo_matrix((np.ones(len(src)), (src, dst)), shape=(num_nodes, num_nodes))
    _, labels = connected_components(adj, directed=False)
    return labels[src], labels


def find_rings(
    table: BankTable,
    scores: np.ndarray,
    threshold: float,
    split: int = TEST,
    min_accounts: int = 3,
) -> list[dict[str, Any]]:
    """Rings among `split`'s transactions scored above `threshold`, largest first. Labels and
    typologies (when the bank has them) say how many flagged transactions were fraud."""
    if table.src is None or table.dst is None:
        return []
    flagged = np.flatnonzero((table.split == split) & (scores > threshold))
    if flagged.size == 0:
        return []
    src, dst = table.src[flagged], table.dst[flagged]
    nodes, inverse = np.unique(np.concatenate([src, dst]), return_inverse=True)
    local_src, local_dst = inverse[: len(src)], inverse[len(src) :]
    edge_group, node_group = connected_groups(local_src, local_dst, len(nodes))
    accounts = np.bincount(node_group)
    rings = []
    for group in np.flatnonzero(accounts >= min_accounts):
        rows = flagged[edge_group == group]
        ring: dict[str, Any] = {
            "accounts": int(accounts[group]),
            "transactions": int(rows.size),
            "max_score": float(scores[rows].max()),
            "mean_score": float(scores[rows].mean()),
            "fraud_share": float(table.y[rows].mean()),
        }
        if table.tx_id is not None:  # what an investigator looks up: the bank's own ids
            ring["tx_ids"] = table.tx_id[rows][:20].tolist()
        if table.typology is not None:  # ground truth, for research reports only
            fraud_types = table.typology[rows][table.y[rows] == 1].tolist()
            ring["typology"] = Counter(fraud_types).most_common(1)[0][0] if fraud_types else "legit"
        rings.append(ring)
    rings.sort(key=lambda r: (-r["accounts"], -r["transactions"], -r["max_score"]))
    return rings


def bank_rings(
    model: nn.Module, inputs: ModelInputs, table: BankTable, target_fpr: float = 0.01, top: int = 10
) -> dict[str, Any]:
    """One bank's rings on its test split at the threshold for `target_fpr` (on validation)."""
    with torch.no_grad():
        model.eval()
        scores = torch.sigmoid(model(inputs.graph)).numpy()
    try:
        threshold = choose_threshold(table.y[table.mask(VAL)], scores[table.mask(VAL)], target_fpr)
    except DataError as exc:  # a bank without legitimate validation rows has no threshold
        return {"error": str(exc), "num_rings": 0, "rings": []}
    rings = find_rings(table, scores, threshold.value)
    return {
        "split": SPLITS[TEST],
        "threshold": threshold.value,
        "target_fpr": target_fpr,
        "flagged_transactions": int(((table.split == TEST) & (scores > threshold.value)).sum()),
        "num_rings": len(rings),
        "accounts_in_rings": int(sum(r["accounts"] for r in rings)),
        "rings": rings[:top],
    }
