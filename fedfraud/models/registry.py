"""Model name -> builder. A new model is one module plus one `@register` line."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fedfraud.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """What a builder needs: input sizes from the data, hyper-parameters from the config."""

    in_dim: int
    node_in_dim: int = 0
    hidden: int = 64
    gnn_conv: str = "sage"
    seed: int = 0
    output_bias: float = 0.0  # initial bias of the fraud logit (the consortium's log prior odds)


Builder = Callable[[ModelSpec], nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator adding a model builder under `name`."""

    def deco(builder: Builder) -> Builder:
        _REGISTRY[name] = builder
        return builder

    return deco


def available() -> list[str]:
    """Registered model names."""
    _load()
    return sorted(_REGISTRY)


def build(name: str, spec: ModelSpec) -> nn.Module:
    """Build model `name`; the seed makes every bank start from identical weights."""
    _load(name)
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(available())}")
    # Banks build the initial global model themselves from the shared seed, so the operator
    # never needs the architecture or the first weights.
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        return _REGISTRY[name](spec)


_BUILTIN = ("mlp", "gnn")  # each module registers itself on import


def _load(name: str | None = None) -> None:
    # Import only the model asked for: the GNN's torch_geometric takes seconds to import, and a
    # deployed bank starts a fresh process for every message.
    for module in [name] if name in _BUILTIN else _BUILTIN:
        importlib.import_module(f"fedfraud.models.{module}")
