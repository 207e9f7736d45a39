"""'crypten': additive secret sharing among K compute parties; CrypTen reveals only the sum.

Bank: encode `[weight * update..., weight]` in CrypTen's fixed-point encoding (int64 ring,
scale 2^precision) and split it into K additive shares. Shares 1..K-1 are pseudo-random masks, so
the bank sends their 32-byte seeds instead (expanded with ChaCha20); share 0 is
`x - sum(masks)`. Each share is sealed for its party (`crypten_committee`), so the operator,
which relays them, learns nothing from one payload.
Operator: check each payload's envelope and hand party k the k-th sealed share of every bank
(`crypten_launch` runs the parties, `crypten_party` is one party: CrypTen over torch.distributed).
The parties open and add their shares locally, agree on which banks every party could open, and
reveal ONLY the sum of those banks. The operator learns the weighted sum and the total weight
(weaker than CKKS, where it learns nothing); banks divide one by the other in `client_reveal`.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedfraud.errors import ConfigError, PayloadError
from secure_agg._crypten_compat import INSTALL_HINT, crypten_installed
from secure_agg.base import (
    Aggregate,
    Payload,
    Role,
    StageContext,
    check_weight,
    flatten,
    register,
    unflatten,
)
from secure_agg.crypten_committee import (
    SEAL_OVERHEAD,
    SEED_BYTES,
    Committee,
    expand_mask,
    init_parties,
    load_committee,
    seal,
    share_context,
)
from secure_agg.crypten_launch import LocalCommittee, check_operator_keys
from secure_agg.crypten_party import JOB, RESULT
from secure_agg.crypten_proofs import proof_of, sign_contribution
from secure_agg.masking import load_identity
from secure_agg.roster import BankIdentity, Roster

NAME = "crypten"
DEFAULT_PARTIES = 3
DEFAULT_PRECISION = 20
DEFAULT_TIMEOUT_S = 120.0
# Each encoded value stays below 2^53 (exact in float64); the 10 spare bits of the int64 ring
# let up to 1024 contributions add up without wrapping around.
_VALUE_BITS = 53
MAX_CONTRIBUTIONS = 2 ** (63 - _VALUE_BITS)


@dataclass(frozen=True)
class CryptenSettings:
    """The backend's options (run-config / node-config keys in brackets)."""

    parties_dir: Path  # [crypten-parties-dir, else keys-dir] has parties.json (+ party keys)
    parties: int | None = None  # [crypten-parties] K; if set, parties.json must list K parties
    precision: int = DEFAULT_PRECISION  # [crypten-precision] fixed-point fractional bits
    timeout_s: float = DEFAULT_TIMEOUT_S  # [crypten-timeout] seconds the committee may take
    min_banks: int = 3  # [crypten-min-banks, else min-banks] fewest banks the parties reveal
    # [crypten-simulation] the operator may run every party (and hold every key): simulations
    simulation: bool = False
    party_roster: Path | None = None  # [crypten-party-roster] roster the local parties pin

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> CryptenSettings:
        def number(key: str, default: Any, kind: type) -> Any:
            value = options.get(key, default)
            try:
                return kind(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{key} must be a number, got {value!r}") from None

        # Like the ckks key files: an explicit option first, then the run's generic keys-dir.
        directory = options.get("crypten-parties-dir") or options.get("keys-dir")
        if not directory:
            raise ConfigError(
                "the 'crypten' backend needs crypten-parties-dir (or keys-dir): the folder with "
                "the committee's parties.json; create one with "
                "secure_agg.crypten_mpc.init_parties(DIR, 3)"
            )
        settings = cls(
            parties_dir=Path(str(directory)),
            parties=number("crypten-parties", None, int) if "crypten-parties" in options else None,
            precision=number("crypten-precision", DEFAULT_PRECISION, int),
            timeout_s=number("crypten-timeout", DEFAULT_TIMEOUT_S, float),
            min_banks=number("crypten-min-banks", options.get("min-banks", 3), int),
            simulation=str(options.get("crypten-simulation", "")).lower() in ("1", "true", "yes"),
            party_roster=(
                Path(str(options["crypten-party-roster"]))
                if options.get("crypten-party-roster")
                else None
            ),
        )
        if settings.parties is not None and settings.parties < 2:
            raise ConfigError(
                f"crypten-parties must be at least 2, got {settings.parties}: one party would "
                "hold every update; use 3 (the default)"
            )
        if not 8 <= settings.precision <= 40:
            raise ConfigError(
                f"crypten-precision must be between 8 and 40 bits, got {settings.precision}; "
                f"{DEFAULT_PRECISION} is the default"
            )
        if settings.timeout_s <= 0:
            raise ConfigError(f"crypten-timeout must be positive, got {settings.timeout_s}")
        if settings.min_banks < 3:
            raise ConfigError(
                f"crypten-min-banks must be at least 3 (a sum of two banks reveals each to the "
                f"other), got {settings.min_banks}"
            )
        if not settings.parties_dir.is_dir():
            raise ConfigError(
                f"crypten-parties-dir {settings.parties_dir} does not exist; create the "
                "committee with secure_agg.crypten_mpc.init_parties(DIR, "
                f"{settings.parties or DEFAULT_PARTIES}) or point crypten-parties-dir at it"
            )
        return settings


def encode(vector: np.ndarray, precision: int) -> np.ndarray:
    """CrypTen's fixed-point encoding (int64 = x * 2^precision), rounded to nearest.

    CrypTen's own FixedPointEncoder truncates toward zero; rounding halves the error and
    removes the bias toward zero that truncation would add to every bank's contribution."""
    if not np.all(np.isfinite(vector)):
        raise PayloadError("update holds NaN or infinite values")
    scaled = np.asarray(vector, dtype=np.float64) * float(2**precision)
    if scaled.size and float(np.max(np.abs(scaled))) >= 2.0**_VALUE_BITS:
        largest = float(np.max(np.abs(vector)))
        fits = max(0, int(np.ceil(_VALUE_BITS - np.log2(largest))) - 1)
        raise PayloadError(
            f"weighted update too large for crypten-precision={precision}: |weight*value| "
            f"reaches {largest:.3g}, at most {2.0 ** (_VALUE_BITS - precision):.3g} fits; "
            f"set crypten-precision to {fits} or less"
        )
    return np.rint(scaled).astype(np.int64)


class CryptenAggregator:
    """Bank and operator sides of the 'crypten' backend (see the module docstring)."""

    name = NAME

    def __init__(
        self,
        role: Role,
        settings: CryptenSettings,
        committee: Committee,
        identity: tuple[BankIdentity, Roster] | None = None,
    ):
        self.role = role
        self.settings = settings
        self.committee = committee
        # The operator runs the committee locally (see docs/mpc.md for a deployment where
        # each party runs at its own institution and the operator only relays sealed shares).
        self.parties = None
        if role == "server":
            floor = max(3, settings.min_banks)
            self.parties = LocalCommittee(
                committee, settings.timeout_s, floor, settings.party_roster
            )
        # The bank's roster identity (node-config identity-path + roster-path): contributions
        # are then signed for the stage, and compute parties that pin the roster check them.
        self.identity = identity

    # -- bank ------------------------------------------------------------------------------
    def client_protect(
        self,
        update: Sequence[np.ndarray],
        weight: float,
        round: int,
        *,
        context: StageContext | None = None,
    ) -> Payload:
        w, rnd, p = check_weight(weight), int(round), self.settings.precision
        encoded = encode(np.append(flatten(update) * w, w), p)
        if encoded[-1] <= 0:
            raise PayloadError(f"sample weight {w} is below crypten-precision={p}'s resolution")
        size, cid, fp = int(encoded.size), secrets.token_hex(16), self.committee.fingerprint
        seeds = [secrets.token_bytes(SEED_BYTES) for _ in range(self.committee.size - 1)]
        first = encoded
        for seed in seeds:
            first = first - expand_mask(seed, size)  # int64 arithmetic wraps: the ring Z_2^64
        plain = [first.astype("<i8").tobytes(), *seeds]
        chunks = tuple(
            seal(key, share, share_context(fp, k, rnd, size, p, cid))
            for k, (key, share) in enumerate(zip(self.committee.public_keys, plain, strict=True))
        )
        meta: dict[str, Any] = {
            "committee": fp,
            "parties": self.committee.size,
            "round": rnd,
            "size": size,
            "precision": p,
            "cid": cid,
        }
        if self.identity is not None:
            if context is None:
                raise ConfigError(
                    "this bank signs its CrypTen contributions (identity-path is set) but got "
                    "no stage context (run, round, stage, participants)"
                )
            meta.update(sign_contribution(self.identity[0], context, chunks))
        return Payload(NAME, chunks, meta)

    def client_reveal(
        self,
        aggregate: Payload,
        shapes: Sequence[tuple[int, ...]],
        *,
        context: StageContext | None = None,
    ) -> list[np.ndarray]:
        if aggregate.backend != NAME:
            raise PayloadError(f"payload made by backend '{aggregate.backend}', expected '{NAME}'")
        if aggregate.meta.get("committee") != self.committee.fingerprint:
            raise PayloadError("aggregate was made by another CrypTen committee")
        if len(aggregate.chunks) != 1 or len(aggregate.chunks[0]) != 8 * _int(aggregate, "size"):
            raise PayloadError("CrypTen aggregate must be one chunk of `size` int64 values")
        total = np.frombuffer(aggregate.chunks[0], dtype="<i8").astype(np.float64)
        if total.size < 2 or not total[-1] > 0:
            raise PayloadError("aggregate carries no positive total weight")
        # Both the sum and the total weight carry the scale 2^precision: it cancels here.
        return unflatten(total[:-1] / total[-1], shapes)

    # -- operator --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the compute parties (they also stop when this object or the process goes)."""
        if self.parties is not None:
            self.parties.close()

    def server_aggregate(self, payloads: Mapping[str, Payload]) -> Aggregate:
        rejected: dict[str, str] = {}
        valid: dict[str, Payload] = {}
        for bank, payload in sorted(payloads.items()):
            try:
                self._check_envelope(payload)
            except PayloadError as exc:
                rejected[bank] = str(exc)
            else:
                valid[bank] = payload
        valid = self._one_kind(valid, rejected)
        if len(valid) < self.settings.min_banks:
            raise PayloadError(
                f"only {len(valid)} valid CrypTen payload(s); the committee reveals no sum of "
                f"fewer than crypten-min-banks={self.settings.min_banks} banks"
                + "".join(f"; {b}: {r}" for b, r in rejected.items())
            )
        first = next(iter(valid.values())).meta
        size, rnd = _int_meta(first, "size"), _int_meta(first, "round")
        jobs = []
        for k in range(self.committee.size):
            contributions = [
                [bank, str(p.meta["cid"]), proof_of(p.meta)] for bank, p in valid.items()
            ]
            meta = {
                "committee": self.committee.fingerprint,
                "party": k,
                "round": rnd,
                "size": size,
                "precision": self.settings.precision,
                "min_banks": self.settings.min_banks,
                "contributions": json.dumps(contributions),
            }
            jobs.append(Payload(JOB, tuple(p.chunks[k] for p in valid.values()), meta))
        assert self.parties is not None, "server_aggregate needs the 'server' role"
        results = self.parties.run(jobs)
        if results[0].backend != RESULT or len(results[0].chunks) != 1:
            raise PayloadError("CrypTen compute party 0 returned no aggregate")
        total = results[0].chunks[0]
        if len(total) != 8 * size:
            raise PayloadError(f"CrypTen committee returned {len(total)} bytes for {size} values")
        summed = set(json.loads(str(results[0].meta["summed"])))
        for result in results:
            for bank, why in json.loads(str(result.meta["rejected"])).items():
                rejected.setdefault(bank, str(why))
        for bank in valid:
            if bank not in summed:
                rejected.setdefault(bank, "left out by the compute parties")
        included = tuple(bank for bank in valid if bank in summed)
        meta = {
            "committee": self.committee.fingerprint,
            "size": size,
            "round": rnd,
            "precision": self.settings.precision,
            "count": len(included),
        }
        return Aggregate(Payload(NAME, (total,), meta), included, rejected)

    def _check_envelope(self, payload: Payload) -> None:
        """What the operator can check without opening a share."""
        if payload.backend != NAME:
            raise PayloadError(f"payload made by backend '{payload.backend}', expected '{NAME}'")
        if payload.meta.get("committee") != self.committee.fingerprint:
            raise PayloadError(
                f"payload is for CrypTen committee {payload.meta.get('committee')!r}, this run's "
                f"is {self.committee.fingerprint!r}: the bank needs this run's parties.json"
            )
        k = self.committee.size
        if len(payload.chunks) != k or _int(payload, "parties") != k:
            raise PayloadError(
                f"payload carries {len(payload.chunks)} shares for {payload.meta.get('parties')} "
                f"parties, the committee has {k}"
            )
        if _int(payload, "precision") != self.settings.precision:
            raise PayloadError(
                f"payload uses crypten-precision={payload.meta['precision']}, this run uses "
                f"{self.settings.precision}"
            )
        size, _ = _int(payload, "size"), _int(payload, "round")
        if size < 2:
            raise PayloadError("payload holds no update")
        expected = [8 * size + SEAL_OVERHEAD] + [SEED_BYTES + SEAL_OVERHEAD] * (k - 1)
        for party, (chunk, want) in enumerate(zip(payload.chunks, expected, strict=True)):
            if len(chunk) != want:
                raise PayloadError(
                    f"share for party {party} is {len(chunk)} bytes, expected {want}"
                )
        if not isinstance(payload.meta.get("cid"), str):
            raise PayloadError("payload has no contribution id")

    @staticmethod
    def _one_kind(valid: dict[str, Payload], rejected: dict[str, str]) -> dict[str, Payload]:
        """Keep payloads of the most common (round, size); drop replayed contribution ids."""
        if not valid:
            return valid
        kinds = Counter((_int(p, "round"), _int(p, "size")) for p in valid.values())
        (rnd, size), _ = max(kinds.items(), key=lambda kv: (kv[1], kv[0]))
        seen: set[str] = set()
        kept: dict[str, Payload] = {}
        for bank, p in valid.items():
            if (_int(p, "round"), _int(p, "size")) != (rnd, size):
                rejected[bank] = (
                    f"update is for round {p.meta['round']} with {p.meta['size']} values; the "
                    f"others are for round {rnd} with {size}"
                )
            elif p.meta["cid"] in seen:
                rejected[bank] = "payload repeats another bank's contribution (replayed)"
            elif len(kept) >= MAX_CONTRIBUTIONS:
                rejected[bank] = f"more than {MAX_CONTRIBUTIONS} contributions in one sum"
            else:
                seen.add(str(p.meta["cid"]))
                kept[bank] = p
        return kept


def _int(payload: Payload, key: str) -> int:
    return _int_meta(payload.meta, key)


def _int_meta(meta: Mapping[str, Any], key: str) -> int:
    value = meta.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise PayloadError(f"payload metadata '{key}' is missing or not an integer")
    return value


def provision(directory: Path, num_banks: int) -> dict[str, Any]:
    """Simulation key material: a fresh committee of DEFAULT_PARTIES parties in `directory`."""
    committee = init_parties(Path(directory) / "crypten-parties", DEFAULT_PARTIES)
    return {
        "crypten-parties-dir": str(committee.directory),
        "crypten-parties": committee.size,
        "crypten-simulation": True,
    }


@register(NAME, provision)
def _factory(role: Role, options: Mapping[str, Any]) -> CryptenAggregator:
    settings = CryptenSettings.from_options(options)
    committee = load_committee(settings.parties_dir)
    if settings.parties is not None and committee.size != settings.parties:
        raise ConfigError(
            f"{settings.parties_dir}/parties.json lists {committee.size} parties but "
            f"crypten-parties={settings.parties}; set crypten-parties={committee.size} or "
            "provision a new committee"
        )
    if role == "server":
        check_operator_keys(committee, simulation=settings.simulation)
    if role == "server" and not crypten_installed():
        raise ConfigError(f"the operator runs the CrypTen committee; install it: {INSTALL_HINT}")
    identity = load_identity(options) if role == "client" else None
    return CryptenAggregator(role, settings, committee, identity)


__all__ = ["CryptenAggregator", "CryptenSettings", "encode", "init_parties"]
