"""Model name -> builder. A new model is one module plus one `@register` line."""

from __future__ import annotations

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
    _load()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(available())}")
    # Banks build the initial global model themselves from the shared seed, so the operator
    # never needs the architecture or the first weights.
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        return _REGISTRY[name](spec)


def _load() -> None:
    from fedfraud.models import gnn, mlp  # noqa: F401
