"""SHAP explanations of the global model's alerts, computed inside one bank on its own rows.

Method: shap's DeepExplainer (DeepLIFT rescale rule averaged over a background sample of the
bank's training rows; Lundberg & Lee 2017). It satisfies local accuracy — a row's SHAP values
add up to its logit minus the background's mean logit (checked by shap) — and equals exact
SHAP for a linear model; for the ReLU networks here it is shap's standard, fast approximation
(a few ms per row, where model-agnostic KernelExplainer needs thousands of model calls per row).
Values are in log-odds of fraud. Nothing leaves the bank: rows, background and values stay local.

MLP: the features are the transaction's features. GNN: the scored input is [h_sender,
h_receiver, transaction features], where h are the accounts' embeddings after message passing
over the bank's graph; the transaction features are explained one by one and each embedding as
one player ("sender account (graph)", "receiver account (graph)"): the sum of its dimensions'
SHAP values, which keeps local accuracy.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedfraud.data.features import SPLITS, TRAIN, VAL
from fedfraud.errors import FedfraudError
from fedfraud.io import atomic_write_text
from fedfraud.run_model import load_run_model
from fedfraud.scoring import DEFAULT_TARGET_FPR, bank_table, choose_threshold, read_bank_dir
from fedfraud.train import make_inputs

GRAPH_PLAYERS = ("sender account (graph)", "receiver account (graph)")


@dataclass(frozen=True)
class Explanation:
    """SHAP values (log-odds) of explained rows; the first `num_alerts` rows are the alerts."""

    bank: str
    split: str
    feature_names: tuple[str, ...]
    values: np.ndarray  # (rows, players)
    features: np.ndarray  # (rows, players) raw feature values (NaN for graph players)
    base_value: float
    probability: np.ndarray
    label: np.ndarray
    tx_id: list[Any]
    num_alerts: int
    threshold: float
    target_fpr: float

    def alerts(self, top: int = 5) -> list[dict[str, Any]]:
        """Each alert with its top contributing features (largest |SHAP| first)."""
        out = []
        for i in range(self.num_alerts):
            order = np.argsort(-np.abs(self.values[i]))[:top]
            out.append(
                {
                    "tx_id": self.tx_id[i],
                    "fraud_probability": float(self.probability[i]),
                    "is_fraud": int(self.label[i]),
                    "top_features": [
                        {
                            "feature": self.feature_names[j],
                            "value": None
                            if np.isnan(self.features[i, j])
                            else float(self.features[i, j]),
                            "shap": float(self.values[i, j]),
                        }
                        for j in order
                    ],
                }
            )
        return out


class _Logit(nn.Module):
    """shap's DeepExplainer wants a 2-d output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out if out.dim() == 2 else out.unsqueeze(-1)


def gnn_head_inputs(model: nn.Module, graph: Any) -> torch.Tensor:
    """[h_src, h_dst, edge_attr] per transaction: what FraudGNN's scorer sees, each row from the
    graph snapshot that scores it (a test checks the scorer on these equals the model's output)."""
    with torch.no_grad():
        return model.head_inputs(graph)


def explain_bank(
    run_dir: Path,
    bank_dir: Path,
    split: str = "test",
    target_fpr: float = DEFAULT_TARGET_FPR,
    max_alerts: int = 50,
    sample: int = 200,
    background: int = 200,
    seed: int = 0,
) -> Explanation:
    """Alerts of `split` (score above the bank's threshold for `target_fpr`), highest first,
    plus `sample` random rows of the split for the global summary."""
    import shap

    if split not in (*SPLITS, "all"):
        raise FedfraudError(f"--split must be one of {', '.join(SPLITS)}, all; got {split!r}")
    if not 0 < target_fpr < 1:
        raise FedfraudError(f"--target-fpr must be in (0, 1), got {target_fpr}")
    if max_alerts < 1:
        raise FedfraudError("--max-alerts must be at least 1")
    model, card = load_run_model(run_dir)
    frame = read_bank_dir(bank_dir)
    table = bank_table(frame, bank_dir, card)
    inputs = make_inputs(card.model, table, card.scaler)
    if card.model == "gnn":
        head, x = model.score, gnn_head_inputs(model, inputs.graph)
    else:
        head, x = model, inputs.x
    with torch.no_grad():
        prob = torch.sigmoid(_Logit(head)(x).squeeze(-1)).numpy()
    threshold = choose_threshold(table.y[table.mask(VAL)], prob[table.mask(VAL)], target_fpr)
    rows = (
        np.arange(len(prob))
        if split == "all"
        else np.flatnonzero(table.split == SPLITS.index(split))
    )
    if rows.size == 0:
        raise FedfraudError(f"{bank_dir}: the {split} split is empty; choose another --split")
    alerts = rows[prob[rows] > threshold.value]
    alerts = alerts[np.argsort(-prob[alerts], kind="stable")][:max_alerts]
    rng = np.random.default_rng(seed)
    rest = np.setdiff1d(rows, alerts)
    others = rng.choice(rest, min(sample, rest.size), replace=False) if rest.size else rest
    explained = np.concatenate([alerts, others]).astype(np.int64)
    train = np.flatnonzero(table.mask(TRAIN))
    bg = x[rng.choice(train, min(background, train.size), replace=False)]
    explainer = shap.DeepExplainer(_Logit(head), bg)
    values = np.asarray(explainer.shap_values(x[explained])).reshape(len(explained), -1)
    raw = table.x[explained].astype(np.float64)
    names: tuple[str, ...] = card.feature_names
    if card.model == "gnn":
        hidden = (x.shape[1] - raw.shape[1]) // 2
        values = np.column_stack(
            [
                values[:, :hidden].sum(1),
                values[:, hidden : 2 * hidden].sum(1),
                values[:, 2 * hidden :],
            ]
        )
        raw = np.column_stack([np.full((len(explained), 2), np.nan), raw])
        names = (*GRAPH_PLAYERS, *names)
    # The bank's own ids (row numbers of its source file when it had none); the row index
    # only for a hand-made table without a tx_id column.
    ids = table.tx_id[explained].tolist() if table.tx_id is not None else explained.tolist()
    return Explanation(
        bank=Path(bank_dir).name,
        split=split,
        feature_names=names,
        values=values,
        features=raw,
        base_value=float(np.asarray(explainer.expected_value).ravel()[0]),
        probability=prob[explained],
        label=table.y[explained].astype(int),
        tx_id=ids,
        num_alerts=len(alerts),
        threshold=threshold.value,
        target_fpr=target_fpr,
    )


def write_explanation(expl: Explanation, out_dir: Path, top: int = 5) -> tuple[Path, Path]:
    """explanations.json (alerts with top features) and shap_summary.png (all explained rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "bank": expl.bank,
        "split": expl.split,
        "method": "shap.DeepExplainer, log-odds, background = bank's training rows",
        "base_value": expl.base_value,
        "threshold": expl.threshold,
        "target_fpr": expl.target_fpr,
        "alerts": expl.alerts(top),
        "mean_abs_shap": dict(
            sorted(
                zip(expl.feature_names, np.abs(expl.values).mean(0).tolist(), strict=True),
                key=lambda kv: -kv[1],
            )
        ),
    }
    json_path = out_dir / "explanations.json"
    atomic_write_text(json_path, json.dumps(doc, indent=1, default=str))
    plt.figure()
    with warnings.catch_warnings():  # graph players have no feature value to colour by (NaN)
        warnings.simplefilter("ignore", RuntimeWarning)
        shap.summary_plot(
            expl.values,
            features=expl.features,
            feature_names=list(expl.feature_names),
            max_display=15,
            show=False,
            plot_size=(8, 6),
        )
    plt.title(
        f"{expl.bank}, {expl.split} split: {expl.num_alerts} alerts + "
        f"{len(expl.values) - expl.num_alerts} random rows (SHAP, log-odds)",
        fontsize=9,
    )
    png_path = out_dir / "shap_summary.png"
    plt.tight_layout()
    plt.savefig(png_path, dpi=110)
    plt.close("all")
    return json_path, png_path
