"""Checks the CLI makes before a command does any work, so a mistake is one line (exit 2) and
nothing is left half-made: certificate options, the serving port, backend options, stale data."""

from __future__ import annotations

import errno
import ipaddress
import json
import re
import shutil
import socket
from pathlib import Path

from fedfraud.config import RunConfig
from fedfraud.errors import FedfraudError


def check_cert_args(san: str, days: int, banks: int | None, bank_ids: list[str]) -> None:
    """Refuse bad certificate settings before openssl runs (its errors name no option)."""
    if days < 1 or days > 3650:
        raise FedfraudError(
            f"--days must be 1..3650 (the server certificate's validity), got {days}"
        )
    if banks is not None and banks < 0:
        raise FedfraudError(f"--banks must be 0 or more, got {banks}")
    for bank_id in bank_ids:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", bank_id):
            raise FedfraudError(
                f"--bank {bank_id!r}: a bank id may only hold letters, digits, '.', '_' and '-'"
            )
    entries = [e.strip() for e in san.split(",")]
    for entry in entries:
        kind, sep, value = entry.partition(":")
        kind = kind.strip().upper()
        ok = bool(sep and value.strip())
        if ok and kind == "IP":
            try:
                ipaddress.ip_address(value.strip())
            except ValueError:
                ok = False
        elif ok and kind == "DNS":
            ok = bool(
                re.fullmatch(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", value.strip())
            )
        elif ok:
            ok = kind in ("EMAIL", "URI")
        if not ok:
            raise FedfraudError(
                f"--san {san!r}: entry {entry!r} is not TYPE:VALUE; write e.g. "
                "--san DNS:localhost,IP:127.0.0.1 (types DNS, IP, email, URI)"
            )


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket, or a FedfraudError naming the fix."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise FedfraudError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise FedfraudError(
                f"port {port} on {host} is already in use; stop what listens there or pass "
                "another --port"
            ) from None
        raise FedfraudError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.set_inheritable(True)
    return sock


# Options a user may set per backend (the rest of a backend's keys are provisioned by the run).
BACKEND_OPTIONS: dict[str, tuple[str, ...]] = {
    "none": (),
    "ckks": ("ckks-poly-modulus", "ckks-coeff-mod-bits", "ckks-scale-bits", "ckks-num-params"),
    "secagg+": (
        "secagg-num-shares",
        "secagg-reconstruction-threshold",
        "secagg-clipping-range",
        "secagg-stats-clipping-range",
        "secagg-quantization-range",
        "secagg-modulus-range",
        "secagg-exact",
        "secagg-max-weight",
    ),
    "crypten": ("crypten-parties", "crypten-precision", "crypten-timeout", "crypten-min-banks"),
}


def check_backend_options(backend: str, options: dict[str, str]) -> None:
    """An option the chosen backend does not read would be ignored silently: refuse it."""
    known = BACKEND_OPTIONS.get(backend)
    if known is None:  # an unknown backend: the runner names the choices
        return
    for key in options:
        if key not in known:
            accepted = ", ".join(known) if known else "none"
            raise FedfraudError(
                f"--secure-agg-option {key}: not an option of secure-agg {backend} "
                f"(its options: {accepted})"
            )


def drop_stale_synthetic_data(out: Path, cfg: RunConfig) -> None:
    """--force over a run whose generated data has other settings: generate it afresh, so
    the new run does not read the old consortium."""
    manifest = out / "data" / "manifest.json"
    if cfg.data_format != "synthetic" or cfg.data_dir or not manifest.is_file():
        return
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        meta = {}
    same = (meta.get("num_banks"), meta.get("transactions"), meta.get("seed")) == (
        cfg.num_banks,
        cfg.transactions,
        cfg.seed,
    )
    if meta.get("generator") == "fedfraud.synth" and not same:
        shutil.rmtree(out / "data")
