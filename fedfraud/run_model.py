"""The final global model of a run as a bank uses it: RUN_DIR/model.pt + RUN_DIR/model.json.

A simulation writes them into its run folder; a deployed bank node writes them into its
node-config `model-dir` every time it evaluates a new global model (docs/bank-guide.md).

model.pt holds the revealed state_dict; model.json holds what scoring needs beside the weights:
the architecture, the feature names the model was trained on (in order) and the consortium-wide
scaler moments. The moments are the pooled means/stds every bank already learned through secure
aggregation before round 1, so writing them next to the model reveals nothing new to a bank.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedfraud import __version__
from fedfraud.config import RunConfig
from fedfraud.data.features import BankTable
from fedfraud.data.scaling import Scaler
from fedfraud.errors import FedfraudError
from fedfraud.io import atomic_write, atomic_write_text

MODEL_WEIGHTS_FILE = "model.pt"
MODEL_CARD_FILE = "model.json"
CARD_FORMAT = 1


@dataclass(frozen=True)
class ModelCard:
    """Architecture, feature order and scaler of a run's final model."""

    model: str
    hidden: int
    gnn_conv: str
    seed: int
    feature_names: tuple[str, ...]
    node_feature_names: tuple[str, ...]
    scaler: Scaler

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CARD_FORMAT,
            "fedfraud_version": __version__,
            "model": self.model,
            "hidden": self.hidden,
            "gnn_conv": self.gnn_conv,
            "seed": self.seed,
            "feature_names": list(self.feature_names),
            "node_feature_names": list(self.node_feature_names),
            "scaler": {
                k: getattr(self.scaler, k).tolist()
                for k in ("mean", "std", "node_mean", "node_std")
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelCard:
        s = data["scaler"]
        return cls(
            model=str(data["model"]),
            hidden=int(data["hidden"]),
            gnn_conv=str(data["gnn_conv"]),
            seed=int(data["seed"]),
            feature_names=tuple(data["feature_names"]),
            node_feature_names=tuple(data["node_feature_names"]),
            scaler=Scaler(**{k: np.asarray(v, dtype=np.float32) for k, v in s.items()}),
        )

    def config(self) -> RunConfig:
        """A RunConfig carrying this model's architecture (for `build_model`)."""
        return RunConfig(model=self.model, hidden=self.hidden, gnn_conv=self.gnn_conv)


def save_model_card(out_dir: Path, config: RunConfig, table: BankTable, scaler: Scaler) -> Path:
    """Write RUN_DIR/model.json for a model built from `config` on `table`'s feature layout."""
    card = ModelCard(
        model=config.model,
        hidden=config.hidden,
        gnn_conv=config.gnn_conv,
        seed=config.seed,
        feature_names=table.feature_names,
        node_feature_names=table.node_feature_names,
        scaler=scaler,
    )
    return atomic_write_text(Path(out_dir) / MODEL_CARD_FILE, json.dumps(card.to_json(), indent=1))


def save_run_model(
    out_dir: Path, model: nn.Module, config: RunConfig, table: BankTable, scaler: Scaler
) -> None:
    """Write model.pt + model.json into `out_dir`; each file is replaced atomically, so a
    scorer reading the folder while a new round lands never sees half a file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = io.BytesIO()
    torch.save(model.state_dict(), weights)
    atomic_write(out_dir / MODEL_WEIGHTS_FILE, weights.getvalue())
    save_model_card(out_dir, config, table, scaler)


def load_run_model(run_dir: Path) -> tuple[nn.Module, ModelCard]:
    """The run's final global model (eval mode) and its card; FedfraudError naming the fix."""
    from fedfraud.models import ModelSpec, build

    run_dir = Path(run_dir)
    card_path, weights_path = run_dir / MODEL_CARD_FILE, run_dir / MODEL_WEIGHTS_FILE
    if not run_dir.is_dir():
        raise FedfraudError(
            f"run folder {run_dir} does not exist; pass a `fedfraud simulate` --out or a bank "
            "node's model-dir"
        )
    for path in (weights_path, card_path):
        if not path.is_file():
            raise FedfraudError(
                f"{path} not found; pass a run folder written by `fedfraud simulate` or a bank "
                "node's model-dir (filled after the first evaluated round)"
            )
    try:
        card = ModelCard.from_json(json.loads(card_path.read_text()))
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise FedfraudError(f"{card_path} is malformed ({exc}); re-run the simulation") from exc
    except Exception as exc:  # torch.load raises several types for corrupt files
        raise FedfraudError(
            f"{weights_path} is not a readable model ({exc.__class__.__name__}); re-run the "
            "simulation"
        ) from exc
    spec = ModelSpec(
        len(card.feature_names), len(card.node_feature_names), card.hidden, card.gnn_conv, card.seed
    )
    model = build(card.model, spec)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise FedfraudError(
            f"{weights_path} does not match {card_path} (architecture differs); re-run the "
            "simulation"
        ) from exc
    model.eval()
    return model, card
