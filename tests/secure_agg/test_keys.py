"""CKKS key provisioning: files, permissions, loaders and parameter validation."""

from __future__ import annotations

import json
import struct

import pytest

from fedfraud.errors import ConfigError
from secure_agg import keys


@pytest.fixture(scope="module")
def key_paths(tmp_path_factory) -> keys.KeyPaths:
    return keys.init_keys(tmp_path_factory.mktemp("keys"))


def test_init_writes_three_files_with_secret_readable_by_owner_only(key_paths):
    assert key_paths.secret.name == "bank-secret.ckks"
    assert key_paths.public.name == "operator-public.ckks"
    assert key_paths.fingerprint.name == "fingerprint.txt"
    assert key_paths.secret.stat().st_mode & 0o777 == 0o600
    assert key_paths.public.stat().st_mode & 0o077 != 0o077  # public, but not world-writable


def test_secret_and_public_contexts_round_trip_with_one_fingerprint(key_paths):
    secret = keys.load_secret_context(key_paths.secret)
    public = keys.load_public_context(key_paths.public)
    assert secret.is_secret and not public.is_secret
    assert secret.key_id == public.key_id
    assert secret.fingerprint == public.fingerprint == key_paths.fingerprint.read_text().strip()
    assert secret.params == public.params == keys.CKKSParams()
    assert keys.layout(public.context) == keys.layout(secret.context)


def test_public_context_holds_no_key_material(key_paths):
    public = keys.load_public_context(key_paths.public).context
    assert not public.is_private()
    assert not public.has_relin_keys() and not public.has_galois_keys()
    assert key_paths.public.stat().st_size < 4096  # parameters only


def test_operator_refuses_a_secret_context(key_paths):
    with pytest.raises(ConfigError, match="SECRET key; refusing"):
        keys.load_public_context(key_paths.secret)


def test_bank_refuses_a_public_context(key_paths):
    with pytest.raises(ConfigError, match="no secret key"):
        keys.load_secret_context(key_paths.public)


def test_missing_file_says_how_to_make_keys(tmp_path):
    with pytest.raises(ConfigError, match="not found.*fedfraud keys init --out DIR"):
        keys.load_secret_context(tmp_path / "bank-secret.ckks")


def test_wrong_kind_of_file_is_refused(key_paths, tmp_path):
    with pytest.raises(ConfigError, match="not a fedfraud CKKS key file"):
        keys.load_public_context(key_paths.fingerprint)
    truncated = tmp_path / "truncated.ckks"
    truncated.write_bytes(key_paths.public.read_bytes()[:-40])
    with pytest.raises(ConfigError, match="corrupt"):
        keys.load_public_context(truncated)


def test_edited_header_is_detected(key_paths, tmp_path):
    blob = key_paths.public.read_bytes()
    start = len(b"FFCKKS1\n") + 4
    (hlen,) = struct.unpack_from("<I", blob, start - 4)
    header = json.loads(blob[start : start + hlen])
    header["key_id"] = "00" * 16
    new = json.dumps(header).encode()
    edited = tmp_path / "edited.ckks"
    edited.write_bytes(blob[: start - 4] + struct.pack("<I", len(new)) + new + blob[start + hlen :])
    with pytest.raises(ConfigError, match="does not match its own header"):
        keys.load_public_context(edited)


def test_init_refuses_to_overwrite_unless_asked(tmp_path):
    first = keys.init_keys(tmp_path)
    fp = first.fingerprint.read_text()
    with pytest.raises(ConfigError, match="already exists"):
        keys.init_keys(tmp_path)
    second = keys.init_keys(tmp_path, overwrite=True)
    assert second.fingerprint.read_text() != fp
    assert second.secret.stat().st_mode & 0o777 == 0o600


def test_init_accepts_explicit_parameters(tmp_path):
    paths = keys.init_keys(tmp_path, poly_modulus=8192, coeff_mod_bits=(60, 40), scale_bits=40)
    lay = keys.layout(keys.load_public_context(paths.public).context)
    assert (lay.poly_modulus, lay.data_bits, lay.scale_bits) == (8192, 60, 40)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ckks-coeff-mod-bits": "60,50"}, "128-bit security limit of 109 bits"),
        ({"ckks-poly-modulus": 8192, "ckks-coeff-mod-bits": "60,60,60,60"}, "limit of 218"),
        ({"ckks-poly-modulus": 2048}, "must be one of 4096"),
        ({"ckks-coeff-mod-bits": "60"}, "at least two primes"),
        ({"ckks-coeff-mod-bits": "61,30"}, "20 to 60 bits"),
        ({"ckks-coeff-mod-bits": "56;30"}, "comma-separated"),
        ({"ckks-scale-bits": 16}, "at least 20"),
        ({"ckks-scale-bits": 50}, "headroom.*at most 42"),
        ({"ckks-poly-modulus": "big"}, "must be an integer"),
    ],
)
def test_insecure_or_unusable_parameters_are_rejected(options, message):
    with pytest.raises(ConfigError, match=message):
        keys.CKKSParams.from_options(options)


def test_options_parse_comma_separated_bits():
    params = keys.CKKSParams.from_options({"ckks-coeff-mod-bits": "54, 30", "ckks-scale-bits": 34})
    assert params.coeff_mod_bits == (54, 30) and params.scale_bits == 34


def test_role_options_resolve_key_files(key_paths, tmp_path):
    by_dir = keys.keys_for_role("server", {"keys-dir": str(key_paths.public.parent)})
    by_path = keys.keys_for_role(
        "client", {"ckks-secret-context": str(key_paths.secret), "keys-dir": str(tmp_path)}
    )
    assert by_dir.fingerprint == by_path.fingerprint


@pytest.mark.parametrize(
    ("role", "option"), [("client", "ckks-secret-context"), ("server", "ckks-public-context")]
)
def test_missing_options_name_the_option_to_set(role, option):
    with pytest.raises(ConfigError, match=f"set '{option}'.*'keys-dir'.*fedfraud keys init"):
        keys.keys_for_role(role, {})


def test_options_disagreeing_with_the_key_file_are_refused(key_paths):
    options = {"keys-dir": str(key_paths.public.parent), "ckks-poly-modulus": 8192}
    with pytest.raises(ConfigError, match="was made with"):
        keys.keys_for_role("server", options)
