"""Bank-local features, temporal splits and scaling from securely aggregated moments."""

import numpy as np
import pandas as pd

import secure_agg
from fedfraud.data.features import TEST, TRAIN, build_bank_table, temporal_split
from fedfraud.data.scaling import Scaler, local_moments, moment_weight
from tests.conftest import random_bank


def test_temporal_split_tests_on_the_future():
    ts = np.random.default_rng(0).uniform(0, 100, 1000)
    split = temporal_split(ts)
    assert ts[split == TRAIN].max() <= ts[split == TEST].min()
    assert abs((split == TEST).mean() - 0.2) < 0.01


def test_features_are_finite_and_label_free():
    rng = np.random.default_rng(1)
    df = random_bank(rng, 2000, 0)
    table = build_bank_table(df, "b")
    assert np.isfinite(table.x).all() and np.isfinite(table.node_x).all()
    flipped = build_bank_table(df.assign(is_fraud=1 - df["is_fraud"]), "b")
    np.testing.assert_array_equal(table.x, flipped.x)  # labels never leak into features


def test_secure_moment_scaler_equals_pooled_training_statistics():
    rng = np.random.default_rng(2)
    tables = [
        build_bank_table(random_bank(rng, n, 10_000 * i), f"b{i}")
        for i, n in enumerate([500, 1500, 4000])
    ]
    client = secure_agg.get("none", "client")
    d, k = tables[0].x.shape[1], tables[0].node_x.shape[1]
    payloads = {
        t.name: client.client_protect(local_moments(t), moment_weight(t), 0) for t in tables
    }
    agg = secure_agg.get("none", "server").server_aggregate(payloads)
    scaler = Scaler.from_moments(client.client_reveal(agg.payload, [(d,), (d,), (k,), (k,)]))
    pooled = np.concatenate([t.x[t.mask(TRAIN)] for t in tables]).astype(np.float64)
    std = pooled.std(0)
    np.testing.assert_allclose(scaler.mean, pooled.mean(0), atol=1e-4)
    np.testing.assert_allclose(scaler.std[std > 1e-3], std[std > 1e-3], rtol=1e-3)


def test_table_without_accounts_has_no_graph():
    rng = np.random.default_rng(3)
    table = build_bank_table(random_bank(rng, 500, 0, accounts=False), "b")
    assert table.src is None and table.node_x is None
    assert isinstance(table.x, np.ndarray) and not pd.isna(table.x).any()


def test_union_of_tables_keeps_each_bank_graph_disjoint():
    from fedfraud.baselines import union_of_tables

    rng = np.random.default_rng(4)
    a, b = (build_bank_table(random_bank(rng, 400, 0), n) for n in ("a", "b"))
    u = union_of_tables([a, b])
    na = a.node_x.shape[0]
    assert u.x.shape[0] == a.x.shape[0] + b.x.shape[0]
    assert u.src[: len(a.src)].max() < na <= u.src[len(a.src) :].min()
    np.testing.assert_array_equal(u.dst[len(a.dst) :] - na, b.dst)


def test_ckks_revealed_moments_equal_the_exact_weighted_moments(tmp_path):
    # CKKS noise is absolute; moment weights that are too small (a large MOMENT_WEIGHT_UNIT)
    # are not rescued by the division by the total weight, and the error reached 1e-4.
    rng = np.random.default_rng(5)
    tables = [
        build_bank_table(random_bank(rng, n, 10_000 * i), f"b{i}")
        for i, n in enumerate([500, 1500, 4000])
    ]
    options = secure_agg.provision("ckks", tmp_path, len(tables))
    client = secure_agg.get("ckks", "client", options)
    d, k = tables[0].x.shape[1], tables[0].node_x.shape[1]
    payloads = {
        t.name: client.client_protect(local_moments(t), moment_weight(t), 0) for t in tables
    }
    agg = secure_agg.get("ckks", "server", options).server_aggregate(payloads)
    revealed = client.client_reveal(agg.payload, [(d,), (d,), (k,), (k,)])
    total = sum(moment_weight(t) for t in tables)
    for i, got in enumerate(revealed):
        exact = sum(moment_weight(t) * local_moments(t)[i] for t in tables) / total
        assert np.abs(got - exact).max() <= 1e-5, i
