"""`fedfraud serve` under bad input (issue 17): strict bodies (422, never 500), the port checked
before "serving at", and bearer-JWT checks on every scoring route (401/403; /health open)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from fedfraud.auth import TokenVerifier
from fedfraud.scoring import Scorer
from fedfraud.serve import create_app
from tests.conftest import assert_one_line_error, run_cli

ISSUER, AUDIENCE, SCOPE = "https://gateway.bank.example", "fedfraud-scoring", "fraud:score"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_file(tmp_path: Path, signing_key) -> Path:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**jwk, "kid": "gw-1", "use": "sig", "alg": "RS256"}]}))
    return path


def token(key, *, kid: str = "gw-1", alg: str = "RS256", **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "iat": now, "scope": SCOPE}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, alg, {"kid": kid})


@pytest.fixture
def scorer(mlp_setup) -> Scorer:
    run, bank, _ = mlp_setup
    return Scorer(run, bank)


@pytest.fixture
def record(mlp_setup) -> dict:
    _, _, new = mlp_setup
    row = new.iloc[0].to_dict()
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k != "is_fraud"}


@pytest.fixture
def open_client(scorer) -> TestClient:
    return TestClient(create_app(scorer, auth=None))


@pytest.fixture
def secured(scorer, jwks_file) -> TestClient:
    verifier = TokenVerifier.from_files(issuer=ISSUER, audience=AUDIENCE, jwks=jwks_file)
    return TestClient(create_app(scorer, auth=verifier))


# --- bodies -----------------------------------------------------------------------------------


def _post_raw(client: TestClient, path: str, body: str):
    # json.dumps writes NaN/Infinity literals, which Python's (and Starlette's) parser accepts.
    return client.post(path, content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("amount", float("nan"), "amount"),
        ("amount", float("inf"), "amount"),
        ("geo_km", float("nan"), "geo_km"),
        ("timestamp", float("-inf"), "timestamp"),
        ("amount", True, "not true/false"),
        ("channel", 99, "channel"),
        ("channel", 2.5, "channel"),
        ("mcc", 12, "mcc"),
        ("amount", 1e300, "amount"),
        ("timestamp", 1e18, "timestamp"),
        ("timestamp", -5, "timestamp"),
        ("device_new", 7, "device_new"),
        ("amount", [1, 2], "amount"),
    ],
)
def test_bad_values_are_422_naming_the_field_and_score_nothing(
    open_client, scorer, record, field, value, fragment
):
    before = scorer.history.size
    response = _post_raw(open_client, "/score", json.dumps({**record, field: value}))
    assert response.status_code == 422, response.text
    assert fragment in response.text
    batch = _post_raw(open_client, "/score/batch", json.dumps([record, {**record, field: value}]))
    assert batch.status_code == 422
    assert scorer.history.size == before


def test_a_good_body_still_scores(open_client, record):
    response = open_client.post("/score", json={**record, "tx_id": "T-1"})
    assert response.status_code == 200 and response.json()["tx_id"] == "T-1"


# --- tokens -----------------------------------------------------------------------------------


def test_health_stays_open_and_a_valid_token_scores(secured, signing_key, record):
    assert secured.get("/health").status_code == 200
    good = {"Authorization": f"Bearer {token(signing_key)}"}
    response = secured.post("/score", json=record, headers=good)
    assert response.status_code == 200, response.text
    assert secured.post("/score/batch", json=[record], headers=good).status_code == 200


@pytest.mark.parametrize(
    "make, status, fragment",
    [
        (lambda k: None, 401, "missing bearer token"),
        (lambda k: "not-a-jwt", 401, "malformed token"),
        (lambda k: token(k, exp=int(time.time()) - 3600), 401, "token expired"),
        (lambda k: token(k, aud="another-service"), 401, "another audience"),
        (lambda k: token(k, iss="https://evil.example"), 401, "another issuer"),
        (lambda k: token(k, exp=None), 401, "exp"),
        (lambda k: token(k, kid="unknown"), 401, "unknown key"),
        (lambda k: token(k, scope="profile email"), 403, "lacks scope fraud:score"),
        (lambda k: token(k, scope=None), 403, "lacks scope"),
        # Signed by another key with the same kid: a forgery.
        (
            lambda k: token(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            401,
            "token rejected",
        ),
        # A shared-secret token: HS256 keyed with the public key (algorithm confusion).
        (lambda k: token("a-secret-anyone-can-guess", alg="HS256"), 401, "not accepted"),
    ],
)
def test_bad_tokens_are_refused_before_the_body_is_read(
    secured, scorer, signing_key, record, make, status, fragment
):
    before = scorer.history.size
    value = make(signing_key)
    headers = {"Authorization": f"Bearer {value}"} if value else {}
    response = secured.post("/score", json=record, headers=headers)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer error=")
    if value is None:  # a broken body without a token is 401 too: nothing is learned
        assert _post_raw(secured, "/score/batch", "not json").status_code == 401
    assert scorer.history.size == before


def test_scp_list_claim_is_accepted(secured, signing_key, record):
    value = token(signing_key, scope=None, scp=["fraud:read", SCOPE])
    response = secured.post("/score", json=record, headers={"Authorization": f"Bearer {value}"})
    assert response.status_code == 200


def test_a_pem_public_key_verifies_es256_tokens(tmp_path, scorer, record):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "gateway.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    verifier = TokenVerifier.from_files(issuer=ISSUER, audience=AUDIENCE, public_key=pem)
    client = TestClient(create_app(scorer, auth=verifier))
    good = token(key, alg="ES256")
    assert client.post(
        "/score", json=record, headers={"Authorization": f"Bearer {good}"}
    ).is_success
    assert client.post("/score", json=record).status_code == 401


# --- the command ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--no-auth", "--port", "70000"], "--port must be 1..65535, got 70000"),
        (["--no-auth", "--port", "0"], "--port must be 1..65535"),
        ([], "--auth-jwks FILE or --auth-public-key PEM"),
        (["--auth-jwks", "jwks.json"], "--auth-issuer and --auth-audience"),
        (
            ["--auth-jwks", "missing.json", "--auth-issuer", ISSUER, "--auth-audience", "a"],
            "--auth-jwks missing.json not found",
        ),
        (["--no-auth", "--auth-issuer", ISSUER], "--no-auth turns token checks off"),
    ],
)
def test_serve_options_are_checked_before_serving(capsys, tmp_path, args, fragment, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    result = run_cli(capsys, "serve", str(tmp_path / "run"), "--data", str(tmp_path), *args)
    assert_one_line_error(result, fragment)
    assert "serving at" not in result[1]


def test_a_busy_port_is_an_error_before_serving_at(tmp_path, mlp_setup):
    run, bank, _ = mlp_setup
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedfraud.cli",
                "serve",
                str(run),
                "--data",
                str(bank),
                "--port",
                str(port),
                "--no-auth",
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "200"},
        )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "serving at" not in proc.stdout
    assert f"port {port} on 127.0.0.1 is already in use" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
