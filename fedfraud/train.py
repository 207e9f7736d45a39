"""Local training and evaluation, shared by bank clients, baselines and tests. Plain PyTorch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedfraud.config import RunConfig
from fedfraud.data.features import TEST, TRAIN, BankTable
from fedfraud.data.scaling import Scaler
from fedfraud.models import ModelSpec, build

# Hook for record-level DP: takes (model, optimizer, loader), returns them made private.
Privatizer = Callable[
    [nn.Module, torch.optim.Optimizer, DataLoader],
    tuple[nn.Module, torch.optim.Optimizer, DataLoader],
]

MAX_POS_WEIGHT = 30.0
MIN_PRIOR = 1e-5  # a fraud rate (noised under DP) is clamped to [MIN_PRIOR, 1 - MIN_PRIOR]


@dataclass(frozen=True)
class ModelInputs:
    """A bank's scaled data in the form its model consumes."""

    model: str
    x: torch.Tensor  # transaction features (edge_attr for the GNN)
    y: torch.Tensor
    split: torch.Tensor
    graph: object | None = None  # torch_geometric Data for the GNN
    fraud_rate: float | None = None  # the consortium's training fraud rate (stats stage)

    def num(self, split: int) -> int:
        return int((self.split == split).sum())


@dataclass(frozen=True)
class TrainStats:
    steps: int
    loss: float
    seconds: float


def make_inputs(model: str, table: BankTable, scaler: Scaler) -> ModelInputs:
    """Scale a bank's table and shape it for `model` ("mlp" or "gnn")."""
    x, node_x, node_x_eval = scaler.transform(table)
    graph = None
    if model == "gnn":
        # Imported here: torch_geometric takes seconds to import, and a deployed bank starts a
        # fresh process for every message.
        from fedfraud.data.graph import to_graph

        graph = to_graph(table, x, node_x, node_x_eval)
    return ModelInputs(
        model=model,
        x=torch.from_numpy(x),
        y=torch.from_numpy(table.y),
        split=torch.from_numpy(table.split.astype(np.int64)),
        graph=graph,
        fraud_rate=scaler.fraud_rate,
    )


def prior_logit(fraud_rate: float | None) -> float:
    """Log-odds of `fraud_rate` (0 when unknown), rounded so that every bank, revealing the same
    aggregate through a backend with float noise, builds bit-identical initial weights."""
    if fraud_rate is None:
        return 0.0
    rate = min(max(float(fraud_rate), MIN_PRIOR), 1.0 - MIN_PRIOR)
    return round(math.log(rate / (1.0 - rate)), 4)


def build_model(config: RunConfig, table: BankTable, fraud_rate: float | None = None) -> nn.Module:
    """The run's model for this bank's feature sizes, initialised from the shared seed, with its
    output bias at the log-odds of `fraud_rate` (the consortium's, from the stats stage).

    Why the prior matters: at bias 0 every row starts at p = 0.5, and the first steps mostly
    lower all logits. That descent lowers rows with large feature norms most, and fraud rows
    are the outliers, so the ranking inverts (ROC-AUC < 0.5) until the class weight of the few
    positives turns it back. Under DP-SGD per-example clipping caps exactly those weighted
    positive gradients (norms ~15-45 against ~1 for a legitimate row), so the inversion won:
    ε = 1e9 ended at ROC-AUC 0.14-0.43. Starting at the prior, legitimate rows start near zero
    gradient and the positives' (clipped) gradients carry the signal (docs/privacy.md)."""
    node_dim = table.node_x.shape[1] if table.node_x is not None else 0
    spec = ModelSpec(
        table.x.shape[1],
        node_dim,
        config.hidden,
        config.gnn_conv,
        config.seed,
        prior_logit(fraud_rate),
    )
    return build(config.model, spec)


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """Model parameters as float32 numpy arrays, in a fixed order."""
    return [p.detach().cpu().numpy().copy() for p in model.state_dict().values()]


def set_weights(model: nn.Module, weights: Sequence[np.ndarray]) -> None:
    """Load arrays produced by `get_weights` (or an aggregate shaped like them)."""
    keys = list(model.state_dict())
    model.load_state_dict(
        {k: torch.from_numpy(np.asarray(w)) for k, w in zip(keys, weights, strict=True)}
    )


def weight_shapes(model: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(v.shape) for v in model.state_dict().values()]


def pos_weight(y: torch.Tensor) -> torch.Tensor:
    """Imbalance-aware loss weight sqrt(neg/pos), capped so rare-fraud banks stay stable."""
    pos = float(y.sum())
    neg = float(len(y) - pos)
    return torch.tensor(min(MAX_POS_WEIGHT, max(1.0, (neg / max(pos, 1.0)) ** 0.5)))


def class_weight(inputs: ModelInputs) -> float:
    """The fraud rows' loss weight sqrt(neg/pos): from the consortium's fraud rate when the
    stats stage revealed it (the same at every bank, and no per-bank label count goes into
    training settings), else from this bank's training labels."""
    if inputs.fraud_rate is None:
        return float(pos_weight(inputs.y[inputs.split == TRAIN]))
    rate = min(max(inputs.fraud_rate, MIN_PRIOR), 1.0 - MIN_PRIOR)
    return min(MAX_POS_WEIGHT, max(1.0, ((1.0 - rate) / rate) ** 0.5))


def train_local(
    model: nn.Module,
    inputs: ModelInputs,
    config: RunConfig,
    epochs: int | None = None,
    seed: int = 0,
    privatizer: Privatizer | None = None,
) -> TrainStats:
    """Train on the bank's training split for `epochs` (default: config.local_epochs)."""
    epochs = config.local_epochs if epochs is None else epochs
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    train = inputs.split == TRAIN
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(class_weight(inputs)))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    steps, last = 0, float("nan")
    if inputs.model == "gnn":
        # Mini-batches of training transactions; account embeddings are recomputed per step
        # over the bank's whole graph (message passing needs the neighbourhood).
        train_ids = torch.nonzero(train).squeeze(1)
        for _ in range(epochs):
            order = train_ids[torch.randperm(len(train_ids), generator=generator)]
            for batch in order.split(config.batch_size):
                optimizer.zero_grad()
                loss = loss_fn(model(inputs.graph, batch), inputs.y[batch])
                loss.backward()
                optimizer.step()
                steps, last = steps + 1, loss.item()
    else:
        loader = DataLoader(
            TensorDataset(inputs.x[train], inputs.y[train]),
            batch_size=config.batch_size,
            shuffle=True,
            generator=generator,
        )
        if privatizer is not None:
            model, optimizer, loader = privatizer(model, optimizer, loader)
        for _ in range(epochs):
            for xb, yb in loader:
                if len(yb) == 0:  # Poisson sampling (DP) can draw an empty batch
                    continue
                optimizer.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                optimizer.step()
                steps, last = steps + 1, loss.item()
    return TrainStats(steps, last, time.perf_counter() - start)


@torch.no_grad()
def predict(
    model: nn.Module, inputs: ModelInputs, split: int = TEST
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and fraud probabilities for the rows of `split`."""
    model.eval()
    logits = model(inputs.graph) if inputs.model == "gnn" else model(inputs.x)
    mask = inputs.split == split
    return inputs.y[mask].numpy(), torch.sigmoid(logits[mask]).numpy()
