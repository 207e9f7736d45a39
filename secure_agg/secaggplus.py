"""'secagg+': Flower's SecAgg+ (pairwise masks + Shamir-shared seeds), tolerant to dropouts.

SecAgg+ is interactive: one exchange is four rounds of messages (setup, share keys, collect
masked vectors, unmask), so this backend is an `InteractiveAggregator`: the Federation hands
`server_exchange` a whole stats or train stage, which runs Flower's SecAggPlusWorkflow on it
(`secaggplus_workflow`) and returns each bank's reply plus the unmasked SUM. Banks wrap their
train function in `client_mod`: Flower's `secaggplus_mod` on SecAgg+ messages only, with the
stats exchange routed to the stats function (SecAgg+ sends every stage as a 'train' message).

What a bank masks: `[w * update..., w] / W`, Flower's own weighting turned off (num_examples =
max_weight = 1), so the operator learns the weighted sum and the total weight, as with 'none'
and 'crypten'; banks divide one by the other in `client_reveal`. Flower clips each value to
[-c, c] and rounds it stochastically to a grid of T steps (T: the largest power of two with
n * T < the modulus M, so n values cannot wrap around); a bank refuses rather than be clipped.
W is a public bound on every bank's weight. A value sent as is is off by < one step 2c/T per
bank, so the mean by up to n * (2c/T) * W / total_weight: small only if W is near the total.
Where the operator knows no better W (feature statistics, round 1) it uses secagg-max-weight
and banks send every value as two digits (on the grid, and the remainder scaled up), exact to
float64 at twice the size; later rounds use twice the previous total weight and one digit
(two for the weight). `max_error` in the aggregate's meta bounds the error of the mean.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.common import (
    Code,
    FitRes,
    Status,
    ndarrays_to_parameters,
    serde,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat

from fedfraud import round_messages as rm
from fedfraud.errors import ConfigError, PayloadError
from secure_agg import secaggplus_hardening as hardening
from secure_agg.base import (
    Aggregate,
    Exchange,
    Payload,
    Role,
    StageContext,
    check_weight,
    flatten,
    register,
    unflatten,
)
from secure_agg.secaggplus_workflow import Protocol, run_exchange

log = logging.getLogger("fedfraud.secaggplus")
hardening.install_prg()  # 256-bit-seeded masks on both sides (see secaggplus_hardening.py)
NAME = "secagg+"
MAX_MODULUS = 2**32  # Flower documents modulus_range up to 2^32
MAX_QUANTIZATION = 2**30  # Flower rounds through int32
DEFAULT_MAX_WEIGHT = float(2**20)  # a bank's weight (training rows): up to ~1e6
_ENVELOPE = "fitins.config"  # where compat puts FitIns.config in the collect-stage message
_CONTENT, _TYPE, _SCALE, _CLIP, _STEP, _DIGITS = (
    "fedfraud-content",
    "fedfraud-message-type",
    "fedfraud-weight-scale",
    "fedfraud-clipping-range",
    "fedfraud-grid-step",
    "fedfraud-two-digit-tail",
)
ALL = 2**31 - 1  # two digits for every value
STATS_TYPE = f"query.{rm.STATS}"
# A bank's clear vector waits here, in the bank's process, for `client_mod` to take it within
# the same call: it never enters a Flower message, even if the mod were left out.
_PENDING: dict[str, np.ndarray] = {}
_MAX_PENDING = 8


@dataclass(frozen=True)
class SecAggPlusSettings:
    """The backend's options (run-config keys in brackets); 0 means 'derive it'."""

    num_banks: int  # [num-banks]
    num_shares: int = 0  # [secagg-num-shares] 0: every bank of the exchange
    threshold: int = 0  # [secagg-reconstruction-threshold] 0: a majority of the shares
    # [secagg-clipping-range] bound c on |w * param| / W. With W twice the total weight, a
    # bank holding a share f of the rows may send |param| <= 2c / f: >= 8 for c = 4 (Flower's
    # default 8 doubles the error for no use here).
    clipping_range: float = 4.0
    stats_clipping_range: float = 256.0  # [secagg-stats-clipping-range] same, feature moments
    quantization_range: int = 0  # [secagg-quantization-range] 0: largest 2^k, n * 2^k < M
    modulus_range: int = MAX_MODULUS  # [secagg-modulus-range] M, a power of two
    exact: bool = False  # [secagg-exact] two digits for every value in every round (2x bytes)
    max_weight: float = DEFAULT_MAX_WEIGHT  # [secagg-max-weight] public bound W on a weight

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SecAggPlusSettings:
        def number(key: str, default: Any, kind: type) -> Any:
            value = options.get(key, default)
            try:
                out = kind(float(value)) if kind is int else kind(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{key} must be a number, got {value!r}") from None
            if kind is int and out != float(value):
                raise ConfigError(f"{key} must be a whole number, got {value!r}")
            return out

        settings = cls(
            num_banks=number("num-banks", 5, int),
            num_shares=number("secagg-num-shares", 0, int),
            threshold=number("secagg-reconstruction-threshold", 0, int),
            clipping_range=number("secagg-clipping-range", cls.clipping_range, float),
            stats_clipping_range=number(
                "secagg-stats-clipping-range", cls.stats_clipping_range, float
            ),
            quantization_range=number("secagg-quantization-range", 0, int),
            modulus_range=number("secagg-modulus-range", MAX_MODULUS, int),
            exact=_flag(options.get("secagg-exact", False), "secagg-exact"),
            max_weight=number("secagg-max-weight", DEFAULT_MAX_WEIGHT, float),
        )
        settings.check(settings.num_banks)
        return settings

    def shares(self, n: int) -> tuple[int, int]:
        """(num_shares, reconstruction_threshold) for an exchange among n banks."""
        shares = self.num_shares or n
        return shares, self.threshold or shares // 2 + 1

    def quantization(self, n: int) -> int:
        """T: the explicit one, else the largest power of two with n * T < M."""
        if self.quantization_range:
            return self.quantization_range
        return min(MAX_QUANTIZATION, _largest_power_of_two((self.modulus_range - 1) // n))

    def check(self, n: int) -> None:
        """Raise ConfigError (naming the fix) for settings Flower rejects or silently breaks
        on in an exchange among n banks."""
        if n < 3:
            raise ConfigError(
                f"secagg+ needs at least 3 banks, got {n}: with 2, the sum gives each bank the "
                "other's update; add banks or use another backend (ckks)"
            )
        s, t = self.shares(n)
        if self.num_shares and not 3 <= self.num_shares <= n:
            raise ConfigError(
                f"secagg-num-shares={self.num_shares} must be between 3 and the {n} banks of the "
                "round; use 0 (every bank) or an odd number in that range"
            )
        if s % 2 == 0 and s != n:
            raise ConfigError(
                f"secagg-num-shares={s} is even: Flower bumps it to {s + 1} on the operator only, "
                "so banks and operator disagree and every round fails; use an odd number "
                f"({s - 1} or {s + 1}) or 0 (every bank)"
            )
        if self.threshold and not 2 <= self.threshold < s:
            raise ConfigError(
                f"secagg-reconstruction-threshold={self.threshold} must be at least 2 and below "
                f"the {s} shares (at {s} no bank may drop out, and Flower reads 1 as 'all'); "
                f"use {s // 2 + 1} (a majority) or 0"
            )
        m = self.modulus_range
        if m < 2**16 or m > MAX_MODULUS or m & (m - 1):
            raise ConfigError(
                f"secagg-modulus-range={m} must be a power of two between 2^16 and 2^32 "
                "(Flower's range); use 4294967296 (2^32, the default)"
            )
        q = self.quantization(n)
        if not 2**8 <= q <= MAX_QUANTIZATION:
            raise ConfigError(
                f"secagg-quantization-range={q} must be between 256 and 2^30 (Flower rounds "
                "through int32); use 0 to derive it from the modulus"
            )
        if n * q >= m:
            raise ConfigError(
                f"secagg-quantization-range={q} with {n} banks overflows secagg-modulus-range={m}:"
                f" the sum of {n} quantized values wraps around silently; use at most "
                f"{_largest_power_of_two((m - 1) // n)} or 0 (derived)"
            )
        for key, value in (
            ("secagg-clipping-range", self.clipping_range),
            ("secagg-stats-clipping-range", self.stats_clipping_range),
            ("secagg-max-weight", self.max_weight),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{key} must be a positive number, got {value}")


class SecAggPlusAggregator:
    """Bank side: prepare the weighted vector, reveal the mean. Operator side: run exchanges."""

    name = NAME

    def __init__(self, role: Role, settings: SecAggPlusSettings):
        self.role = role
        self.settings = settings

    # -- bank ------------------------------------------------------------------------------
    def client_protect(
        self,
        update: Sequence[np.ndarray],
        weight: float,
        round: int,
        *,
        context: StageContext | None = None,
    ) -> Payload:
        """Hand `[w * update..., w]` to `client_mod`, which scales and masks it; the payload
        itself only names the waiting vector (no values)."""
        w = check_weight(weight)
        vector = np.append(flatten(update) * w, w)
        while len(_PENDING) >= _MAX_PENDING:  # left by calls that never reached the mod
            _PENDING.pop(next(iter(_PENDING)))
        token = secrets.token_hex(16)
        _PENDING[token] = vector
        return Payload(NAME, (), {"size": int(vector.size), "pending": token})

    def client_reveal(
        self,
        aggregate: Payload,
        shapes: Sequence[tuple[int, ...]],
        *,
        context: StageContext | None = None,
    ) -> list[np.ndarray]:
        total = _decode(aggregate)
        return unflatten(total[:-1] / total[-1], shapes)

    # -- operator --------------------------------------------------------------------------
    def server_aggregate(self, payloads: Mapping[str, Payload]) -> Aggregate:
        raise PayloadError("secagg+ aggregates inside its protocol: call server_exchange")

    def server_exchange(
        self,
        grid: Any,
        nodes: Sequence[int],
        message_type: str,
        content: RecordDict,
        timeout: float | None = None,
    ) -> Exchange:
        """Run one SecAgg+ exchange of `content` (a train or stats stage) with `nodes`."""
        n = len(nodes)
        try:
            self.settings.check(n)
        except ConfigError as exc:
            return Exchange(replies=(), aggregate=None, error=str(exc))
        scale, clip, tail = self._scales(message_type, content)
        shares, threshold = self.settings.shares(n)
        protocol = Protocol(
            shares, threshold, clip, self.settings.quantization(n), self.settings.modulus_range
        )
        step = 2 * clip / protocol.quantization_range  # Flower's grid
        envelope = {
            _CONTENT: serde.recorddict_to_proto(content).SerializeToString(),
            _TYPE: message_type,
            _SCALE: scale,
            _CLIP: clip,
            _STEP: step,
            _DIGITS: tail,
        }
        round_ = int(content[rm.CONFIG][rm.ROUND])
        run = run_exchange(grid, nodes, round_, envelope, protocol, timeout)
        if run.mean is None:
            return Exchange(run.replies, None, run.halt_reason, run.protocol_s)
        # Flower divides the sum by the number of vectors (its weights are all 1): undo it.
        n = run.count
        total = _join_digits(run.mean * n, tail, step / clip) * scale
        if not (np.all(np.isfinite(total)) and total[-1] > 0):
            error = "SecAgg+ unmasked no positive total weight"
            return Exchange(run.replies, None, error, run.protocol_s)
        # Per bank, a one-digit value is off by < step, a two-digit one by < step^2 / c; the
        # mean sum / weight carries the error of both (the weight always has two digits).
        fine = step * step / clip
        coarse = fine if tail >= total.size else step
        largest = float(np.max(np.abs(total[:-1]))) / float(total[-1])
        meta = {
            "size": int(total.size),
            "count": n,
            "max_error": n * (coarse + largest * fine) * scale / float(total[-1]),
            "weight_scale": scale,
            **vars(protocol),
        }
        out = Payload(NAME, (total.astype("<f8").tobytes(),), meta)
        return Exchange(run.replies, Aggregate(out, run.banks, {}), None, run.protocol_s)

    def _scales(self, message_type: str, content: RecordDict) -> tuple[float, float, int]:
        """(W, c, how many trailing values go as two digits) for this exchange.

        Where the operator knows no scale for the weights (feature statistics, round 1), W is
        the public bound secagg-max-weight and every value goes as two digits, exact however
        far the weights are below W. Later rounds use twice the previous round's total weight
        (in the GLOBAL aggregate; the margin admits a returning bank) and one digit, except
        for the weight, which every value of the mean is divided by."""
        s = self.settings
        if message_type == STATS_TYPE or rm.SCALER not in content:
            return s.max_weight, s.stats_clipping_range, ALL
        if rm.GLOBAL not in content:
            return s.max_weight, s.clipping_range, ALL
        previous = float(_decode(Payload.from_record(content[rm.GLOBAL]))[-1])
        return min(2.0 * previous, s.max_weight), s.clipping_range, ALL if s.exact else 1


def _split_digits(vector: np.ndarray, tail: int, step: float, clip: float) -> np.ndarray:
    """Send the last `tail` values as two digits: on Flower's grid (quantized exactly) and the
    remainder scaled by c / step (its error shrinks by as much): [v..., grid, remainder]."""
    k = min(tail, vector.size)
    if k == 0:
        return vector
    rest = vector[vector.size - k :]
    on_grid = np.round(rest / step) * step
    return np.concatenate([vector[: vector.size - k], on_grid, (rest - on_grid) * (clip / step)])


def _join_digits(total: np.ndarray, tail: int, unscale: float) -> np.ndarray:
    """Inverse of `_split_digits` on the sum of the banks' vectors."""
    k = min(tail, total.size // 2)
    if k == 0:
        return total
    out = total[: total.size - k].copy()
    out[out.size - k :] += total[total.size - k :] * unscale
    return out


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("1", "true", "yes"):
        return True
    if str(value).strip().lower() in ("0", "false", "no", ""):
        return False
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def _largest_power_of_two(limit: int) -> int:
    return 1 << (max(1, limit).bit_length() - 1)


def _decode(payload: Payload) -> np.ndarray:
    if payload.backend != NAME:
        raise PayloadError(f"payload made by backend '{payload.backend}', expected '{NAME}'")
    if len(payload.chunks) != 1 or len(payload.chunks[0]) != 8 * int(payload.meta.get("size", -1)):
        raise PayloadError("secagg+ payload must be one chunk of `size` float64 values")
    vector = np.frombuffer(payload.chunks[0], dtype="<f8")
    if vector.size < 2 or not np.all(np.isfinite(vector)) or not vector[-1] > 0:
        raise PayloadError("secagg+ payload holds non-finite values or no positive weight")
    return vector


# -- bank side: the mod -------------------------------------------------------------------
Handler = Callable[[Message, Context], Message]


class _Refused(Exception):
    """The bank answers with this error instead of a masked vector."""

    def __init__(self, error: Error):
        super().__init__(error.reason)
        self.error = error


def client_mod(routes: Mapping[str, Handler] | None = None) -> Callable[..., Message]:
    """A mod for the bank's train function: Flower's `secaggplus_mod` on SecAgg+ messages only
    (other messages pass through untouched). `routes` maps the message type an exchange stands
    for (e.g. 'query.stats') to the function answering it; the rest go to the wrapped one."""
    routes = dict(routes or {})

    def mod(msg: Message, context: Context, call_next: Handler) -> Message:
        if RECORD_KEY_CONFIGS not in msg.content.config_records:
            return call_next(msg, context)
        stage = msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE, "?")

        def answer(inner: Message, ctx: Context) -> Message:
            envelope = inner.content.config_records[_ENVELOPE]
            restored = serde.recorddict_from_proto(
                serde.ProtoRecordDict.FromString(bytes(envelope[_CONTENT]))
            )
            for key, record in restored.items():
                inner.content[key] = record
            reply = routes.get(str(envelope[_TYPE]), call_next)(inner, ctx)
            if reply.has_error():
                raise _Refused(reply.error)
            scale, clip, step = (float(envelope[k]) for k in (_SCALE, _CLIP, _STEP))
            return _masking_input(reply, scale, clip, step, int(envelope[_DIGITS]))

        try:
            identity = hardening.before_stage(str(stage), msg, context)
            reply = secaggplus_mod(msg, context, answer)
            hardening.after_stage(str(stage), reply, msg, identity)
            return reply
        except _Refused as refused:
            return Message(refused.error, reply_to=msg)
        except Exception as exc:  # a protocol step failed here: say which, as a bank error
            reason = f"SecAgg+ {stage} stage failed at this bank: {exc}"
            return Message(Error(code=rm.BANK_ERROR_CODE, reason=reason), reply_to=msg)

    return mod


def _masking_input(reply: Message, scale: float, clip: float, step: float, tail: int) -> Message:
    """Turn the bank's reply into what `secaggplus_mod` masks: FitRes([vector / W], 1), its
    last `tail` values as two digits."""
    content = reply.content
    try:
        token = str(Payload.from_record(content.pop(rm.UPDATE)).meta.get("pending"))
    except (KeyError, PayloadError) as exc:
        raise _Refused(Error(rm.BANK_ERROR_CODE, f"no secagg+ update to mask: {exc}")) from exc
    if token not in _PENDING:
        raise _Refused(Error(rm.BANK_ERROR_CODE, "no secagg+ update to mask in this process"))
    vector = _PENDING.pop(token) / scale
    largest = float(np.max(np.abs(vector)))
    if vector[-1] > 1.0 or largest > clip:
        what = "weight / W" if vector[-1] > 1.0 else "|weight * value| / W"
        raise _Refused(
            Error(
                rm.BANK_ERROR_CODE,
                f"secagg+ would clip this bank's update: {what} reaches "
                f"{max(largest, float(vector[-1])):.4g} with W={scale:g} and clipping range "
                f"{clip:g}; raise secagg-max-weight or secagg-clipping-range "
                "(secagg-stats-clipping-range for feature statistics)",
            )
        )
    vector = _split_digits(vector, tail, step, clip)
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([vector]), 1, {})
    for key, record in compat.fitres_to_recorddict(fitres, keep_input=True).items():
        content[key] = record
    return Message(content, reply_to=reply)


def validate(options: Mapping[str, Any]) -> None:
    """Check the options before a run starts (ConfigError naming the fix)."""
    SecAggPlusSettings.from_options(options)


@register(NAME, validate=validate)
def _factory(role: Role, options: Mapping[str, Any]) -> SecAggPlusAggregator:
    return SecAggPlusAggregator(role, SecAggPlusSettings.from_options(options))


__all__ = ["SecAggPlusAggregator", "SecAggPlusSettings", "client_mod", "validate"]
