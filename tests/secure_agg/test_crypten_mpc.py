"""CrypTen additive secret sharing: exact FedAvg within fixed-point precision, shares that reveal
nothing alone, sealed shares that cannot be tampered with, rejection of foreign payloads, bank
dropout, a compute party that is down, and options that fail with the fix."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import secure_agg
from fedfraud.errors import ConfigError, PayloadError
from secure_agg import crypten_launch, crypten_mpc
from secure_agg.base import Payload, flatten
from secure_agg.crypten_committee import (
    load_committee,
    load_party_key,
    open_sealed,
    share_context,
)
from secure_agg.crypten_mpc import init_parties

SHAPES = [(100, 150), (50, 100), (10,)]  # 20_010 parameters
SMALL = [(4, 5), (3,)]


@pytest.fixture(scope="module")
def committee_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("committee") / "parties"
    init_parties(directory, 3)
    return directory


@pytest.fixture(scope="module")
def client(committee_dir: Path):
    return _backends(committee_dir)[0]


@pytest.fixture(scope="module")
def server(committee_dir: Path):
    """One operator for the module: its compute parties start once and serve every test."""
    server = _backends(committee_dir)[1]
    yield server
    server.close()


def _backends(directory: Path, **extra):
    options = {"crypten-parties-dir": str(directory), "crypten-simulation": True, **extra}
    return secure_agg.get("crypten", "client", options), secure_agg.get(
        "crypten", "server", options
    )


def _updates(seed: int, n: int, shapes=SHAPES) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.normal(0, 0.1, size=s).astype(np.float32) for s in shapes] for _ in range(n)]


def _weighted_mean(updates, weights) -> np.ndarray:
    total = sum(w * flatten(u) for u, w in zip(updates, weights, strict=True))
    return total / sum(weights)


def _fixed_point_bound(mean: np.ndarray, banks: int, total_weight: float, precision: int):
    """|error| <= banks * 2^-(p+1) * (1 + |mean|) / W: each bank's rint() of w*x and of w is off
    by at most half a step 2^-p; dividing by the total weight W spreads the error."""
    return banks * 2.0 ** -(precision + 1) * (1 + np.abs(mean)) / total_weight * 1.001


@pytest.mark.e2e
def test_aggregate_matches_plaintext_weighted_mean_within_fixed_point_precision(client, server):
    updates, weights = _updates(0, 4), [120.0, 450.0, 37.0, 990.0]
    payloads = {
        f"bank-{i}": client.client_protect(u, w, 3)
        for i, (u, w) in enumerate(zip(updates, weights, strict=True))
    }
    agg = server.server_aggregate(payloads)
    assert agg.included == ("bank-0", "bank-1", "bank-2", "bank-3") and not agg.rejected
    mean = flatten(client.client_reveal(agg.payload, SHAPES))

    exact = _weighted_mean(updates, weights)
    bound = _fixed_point_bound(exact, 4, sum(weights), crypten_mpc.DEFAULT_PRECISION)
    float32_out = np.abs(exact) * 2.0**-24  # client_reveal returns float32 like the models
    assert np.all(np.abs(mean - exact) <= bound + float32_out)

    # The same banks through the plaintext baseline (float32 on the wire) agree as closely as
    # that baseline's own rounding allows.
    plain_client, plain_server = secure_agg.get("none", "client"), secure_agg.get("none", "server")
    plain_agg = plain_server.server_aggregate(
        {
            f"bank-{i}": plain_client.client_protect(u, w, 3)
            for i, (u, w) in enumerate(zip(updates, weights, strict=True))
        }
    )
    plain = flatten(plain_client.client_reveal(plain_agg.payload, SHAPES))
    wire32 = sum(w * np.abs(flatten(u)) for u, w in zip(updates, weights, strict=True)) * 2.0**-24
    assert np.all(np.abs(mean - plain) <= bound + wire32 / sum(weights) + 2 * float32_out)


def test_a_single_share_looks_uniform_and_unrelated_to_the_update(client, committee_dir):
    update = _updates(1, 1)[0]
    payload = client.client_protect(update, 500.0, 1)
    committee = load_committee(committee_dir)
    meta = payload.meta
    context = share_context(
        committee.fingerprint, 0, 1, meta["size"], meta["precision"], meta["cid"]
    )
    share = np.frombuffer(
        open_sealed(load_party_key(committee, 0), payload.chunks[0], context), dtype="<i8"
    )
    encoded = crypten_mpc.encode(np.append(flatten(update) * 500.0, 500.0), meta["precision"])

    # The encoded update stays below 2^30 in magnitude; a share is spread over the whole ring.
    assert np.abs(encoded).max() < 2**30
    assert np.mean(np.abs(share.astype(np.float64)) > 2.0**60) > 0.8
    assert abs(np.mean(share < 0) - 0.5) < 0.02
    assert abs(np.corrcoef(share.astype(np.float64), encoded.astype(np.float64))[0, 1]) < 0.05

    # Its bytes are uniform: chi-square over 256 byte values (255 dof: mean 255, sd 23; the
    # limit is > 6 sd out, so os.urandom never trips it; the encoded update scores millions).
    def chi2(values: np.ndarray) -> float:
        counts = np.bincount(values.view(np.uint8), minlength=256)
        return float(((counts - values.nbytes / 256) ** 2 / (values.nbytes / 256)).sum())

    assert chi2(share) < 400 < chi2(encoded)
    # Fresh randomness every time: the same update gives a different share.
    again = client.client_protect(update, 500.0, 1)
    assert again.chunks[0] != payload.chunks[0]


def test_operator_cannot_open_a_share_without_the_party_key(client, committee_dir, tmp_path):
    payload = client.client_protect(_updates(2, 1, SMALL)[0], 1.0, 1)
    meta = payload.meta
    context = share_context(meta["committee"], 0, 1, meta["size"], meta["precision"], meta["cid"])
    stranger = load_party_key(init_parties(tmp_path / "other", 3), 0)
    with pytest.raises(PayloadError, match="authentication"):
        open_sealed(stranger, payload.chunks[0], context)
    party1 = load_party_key(load_committee(committee_dir), 1)  # right committee, wrong party
    with pytest.raises(PayloadError, match="authentication"):
        open_sealed(party1, payload.chunks[0], context)


@pytest.mark.e2e
def test_tampered_share_is_rejected_by_its_party_and_the_rest_aggregate(client, server):
    # Four banks: the compute parties reveal no sum of fewer than three.
    updates, weights = _updates(3, 4, SMALL), [1.0, 2.0, 5.0, 3.0]
    payloads = {
        f"bank-{i}": client.client_protect(u, w, 2)
        for i, (u, w) in enumerate(zip(updates, weights, strict=True))
    }
    bad = payloads["bank-1"]
    flipped = bytearray(bad.chunks[2])
    flipped[-20] ^= 0x01  # inside the ciphertext of party 2's seed: only party 2 can notice
    payloads["bank-1"] = Payload(bad.backend, (*bad.chunks[:2], bytes(flipped)), bad.meta)

    agg = server.server_aggregate(payloads)
    assert agg.included == ("bank-0", "bank-2", "bank-3")
    assert "compute party 2" in agg.rejected["bank-1"]
    assert "authentication" in agg.rejected["bank-1"]
    mean = flatten(client.client_reveal(agg.payload, SMALL))
    exact = _weighted_mean([updates[0], updates[2], updates[3]], [1.0, 5.0, 3.0])
    np.testing.assert_allclose(mean, exact, atol=1e-5)


@pytest.mark.e2e
def test_foreign_wrong_size_and_missing_share_payloads_are_rejected(client, server, tmp_path):
    other_client, _ = _backends(init_parties(tmp_path / "other", 3).directory)
    updates = _updates(4, 4, SMALL)
    good = {f"bank-{i}": client.client_protect(u, 1.0, 5) for i, u in enumerate(updates[:3])}
    short = client.client_protect(updates[3], 1.0, 5)
    payloads = {
        **good,
        "foreign": other_client.client_protect(updates[3], 1.0, 5),
        "short": Payload(short.backend, (short.chunks[0][:-8], *short.chunks[1:]), short.meta),
        "missing": Payload(short.backend, short.chunks[:2], short.meta),
        "stale": client.client_protect(updates[3], 1.0, 4),
        "replayed": good["bank-0"],
        "plain": secure_agg.get("none", "client").client_protect(updates[3], 1.0, 5),
    }
    agg = server.server_aggregate(payloads)
    assert agg.included == ("bank-0", "bank-1", "bank-2")
    assert "committee" in agg.rejected["foreign"] and "parties.json" in agg.rejected["foreign"]
    assert "share for party 0" in agg.rejected["short"]
    assert "2 shares" in agg.rejected["missing"]
    assert "round 4" in agg.rejected["stale"]
    assert "replayed" in agg.rejected["replayed"]
    assert "backend 'none'" in agg.rejected["plain"]
    mean = flatten(client.client_reveal(agg.payload, SMALL))
    np.testing.assert_allclose(mean, _weighted_mean(updates[:3], [1.0] * 3), atol=1e-5)


@pytest.mark.e2e
def test_bank_dropout_leaves_the_mean_of_the_others(client, server):
    updates, weights = _updates(5, 4, SMALL), [3.0, 1.0, 4.0, 1.0]
    payloads = {
        f"bank-{i}": client.client_protect(u, w, 1)
        for i, (u, w) in enumerate(zip(updates, weights, strict=True))
    }
    del payloads["bank-2"]  # bank-2 dropped out: its shares never arrive
    # Flower's ServerApp aggregates from a worker thread; the committee must start from one.
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(agg=server.server_aggregate(payloads)))
    worker.start()
    worker.join(timeout=60)
    agg = out["agg"]
    assert agg.included == ("bank-0", "bank-1", "bank-3")
    mean = flatten(client.client_reveal(agg.payload, SMALL))
    exact = _weighted_mean([updates[i] for i in (0, 1, 3)], [3.0, 1.0, 1.0])
    np.testing.assert_allclose(mean, exact, atol=1e-5)


@pytest.fixture
def started(monkeypatch) -> list[subprocess.Popen]:
    """Records the compute-party processes the backend starts."""
    procs: list[subprocess.Popen] = []
    real = subprocess.Popen

    def recording(*args, **kwargs):
        procs.append(real(*args, **kwargs))
        return procs[-1]

    monkeypatch.setattr(crypten_launch.subprocess, "Popen", recording)
    return procs


@pytest.mark.e2e
def test_compute_party_down_fails_the_round_with_a_clear_error(committee_dir, tmp_path, started):
    broken = tmp_path / "parties"
    shutil.copytree(committee_dir, broken)
    (broken / "party-2.key").unlink()  # party 2 cannot come up
    client, server = _backends(broken)
    payloads = {f"b{i}": client.client_protect(u, 1.0, 1) for i, u in enumerate(_updates(6, 3))}
    with pytest.raises(PayloadError, match="compute party 2 failed: cannot read the private key"):
        server.server_aggregate(payloads)
    assert len(started) == 3 and all(p.poll() is not None for p in started)


def test_committee_that_does_not_finish_times_out_and_is_stopped(committee_dir, started):
    client, server = _backends(committee_dir, **{"crypten-timeout": 0.2})
    payloads = {f"b{i}": client.client_protect(u, 1.0, 1) for i, u in enumerate(_updates(7, 3))}
    with pytest.raises(PayloadError, match="did not finish within crypten-timeout=0.2s"):
        server.server_aggregate(payloads)
    assert len(started) == 3 and all(p.poll() is not None for p in started)


def test_fewer_valid_banks_than_min_banks_are_never_revealed(committee_dir, started):
    client, server = _backends(committee_dir, **{"min-banks": 3})
    two = _updates(8, 2, SMALL)
    payloads = {f"b{i}": client.client_protect(u, 1.0, 1) for i, u in enumerate(two)}
    with pytest.raises(PayloadError, match="fewer than crypten-min-banks=3"):
        server.server_aggregate(payloads)
    assert not started


@pytest.mark.e2e
def test_parties_refuse_a_sum_that_tampering_leaves_below_min_banks(committee_dir, started):
    client, server = _backends(committee_dir)
    # A deviating operator asks for a sum of two (its own code refuses crypten-min-banks < 3).
    server.settings = dataclasses.replace(server.settings, min_banks=2)
    payloads = {f"b{i}": client.client_protect(u, 1.0, 1) for i, u in enumerate(_updates(11, 3))}
    bad = payloads["b1"]
    payloads["b1"] = Payload(
        bad.backend, (bad.chunks[0], bad.chunks[1][::-1], *bad.chunks[2:]), bad.meta
    )
    # The operator's checks pass (right sizes); only party 1 sees the bad share, and the
    # parties, not the operator, enforce the minimum - their own floor of 3, above the
    # operator's crypten-min-banks=2: b0 + b2 alone are never revealed.
    with pytest.raises(PayloadError, match="fewer than 3 banks"):
        server.server_aggregate(payloads)
    assert all(p.poll() is not None for p in started)


def test_bad_options_raise_config_error_naming_the_fix(committee_dir, tmp_path):
    def get(**options):
        return secure_agg.get("crypten", "server", options)

    with pytest.raises(ConfigError, match="needs crypten-parties-dir.*init_parties"):
        get()
    with pytest.raises(ConfigError, match="at least 2.*use 3"):
        get(**{"crypten-parties-dir": str(committee_dir), "crypten-parties": 1})
    with pytest.raises(ConfigError, match="does not exist.*init_parties"):
        get(**{"crypten-parties-dir": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="parties.json not found"):
        get(**{"crypten-parties-dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="lists 3 parties but crypten-parties=4"):
        get(**{"crypten-parties-dir": str(committee_dir), "crypten-parties": 4})
    with pytest.raises(ConfigError, match="crypten-precision must be between"):
        get(**{"crypten-parties-dir": str(committee_dir), "crypten-precision": 60})
    with pytest.raises(ConfigError, match="crypten-timeout must be a number"):
        get(**{"crypten-parties-dir": str(committee_dir), "crypten-timeout": "soon"})


def test_update_too_large_for_the_precision_names_one_that_fits(client):
    with pytest.raises(PayloadError, match="set crypten-precision to 1[0-9] or less"):
        client.client_protect([np.full(3, 5e5, dtype=np.float32)], 1e5, 1)
    with pytest.raises(PayloadError, match="NaN"):
        client.client_protect([np.array([np.nan], dtype=np.float32)], 1.0, 1)


def test_encoding_is_cryptens_fixed_point_encoding_rounded_to_nearest():
    from secure_agg._crypten_compat import import_crypten

    torch = pytest.importorskip("torch")
    encoder = import_crypten().encoder.FixedPointEncoder(precision_bits=20)
    x = np.random.default_rng(9).normal(0, 100, 1000)
    ours = crypten_mpc.encode(x, 20)
    theirs = encoder.encode(torch.from_numpy(x)).numpy()  # truncates toward zero
    assert np.all(np.abs(ours - theirs) <= 1)
    np.testing.assert_allclose(encoder.decode(torch.from_numpy(ours)).numpy(), x, atol=2.0**-20)


def test_upload_is_one_int64_share_plus_a_seed_per_other_party(client):
    payload = client.client_protect(_updates(10, 1)[0], 10.0, 1)
    values = sum(int(np.prod(s)) for s in SHAPES) + 1
    assert [len(c) for c in payload.chunks] == [8 * values + 60, 92, 92]
    assert payload.nbytes() < 8 * values + 600


def test_aggregate_from_another_committee_is_refused_on_reveal(client, tmp_path):
    other, _ = _backends(init_parties(tmp_path / "other", 3).directory)
    fake = Payload(
        "crypten",
        (np.zeros(3, "<i8").tobytes(),),
        {"committee": other.committee.fingerprint, "size": 3},
    )
    with pytest.raises(PayloadError, match="another CrypTen committee"):
        client.client_reveal(fake, [(2,)])


def test_init_parties_keeps_private_keys_private_and_never_overwrites(tmp_path):
    committee = init_parties(tmp_path / "c", 4)
    assert committee.size == 4 and load_committee(tmp_path / "c") == committee
    for k in range(4):
        assert stat.S_IMODE((tmp_path / "c" / f"party-{k}.key").stat().st_mode) == 0o600
    assert "PRIVATE" not in (tmp_path / "c" / "parties.json").read_text()
    with pytest.raises(ConfigError, match="already exists"):
        init_parties(tmp_path / "c", 4)


def test_provision_gives_options_both_roles_accept(tmp_path):
    options = secure_agg.provision("crypten", tmp_path, 5)
    assert options["crypten-parties"] == 3
    client = secure_agg.get("crypten", "client", options)
    server = secure_agg.get("crypten", "server", options)
    assert client.committee == server.committee
    # The run's generic keys-dir works too (what `flwr run --run-config` can set).
    by_keys_dir = {"keys-dir": options["crypten-parties-dir"]}
    assert secure_agg.get("crypten", "client", by_keys_dir).committee == client.committee


def test_other_backends_work_without_importing_or_even_having_crypten():
    code = (
        "import sys; sys.modules['crypten'] = None\n"  # as if CrypTen were missing or broken
        "import secure_agg\n"
        "agg = secure_agg.get('none', 'client')\n"
        "agg.client_protect([__import__('numpy').ones(2)], 1.0, 1)\n"
        "assert 'crypten' in secure_agg.available()\n"
        "assert 'torch' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=root)
