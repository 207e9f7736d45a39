"""certs/generate.sh makes what flower-superlink, flower-supernode and `flwr supernode register`
load, keeps private keys private, and never replaces existing material unasked."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_ssh_private_key,
    load_ssh_public_key,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "certs" / "generate.sh"


def generate(out: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(out), *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_server_certificate_is_signed_by_the_ca_for_the_requested_names(tmp_path):
    generate(tmp_path, "--banks", "1", "--san", "DNS:fl.consortium.example,IP:10.1.2.3")
    ca, server = load_cert(tmp_path / "ca.crt"), load_cert(tmp_path / "server.pem")
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["fl.consortium.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_bank_keys_are_ec_p384_openssh_pairs_as_flower_expects(tmp_path):
    generate(tmp_path, "--banks", "2")
    for bank in ("bank-00", "bank-01"):
        private = load_ssh_private_key((tmp_path / bank / "node-auth.key").read_bytes(), None)
        public = load_ssh_public_key((tmp_path / bank / "node-auth.pub").read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.name == "secp384r1"
        assert private.public_key().public_numbers() == public.public_numbers()
        assert (tmp_path / bank / "ca.crt").read_bytes() == (tmp_path / "ca.crt").read_bytes()


def test_private_keys_are_readable_by_the_owner_only(tmp_path):
    generate(tmp_path, "--banks", "1")
    for key in ("ca.key", "server.key", "bank-00/node-auth.key"):
        assert (tmp_path / key).stat().st_mode & 0o077 == 0, key


def test_rerun_keeps_the_ca_and_keys_and_adds_only_what_is_asked(tmp_path):
    generate(tmp_path, "--banks", "2")
    before = {
        p: (tmp_path / p).read_bytes() for p in ("ca.crt", "server.pem", "bank-00/node-auth.key")
    }
    generate(tmp_path, "--bank", "bank-05")
    assert all((tmp_path / p).read_bytes() == b for p, b in before.items())
    assert (tmp_path / "bank-05" / "node-auth.pub").exists()
    generate(tmp_path, "--renew-server")
    assert (tmp_path / "ca.crt").read_bytes() == before["ca.crt"]
    assert (tmp_path / "server.pem").read_bytes() != before["server.pem"]
    load_cert(tmp_path / "server.pem").verify_directly_issued_by(load_cert(tmp_path / "ca.crt"))


def test_a_bank_can_make_its_own_key_pair_without_a_ca(tmp_path):
    generate(tmp_path, "--bank", "bank-09", "--bank-keys-only")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank-09", "fingerprints.txt"]


def test_bad_arguments_exit_2_with_one_line(tmp_path):
    done = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(tmp_path), "--banks", "three"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "path", ["certs/generated/ca.key", "certs/generated/bank-00/node-auth.key"]
)
def test_generated_material_is_ignored_by_git(path):
    done = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
    assert done.returncode == 0
