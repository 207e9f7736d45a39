"""CKKS key provisioning: the banks' shared secret context, the operator's public context.

`init_keys` writes three files into one folder:
- `bank-secret.ckks`: the secret context every bank holds (mode 0600; never leaves the banks);
- `operator-public.ckks`: the same parameters without any key material, for the operator;
- `fingerprint.txt`: the SHA-256 fingerprint both files carry, to compare out of band.

A key file is explicit, never pickled: magic bytes, a length-prefixed JSON header (kind, key id,
fingerprint, parameters) and TenSEAL's own serialization. Banks encrypt with the *symmetric*
secret key (about 2.5x faster than public-key encryption at the same ciphertext size), so the
operator's context holds parameters only: no public, relinearization or Galois keys. The operator
therefore cannot encrypt values of its choosing, only add what banks sent. Because parameters
alone do not tell two key sets apart, each key set gets a random key id, and the fingerprint is
SHA-256 over the key id and the public context bytes.
"""

from __future__ import annotations

import json
import logging
import secrets
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any, Literal

import tenseal as ts

from fedfraud.errors import ConfigError
from fedfraud.io import atomic_write

log = logging.getLogger(__name__)

SECRET_FILE = "bank-secret.ckks"
PUBLIC_FILE = "operator-public.ckks"
FINGERPRINT_FILE = "fingerprint.txt"
INIT_HINT = "create keys with `fedfraud keys init --out DIR`"

_MAGIC = b"FFCKKS1\n"
_FINGERPRINT_DOMAIN = b"fedfraud-ckks-public-context-v1\0"

# HomomorphicEncryption.org standard, 128-bit classical security, ternary secret: the largest
# total coefficient modulus (bits) per polynomial degree. SEAL enforces the same table.
MAX_MODULUS_BITS_128 = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
MIN_SCALE_BITS = 20  # below this the fresh-encryption noise (~2^9 / scale) exceeds 1e-3
MIN_HEADROOM_BITS = 12  # values above the scale: see CKKSParams.headroom_bits

# TenSEAL's thread pool only parallelises tensor operations; encrypting, adding and decrypting
# ckks_vectors gained nothing from 2 threads (benchmarks/ckks_params.py), and simulated banks
# share the cores, so each context gets one thread.
N_THREADS = 1

Kind = Literal["secret", "public"]


@dataclass(frozen=True)
class CKKSParams:
    """CKKS encryption parameters, validated for 128-bit security and for aggregation."""

    # Defaults chosen by benchmarks/ckks_params.py (see docs/threat-model.md): the smallest
    # upload that keeps 128-bit security and <= 1e-5 error on the weighted mean.
    poly_modulus: int = 4096
    coeff_mod_bits: tuple[int, ...] = (56, 30)
    scale_bits: int = 36

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeff_mod_bits", tuple(int(b) for b in self.coeff_mod_bits))
        n, bits = self.poly_modulus, self.coeff_mod_bits
        if n not in MAX_MODULUS_BITS_128:
            raise ConfigError(
                f"ckks-poly-modulus must be one of {', '.join(map(str, MAX_MODULUS_BITS_128))}, "
                f"got {n}"
            )
        if len(bits) < 2:
            raise ConfigError(
                "ckks-coeff-mod-bits needs at least two primes (data primes, then the special "
                f"prime SEAL requires), e.g. '56,30'; got {','.join(map(str, bits)) or 'none'}"
            )
        if any(not 20 <= b <= 60 for b in bits):
            raise ConfigError(
                f"every prime in ckks-coeff-mod-bits must have 20 to 60 bits (SEAL's limit), "
                f"got {','.join(map(str, bits))}"
            )
        limit = MAX_MODULUS_BITS_128[n]
        if sum(bits) > limit:
            raise ConfigError(
                f"ckks-coeff-mod-bits {','.join(map(str, bits))} totals {sum(bits)} bits, above "
                f"the 128-bit security limit of {limit} bits for ckks-poly-modulus={n} "
                "(HomomorphicEncryption.org standard); use fewer bits or a larger poly modulus"
            )
        if self.scale_bits < MIN_SCALE_BITS:
            raise ConfigError(
                f"ckks-scale-bits must be at least {MIN_SCALE_BITS} (precision), "
                f"got {self.scale_bits}"
            )
        if self.headroom_bits < MIN_HEADROOM_BITS:
            raise ConfigError(
                f"ckks-scale-bits={self.scale_bits} leaves {self.headroom_bits} bits of headroom "
                f"in the {self.data_bits}-bit data modulus; at least {MIN_HEADROOM_BITS} are "
                f"needed, so ckks-scale-bits must be at most "
                f"{self.data_bits - 2 - MIN_HEADROOM_BITS}"
            )

    @property
    def data_bits(self) -> int:
        """Bits of the modulus ciphertexts live under (every prime but the special one)."""
        return sum(self.coeff_mod_bits[:-1])

    @property
    def headroom_bits(self) -> int:
        """h such that any slot value |x| < 2^h decrypts correctly (q >= 2^(data_bits-1))."""
        return self.data_bits - 2 - self.scale_bits

    @property
    def slots(self) -> int:
        return self.poly_modulus // 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "poly_modulus": self.poly_modulus,
            "coeff_mod_bits": list(self.coeff_mod_bits),
            "scale_bits": self.scale_bits,
        }

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> CKKSParams:
        """Read `ckks-poly-modulus`, `ckks-coeff-mod-bits` ("56,30") and `ckks-scale-bits`."""
        default = cls()
        return cls(
            poly_modulus=_int_option(options, "ckks-poly-modulus", default.poly_modulus),
            coeff_mod_bits=_bits_option(options, default.coeff_mod_bits),
            scale_bits=_int_option(options, "ckks-scale-bits", default.scale_bits),
        )

    @staticmethod
    def given_in(options: Mapping[str, Any]) -> bool:
        return any(
            k in options for k in ("ckks-poly-modulus", "ckks-coeff-mod-bits", "ckks-scale-bits")
        )


@dataclass(frozen=True)
class KeyPaths:
    """Where `init_keys` wrote the key set."""

    secret: Path
    public: Path
    fingerprint: Path


@dataclass(frozen=True)
class CKKSKeys:
    """A loaded TenSEAL context with its parameters and identity."""

    context: ts.Context
    params: CKKSParams
    key_id: str
    fingerprint: str

    @property
    def is_secret(self) -> bool:
        return bool(self.context.is_private())


def generate_keys(params: CKKSParams | None = None) -> CKKSKeys:
    """A fresh secret key set (symmetric CKKS context without relinearization/Galois keys)."""
    params = params or CKKSParams()
    try:
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=params.poly_modulus,
            coeff_mod_bit_sizes=list(params.coeff_mod_bits),
            encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
            n_threads=N_THREADS,
        )
    except (ValueError, RuntimeError) as exc:  # e.g. no NTT-friendly prime of that size
        raise ConfigError(f"TenSEAL rejects CKKS parameters {params.to_dict()}: {exc}") from exc
    ctx.global_scale = float(2**params.scale_bits)
    # TenSEAL makes relinearization keys on creation; aggregation is additions only, so drop them.
    ctx = ts.context_from(_serialize(ctx, secret=True), n_threads=N_THREADS)
    key_id = secrets.token_hex(16)
    return CKKSKeys(ctx, params, key_id, fingerprint(ctx, key_id))


def public_keys(keys: CKKSKeys) -> CKKSKeys:
    """The operator's view of a key set: same parameters and identity, no key material."""
    ctx = ts.context_from(_serialize(keys.context, secret=False), n_threads=N_THREADS)
    return CKKSKeys(ctx, keys.params, keys.key_id, keys.fingerprint)


def fingerprint(context: ts.Context, key_id: str) -> str:
    """SHA-256 over the key id and the public context bytes; equal for a bank and the operator."""
    return sha256(
        _FINGERPRINT_DOMAIN + bytes.fromhex(key_id) + _serialize(context, False)
    ).hexdigest()


def init_keys(
    out_dir: Path,
    *,
    poly_modulus: int = CKKSParams.poly_modulus,
    coeff_mod_bits: Sequence[int] = CKKSParams.coeff_mod_bits,
    scale_bits: int = CKKSParams.scale_bits,
    overwrite: bool = False,
) -> KeyPaths:
    """Write a new key set into `out_dir`; refuses to overwrite one unless `overwrite`."""
    params = CKKSParams(poly_modulus, tuple(coeff_mod_bits), scale_bits)
    out_dir = Path(out_dir)
    paths = KeyPaths(out_dir / SECRET_FILE, out_dir / PUBLIC_FILE, out_dir / FINGERPRINT_FILE)
    if not overwrite:
        existing = [p for p in (paths.secret, paths.public) if p.exists()]
        if existing:
            raise ConfigError(
                f"{existing[0]} already exists; choose another --out folder or pass --force to "
                "replace it (banks must then all receive the new secret context)"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = generate_keys(params)
    _write(paths.secret, _encode("secret", keys, _serialize(keys.context, True)), mode=0o600)
    _write(paths.public, _encode("public", keys, _serialize(keys.context, False)), mode=0o644)
    _write(paths.fingerprint, (keys.fingerprint + "\n").encode(), mode=0o644)
    log.info("CKKS keys %s written to %s (fingerprint %s)", keys.key_id, out_dir, keys.fingerprint)
    return paths


def load_secret_context(path: Path) -> CKKSKeys:
    """The banks' secret context; refuses a public context (it cannot decrypt)."""
    keys, kind = _load(Path(path))
    if kind != "secret" or not keys.is_secret:
        raise ConfigError(
            f"{path} is the operator's public context and holds no secret key; a bank needs "
            f"{SECRET_FILE} from the same `fedfraud keys init`"
        )
    mode = Path(path).stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s is readable by other users (mode %o); run: chmod 600 %s", path, mode, path)
    return keys


def load_public_context(path: Path) -> CKKSKeys:
    """The operator's public context; refuses any file holding a secret key."""
    keys, kind = _load(Path(path))
    if kind != "public" or keys.is_secret:
        raise ConfigError(
            f"{path} holds the banks' SECRET key; refusing to load it on the operator side. "
            f"Give the operator only {PUBLIC_FILE}, and treat this key set as exposed if the "
            "operator already has the secret file (re-run `fedfraud keys init`)"
        )
    return keys


def _load(path: Path) -> tuple[CKKSKeys, Kind]:
    if not path.is_file():
        raise ConfigError(f"CKKS key file {path} not found; {INIT_HINT}")
    blob = path.read_bytes()
    if not blob.startswith(_MAGIC):
        raise ConfigError(f"{path} is not a fedfraud CKKS key file (bad magic bytes); {INIT_HINT}")
    try:
        (hlen,) = struct.unpack_from("<I", blob, len(_MAGIC))
        start = len(_MAGIC) + 4
        header = json.loads(blob[start : start + hlen])
        kind = header["kind"]
        params = CKKSParams(**header["params"])
        key_id = str(header["key_id"])
        bytes.fromhex(key_id)
        ctx = ts.context_from(blob[start + hlen :], n_threads=N_THREADS)
    except ConfigError:
        raise
    except (struct.error, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"CKKS key file {path} is corrupt ({exc}); {INIT_HINT}") from exc
    if kind not in ("secret", "public"):
        raise ConfigError(f"CKKS key file {path} has unknown kind {kind!r}; {INIT_HINT}")
    keys = CKKSKeys(ctx, params, key_id, fingerprint(ctx, key_id))
    if keys.fingerprint != header.get("fingerprint") or not _matches(layout(ctx), params):
        raise ConfigError(f"CKKS key file {path} does not match its own header; {INIT_HINT}")
    return keys, kind


@dataclass(frozen=True)
class Layout:
    """What a loaded context actually is, read from SEAL (never from a file header)."""

    poly_modulus: int
    data_bits: int  # bit length of the modulus fresh ciphertexts live under
    data_primes: int
    scale_bits: int

    @property
    def slots(self) -> int:
        return self.poly_modulus // 2

    @property
    def headroom_bits(self) -> int:
        """h such that any slot |x| < 2^h decrypts correctly: q >= 2^(data_bits-1) > 2 x scale."""
        return self.data_bits - 2 - self.scale_bits


def layout(context: ts.Context) -> Layout:
    """The parameters a context really carries."""
    first = context.seal_context().data.first_context_data()
    return Layout(
        poly_modulus=first.parms().poly_modulus_degree(),
        data_bits=first.total_coeff_modulus_bit_count(),
        data_primes=first.chain_index() + 1,
        scale_bits=int(round(context.global_scale)).bit_length() - 1,
    )


def _matches(lay: Layout, params: CKKSParams) -> bool:
    # The bit length of a product of k primes is between sum(bits) - (k - 1) and sum(bits).
    k = len(params.coeff_mod_bits) - 1
    return (
        lay.poly_modulus == params.poly_modulus
        and lay.scale_bits == params.scale_bits
        and lay.data_primes == k
        and params.data_bits - (k - 1) <= lay.data_bits <= params.data_bits
    )


def keys_for_role(role: str, options: Mapping[str, Any]) -> CKKSKeys:
    """Resolve a backend's key file from options: explicit path first, then `keys-dir`."""
    option = "ckks-secret-context" if role == "client" else "ckks-public-context"
    filename = SECRET_FILE if role == "client" else PUBLIC_FILE
    if options.get(option):
        path = Path(str(options[option]))
    elif options.get("keys-dir"):
        path = Path(str(options["keys-dir"])) / filename
    else:
        who = "each bank" if role == "client" else "the operator"
        raise ConfigError(
            f"secure-agg 'ckks' needs {who}'s key file: set '{option}' to {filename} or "
            f"'keys-dir' to the folder holding it; {INIT_HINT}"
        )
    keys = load_secret_context(path) if role == "client" else load_public_context(path)
    if CKKSParams.given_in(options):
        wanted = CKKSParams.from_options(options)
        if wanted != keys.params:
            raise ConfigError(
                f"CKKS options ask for {wanted.to_dict()} but {path} was made with "
                f"{keys.params.to_dict()}; drop the ckks-* options or re-run "
                "`fedfraud keys init` with them"
            )
    return keys


def _serialize(context: ts.Context, secret: bool) -> bytes:
    return context.serialize(
        save_public_key=False,
        save_secret_key=secret,
        save_galois_keys=False,
        save_relin_keys=False,
    )


def _encode(kind: Kind, keys: CKKSKeys, body: bytes) -> bytes:
    header = json.dumps(
        {
            "format": 1,
            "kind": kind,
            "key_id": keys.key_id,
            "fingerprint": keys.fingerprint,
            "params": keys.params.to_dict(),
        },
        sort_keys=True,
    ).encode()
    return _MAGIC + struct.pack("<I", len(header)) + header + body


def _write(path: Path, data: bytes, mode: int) -> None:
    # The temporary file has its final mode from the start: a secret is never world-readable.
    atomic_write(path, data, mode=mode)


def _int_option(options: Mapping[str, Any], name: str, default: int) -> int:
    value = options.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from exc


def _bits_option(options: Mapping[str, Any], default: tuple[int, ...]) -> tuple[int, ...]:
    value = options.get("ckks-coeff-mod-bits", default)
    parts = value.split(",") if isinstance(value, str) else value
    try:
        return tuple(int(str(p).strip()) for p in parts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"ckks-coeff-mod-bits must be comma-separated prime sizes like '56,30', got {value!r}"
        ) from exc
