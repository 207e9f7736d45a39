"""Tabular MLP over per-transaction features (Opacus-compatible: Linear + ReLU only)."""

from __future__ import annotations

import torch
from torch import nn

from fedfraud.models.registry import ModelSpec, register


class FraudMLP(nn.Module):
    """Two hidden layers; returns one fraud logit per transaction."""

    def __init__(self, in_dim: int, hidden: int = 64, output_bias: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )
        nn.init.constant_(self.net[-1].bias, output_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


@register("mlp")
def build_mlp(spec: ModelSpec) -> FraudMLP:
    return FraudMLP(spec.in_dim, spec.hidden, spec.output_bias)
