"""FedAvg weighting exactness and payload validation of the plaintext ('none') backend."""

import numpy as np
import pytest

import secure_agg
from fedfraud.errors import ConfigError, PayloadError
from secure_agg.base import Payload

SHAPES = [(3, 4), (4,), (1,)]


def _update(rng):
    return [rng.normal(size=s).astype(np.float32) for s in SHAPES]


def test_aggregate_is_the_sample_weighted_mean():
    rng = np.random.default_rng(0)
    client = secure_agg.get("none", "client")
    updates = [_update(rng) for _ in range(3)]
    weights = [10.0, 30.0, 60.0]
    payloads = {
        f"b{i}": client.client_protect(u, w, 1)
        for i, (u, w) in enumerate(zip(updates, weights, strict=False))
    }
    agg = secure_agg.get("none", "server").server_aggregate(payloads)
    mean = client.client_reveal(agg.payload, SHAPES)
    for j in range(len(SHAPES)):
        expected = sum(
            w * u[j].astype(np.float64) for u, w in zip(updates, weights, strict=False)
        ) / sum(weights)
        np.testing.assert_allclose(mean[j], expected, atol=1e-6)
    assert agg.included == ("b0", "b1", "b2") and not agg.rejected


def test_wrong_shape_and_tampered_payloads_are_rejected_and_the_rest_renormalized():
    rng = np.random.default_rng(1)
    client = secure_agg.get("none", "client")
    good = [_update(rng) for _ in range(2)]
    payloads = {
        "a": client.client_protect(good[0], 1.0, 1),
        "b": client.client_protect(good[1], 3.0, 1),
        "short": client.client_protect(good[0][:2], 1.0, 1),
        "tampered": Payload("none", (b"\x00\x01\x02",), {"size": 1}),
        "other": Payload("ckks", (b"x" * 8,), {}),
    }
    agg = secure_agg.get("none", "server").server_aggregate(payloads)
    assert set(agg.rejected) == {"short", "tampered", "other"}
    mean = client.client_reveal(agg.payload, SHAPES)
    np.testing.assert_allclose(mean[0], (good[0][0] + 3 * good[1][0]) / 4, atol=1e-6)


def test_bad_weight_and_unknown_backend_give_clear_errors():
    client = secure_agg.get("none", "client")
    with pytest.raises(PayloadError, match="weight"):
        client.client_protect([np.ones(2)], 0.0, 1)
    with pytest.raises(ConfigError, match="unknown secure aggregation backend 'rot13'"):
        secure_agg.get("rot13", "server")


def test_payload_file_format_round_trips_and_detects_truncation():
    payload = Payload("none", (b"abc", b"defg"), {"size": 2})
    assert Payload.from_bytes(payload.to_bytes()) == payload
    with pytest.raises(PayloadError):
        Payload.from_bytes(payload.to_bytes()[:-1])
    assert Payload.from_record(payload.to_record()) == payload
