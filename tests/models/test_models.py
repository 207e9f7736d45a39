"""Model forward/backward, shared-seed initialisation and the GNN's data requirement."""

import numpy as np
import pytest
import torch

from fedfraud.config import RunConfig
from fedfraud.data.features import build_bank_table
from fedfraud.data.scaling import Scaler, local_moments
from fedfraud.errors import ConfigError, DataError
from fedfraud.models import ModelSpec, build
from fedfraud.train import build_model, get_weights, make_inputs, predict, train_local
from tests.conftest import random_bank


@pytest.fixture(scope="module")
def table():
    return build_bank_table(random_bank(np.random.default_rng(0), 3000, 0), "b")


@pytest.mark.parametrize("model", ["mlp", "gnn"])
def test_forward_backward_and_training_reduces_loss(table, model):
    cfg = RunConfig(model=model)
    inputs = make_inputs(model, table, Scaler.from_moments(local_moments(table)))
    net = build_model(cfg, table)
    logits = net(inputs.graph) if model == "gnn" else net(inputs.x)
    assert logits.shape == (len(table.y),)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, inputs.y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    first = train_local(net, inputs, cfg, epochs=1)
    later = train_local(net, inputs, cfg, epochs=3)
    assert later.loss < first.loss
    y, scores = predict(net, inputs)
    assert ((scores >= 0) & (scores <= 1)).all() and len(y) == len(scores)


@pytest.mark.parametrize("conv", ["sage", "gcn"])
def test_same_seed_gives_every_bank_the_same_initial_model(conv):
    spec = ModelSpec(in_dim=12, node_in_dim=5, gnn_conv=conv, seed=3)
    a, b = get_weights(build("gnn", spec)), get_weights(build("gnn", spec))
    c = get_weights(build("gnn", ModelSpec(12, 5, gnn_conv=conv, seed=4)))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=False))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=False))


def test_gnn_refuses_data_without_accounts():
    table = build_bank_table(random_bank(np.random.default_rng(1), 500, 0, accounts=False), "b")
    with pytest.raises(DataError, match="sender and receiver"):
        make_inputs("gnn", table, Scaler.from_moments(local_moments(table)))


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model"):
        build("transformer", ModelSpec(4))
