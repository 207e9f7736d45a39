"""Generated rows to per-bank frames: account ids, label noise, time order, column types."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedfraud.data import store
from fedfraud.data.schema import TYPOLOGIES
from fedfraud.data.synth.constants import LEGIT, NOISE
from fedfraud.data.synth.world import World


def assemble_frames(rng: np.random.Generator, w: World, r: dict[str, np.ndarray]) -> dict:
    """Global ids, label noise, per-bank time order and the canonical column types."""
    # Random account ids: an id tells nothing about the kind of account or its bank.
    ids = 10_000_000 + rng.permutation(w.n_entities).astype(np.int64)
    n = len(r["t"])
    typ = r["typ"].astype(np.int8)
    bank = r["bank"].astype(np.int64)
    # Fraud nobody reported, at banks with labels to spare (small banks keep theirs).
    plenty = np.bincount(bank, weights=typ != LEGIT, minlength=len(w.sizes)) >= 50
    typ[(typ != LEGIT) & plenty[bank] & (rng.random(n) < NOISE)] = LEGIT
    tx_id = np.empty(n, dtype=np.int64)
    tx_id[np.argsort(r["t"], kind="stable")] = np.arange(1, n + 1)  # consortium-wide clock
    order = np.lexsort((r["t"], bank))
    bounds = np.concatenate([[0], np.cumsum(np.bincount(bank, minlength=len(w.sizes)))])
    names = np.array(TYPOLOGIES, dtype=object)
    frames = {}
    for b in range(len(w.sizes)):
        idx = order[bounds[b] : bounds[b + 1]]
        frames[store.bank_name(b)] = pd.DataFrame(
            {
                "tx_id": tx_id[idx],
                "bank": store.bank_name(b),
                "sender": ids[r["sender"][idx].astype(np.int64)],
                "receiver": ids[r["receiver"][idx].astype(np.int64)],
                "amount": r["amount"][idx].astype(np.float64),
                "timestamp": r["t"][idx].astype(np.float64),
                "channel": r["channel"][idx].astype(np.int64),
                "mcc": r["mcc"][idx].astype(np.int64),
                "device_new": r["dev"][idx].astype(np.int8),
                "geo_km": r["geo"][idx].astype(np.float64),
                "is_fraud": (typ[idx] != LEGIT).astype(np.int8),
                "typology": names[typ[idx]],
            }
        )
    return frames
