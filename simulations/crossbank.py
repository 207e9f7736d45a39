"""Research side of cross-bank sketches in a simulation (the researcher holds every bank's rows
and the consortium's keys): the consortium sketch in the clear, which equals the secure sum
the banks open, so the analysis and the centralized yardsticks see the very columns the banks
computed; and the sketch's size and error against exact consortium counts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedfraud.config import RunConfig
from fedfraud.crossbank.features import (
    bank_features,
    clear_consortium,
    sketch_error,
    with_features,
)
from fedfraud.crossbank.sketch import FEATURES, STATS
from fedfraud.data.features import BankTable
from secure_agg.consortium import SKETCH_KEY_FILE


@dataclass
class CrossBankView:
    """Per bank: its cross-bank columns (table row order) and its table with them."""

    features: dict[str, np.ndarray] = field(default_factory=dict)
    tables: dict[str, BankTable] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def research_view(
    config: RunConfig,
    frames: Mapping[str, pd.DataFrame],
    tables: Mapping[str, BankTable],
    consortium_dir: Path,
) -> CrossBankView | None:
    """None when cross-bank is off."""
    if config.cross_bank == "off":
        return None
    spec = config.sketch_spec()
    key = (Path(consortium_dir) / SKETCH_KEY_FILE).read_bytes()
    consortium = clear_consortium(frames, key, spec)
    view = CrossBankView()
    for name, frame in frames.items():
        view.features[name] = bank_features(frame, consortium, key, spec)
        view.tables[name] = with_features(tables[name], view.features[name])
    every = np.concatenate(list(view.features.values()))
    mass = consortium[:, :, 0, :].sum(axis=-1)  # (windows, stats): each window's total
    bound = np.e / spec.width * mass[:, STATS.index("inflow_count")]
    view.summary = {
        "mode": config.cross_bank,
        "features": list(FEATURES),
        "size_floats": spec.size,
        "shape": list(spec.shape),
        "windows": spec.windows,
        "window_h": spec.window_h,
        "depth": spec.depth,
        "width": spec.width,
        "lookback": spec.lookback,
        # Count-min: P(overestimate > bound) <= exp(-depth) per query; bound over windows.
        "error_bound_inflow_count_mean": float(bound.mean()),
        "failure_probability": float(np.exp(-spec.depth)),
        "mean_abs_error": sketch_error(frames, consortium, key, spec),
        "rows_with_cross_bank_activity": float((every > 0).any(axis=1).mean()),
        "epsilon": None,  # no DP noise on the sketch
        "psi": None,  # private alert matching is not wired into the federation yet
    }
    return view
