"""'secagg+': Flower's SecAgg+ (pairwise masks + Shamir-shared seeds), tolerant to dropouts.

SecAgg+ is interactive: one exchange is four rounds of messages (setup, share keys, collect
masked vectors, unmask), so this backend is an `InteractiveAggregator`. The operator's
Federation hands it the stage's content and nodes; `server_exchange` runs Flower's
`SecAggPlusWorkflow` on them (with a one-exchange legacy Strategy) and returns the banks'
replies plus the unmasked SUM. Banks wrap their train function in `client_mod`, which applies
Flower's `secaggplus_mod` to SecAgg+ messages only and sends the stats exchange to the stats
function (SecAgg+ runs every exchange as Flower 'train' messages).

What a bank masks: `[w * update..., w] / W`, with Flower's own weighting turned off
(num_examples = max_weight = 1), so the operator gets the sum of weighted updates and the total
weight, as with 'none' and 'crypten'; banks divide one by the other in `client_reveal`.
Flower clips every value to [-c, c] and rounds it stochastically to a grid of T steps; a
bank refuses (rather than be clipped) when |w * value| / W exceeds c. The public scale W
bounds every bank's weight: `secagg-stats-max-weight` (2^20 rows) for the feature statistics,
then the power of two at or above the consortium's total training rows learned there. Each
bank's error is below one step 2c/T, so the weighted mean is off by at most
n * (2c/T) * W / total_weight (`max_error` in the aggregate's meta). T is the largest power of
two with n * T < M (the modulus), so n quantized values cannot wrap around mod M.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
    serde,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey

from fedfraud import round_messages as rm
from fedfraud.errors import ConfigError, PayloadError
from secure_agg.base import (
    Aggregate,
    Exchange,
    Payload,
    Role,
    check_weight,
    flatten,
    register,
    unflatten,
)

log = logging.getLogger("fedfraud.secaggplus")
NAME = "secagg+"
MAX_MODULUS = 2**32  # Flower documents modulus_range up to 2^32
MAX_QUANTIZATION = 2**30  # Flower rounds through int32
DEFAULT_STATS_MAX_WEIGHT = float(2**20)  # training rows of the largest bank, ~1e6
_ENVELOPE = "fitins.config"  # where compat puts FitIns.config in the collect-stage message
_CONTENT, _TYPE, _SCALE, _CLIP, _SPLIT = (
    "fedfraud-content",
    "fedfraud-message-type",
    "fedfraud-weight-scale",
    "fedfraud-clipping-range",
    "fedfraud-split-step",
)
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
    clipping_range: float = 8.0  # [secagg-clipping-range] bound c on |w * param| / W
    stats_clipping_range: float = 256.0  # [secagg-stats-clipping-range] same, feature moments
    quantization_range: int = 0  # [secagg-quantization-range] 0: largest 2^k, n * 2^k < M
    modulus_range: int = MAX_MODULUS  # [secagg-modulus-range] M, a power of two
    max_weight: float = 0.0  # [secagg-max-weight] W of training rounds; 0: 2^k >= total rows
    stats_max_weight: float = DEFAULT_STATS_MAX_WEIGHT  # [secagg-stats-max-weight]

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
            max_weight=number("secagg-max-weight", 0.0, float),
            stats_max_weight=number("secagg-stats-max-weight", DEFAULT_STATS_MAX_WEIGHT, float),
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
            ("secagg-stats-max-weight", self.stats_max_weight),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{key} must be a positive number, got {value}")
        if not (math.isfinite(self.max_weight) and self.max_weight >= 0):
            raise ConfigError(f"secagg-max-weight must be >= 0 (0: derived), got {self.max_weight}")


class SecAggPlusAggregator:
    """Bank side: prepare the weighted vector, reveal the mean. Operator side: run exchanges."""

    name = NAME

    def __init__(self, role: Role, settings: SecAggPlusSettings):
        self.role = role
        self.settings = settings

    # -- bank ------------------------------------------------------------------------------
    def client_protect(self, update: Sequence[np.ndarray], weight: float, round: int) -> Payload:
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
        self, aggregate: Payload, shapes: Sequence[tuple[int, ...]]
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
        round_ = int(content[rm.CONFIG][rm.ROUND])
        scale, clip, split = self._scales(message_type, content)
        shares, threshold = self.settings.shares(n)
        quantization = self.settings.quantization(n)
        step = 2 * clip / quantization  # Flower's grid
        envelope = {
            _CONTENT: serde.recorddict_to_proto(content).SerializeToString(),
            _TYPE: message_type,
            _SCALE: scale,
            _CLIP: clip,
            _SPLIT: step if split else 0.0,
        }
        run_id = grid.run.run_id
        proxies = [GridClientProxy(node_id=node, grid=grid, run_id=run_id) for node in nodes]
        strategy = _OneExchange(proxies, FitIns(Parameters(tensors=[], tensor_type=""), envelope))
        context = LegacyContext(
            Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}),
            config=ServerConfig(num_rounds=1),
            strategy=strategy,
        )
        context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {WorkflowKey.CURRENT_ROUND: round_}
        )
        context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
        workflow = _Workflow(
            shares,
            threshold,
            max_weight=1.0,  # banks weight their vectors themselves (num_examples = 1)
            clipping_range=clip,
            quantization_range=quantization,
            modulus_range=self.settings.modulus_range,
            timeout=timeout,
        )
        recorder = _RecordingGrid(grid)
        start = time.perf_counter()
        workflow(recorder, context)
        elapsed = time.perf_counter() - start
        replies = recorder.final_replies()
        info = {
            "weight_scale": scale,
            "clipping_range": clip,
            "quantization_range": quantization,
            "modulus_range": self.settings.modulus_range,
            "num_shares": shares,
            "threshold": threshold,
        }
        # The operator's own cost: everything but the stage in which banks train.
        protocol_s = elapsed - recorder.seconds.get("collect_masked_vectors", 0.0)
        if strategy.mean is None:
            return Exchange(replies, None, recorder.halt_reason(threshold), protocol_s)
        banks = recorder.banks()
        included = tuple(banks[node] for node in strategy.included if node in banks)
        # Flower divides the sum by the number of vectors (its weights are all 1): undo it.
        total = strategy.mean * len(strategy.included)
        if split:  # [on-grid part, remainder * c / step], see _masking_input
            half = total.size // 2
            total = total[:half] + total[half:] * (step / clip)
        total = total * scale
        if not (np.all(np.isfinite(total)) and total[-1] > 0):
            return Exchange(replies, None, "SecAgg+ unmasked no positive total weight", protocol_s)
        error_per_bank = step * step / clip if split else step
        meta = {
            "size": int(total.size),
            "count": len(included),
            "max_error": len(included) * error_per_bank * scale / float(total[-1]),
            **info,
        }
        out = Payload(NAME, (total.astype("<f8").tobytes(),), meta)
        return Exchange(replies, Aggregate(out, included, {}), None, protocol_s)

    def _scales(self, message_type: str, content: RecordDict) -> tuple[float, float, bool]:
        """(W, c, split) of this exchange. Feature statistics: the stats bound, split into two
        digits (a few dozen values, and any error there shifts every bank's inputs). Training:
        the bound derived from the total rows in the stats aggregate that rounds carry."""
        s = self.settings
        if message_type == STATS_TYPE or rm.SCALER not in content:
            return s.stats_max_weight, s.stats_clipping_range, True
        if s.max_weight:
            return s.max_weight, s.clipping_range, False
        total_rows = float(_decode(Payload.from_record(content[rm.SCALER]))[-1])
        return float(2 ** math.ceil(math.log2(max(total_rows, 1.0)))), s.clipping_range, False


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


class _Workflow(SecAggPlusWorkflow):
    """Flower 1.42 keeps banks lost before the masked-vector stage among the 'sampled' ones,
    so its unmask stage asks the others for key shares such a bank never sent, and every bank
    fails there. Those banks added no mask to any vector: leave them out, as SecAgg does."""

    def setup_stage(self, grid, context, state) -> bool:  # noqa: ANN001
        ok = super().setup_stage(grid, context, state)
        state.sampled_node_ids = set(state.active_node_ids)
        return ok

    def share_keys_stage(self, grid, context, state) -> bool:  # noqa: ANN001
        ok = super().share_keys_stage(grid, context, state)
        state.sampled_node_ids = set(state.active_node_ids)
        return ok


class _OneExchange(Strategy):
    """The legacy Strategy SecAggPlusWorkflow drives: fixed nodes, one FitIns, keep the mean."""

    def __init__(self, proxies: list[GridClientProxy], fitins: FitIns):
        self.proxies, self.fitins = proxies, fitins
        self.mean: np.ndarray | None = None
        self.included: list[int] = []

    def initialize_parameters(self, client_manager):  # noqa: ANN001, ANN201
        return None

    def configure_fit(self, server_round, parameters, client_manager):  # noqa: ANN001, ANN201
        return [(proxy, self.fitins) for proxy in self.proxies]

    def aggregate_fit(self, server_round, results, failures):  # noqa: ANN001, ANN201
        if results:
            self.mean = np.asarray(parameters_to_ndarrays(results[0][1].parameters)[0], "f8")
            self.included = [proxy.node_id for proxy, _ in results]
        return None, {}

    def configure_evaluate(self, server_round, parameters, client_manager):  # noqa: ANN001, ANN201
        return []

    def aggregate_evaluate(self, server_round, results, failures):  # noqa: ANN001, ANN201
        return None, {}

    def evaluate(self, server_round, parameters):  # noqa: ANN001, ANN201
        return None


class _RecordingGrid:
    """Passes the workflow's messages to the real grid and keeps what each bank answered."""

    def __init__(self, grid: Any):
        self._grid = grid
        self.stages: list[tuple[str, list[Message], list[Message]]] = []
        self.seconds: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        sent = list(messages)
        stage = str(sent[0].content.config_records[RECORD_KEY_CONFIGS][Key.STAGE]) if sent else ""
        start = time.perf_counter()
        received = list(self._grid.send_and_receive(sent, timeout=timeout))
        self.seconds[stage] = time.perf_counter() - start
        self.stages.append((stage, sent, received))
        return received

    def banks(self) -> dict[int, str]:
        """node -> bank id, from the masked-vector replies."""
        return {
            m.metadata.src_node_id: str(m.content[rm.BANK][rm.BANK_ID])
            for stage, _, received in self.stages
            if stage == "collect_masked_vectors"
            for m in received
            if not m.has_error() and rm.BANK in m.content
        }

    def final_replies(self) -> list[Message]:
        """One reply per bank, as a plain broadcast gives: its masked-vector reply with UPDATE
        = every protocol byte it sent, or the error that made it drop out before that."""
        sent_bytes: dict[int, list[bytes]] = {}
        final: dict[int, Message] = {}
        for stage, _, received in self.stages:
            for msg in received:
                node = msg.metadata.src_node_id
                if msg.has_error():
                    # After its masked vector is in, a bank stays in the sum whatever happens.
                    final.setdefault(node, msg)
                    if not final[node].has_error():
                        log.warning("SecAgg+ %s: node %d failed: %s", stage, node, msg.error)
                    continue
                sent_bytes.setdefault(node, []).extend(_bytes_in(msg.content))
                if rm.BANK in msg.content and node not in final:
                    final[node] = msg
        for node, msg in final.items():
            if not msg.has_error():
                payload = Payload(NAME, tuple(sent_bytes[node]), {"protocol": NAME})
                msg.content[rm.UPDATE] = ConfigRecord(payload.to_record())
        return list(final.values())

    def halt_reason(self, threshold: int) -> str:
        if not self.stages:
            return "SecAgg+ sent nothing (no banks selected)"
        stage, sent, received = self.stages[-1]
        active = sum(1 for m in received if not m.has_error())
        failed = [m.error.reason for m in received if m.has_error()]
        return (
            f"SecAgg+ stopped in its {stage} stage: {active} of {len(sent)} banks answered, and "
            f"every bank needs {threshold} live neighbours (secagg-reconstruction-threshold) to "
            "recover the masks" + (f"; first failure: {failed[0]}" if failed else "")
        )


def _bytes_in(content: RecordDict) -> list[bytes]:
    """The protocol bytes a bank sent in one reply (keys, encrypted shares, masked vector)."""
    record = content.config_records.get(RECORD_KEY_CONFIGS, {})
    out: list[bytes] = []
    for value in record.values():
        items = value if isinstance(value, list) else [value]
        out.extend(v if isinstance(v, bytes) else np.int64(0).tobytes() for v in items)
    return out


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
            scale, clip, split = (float(envelope[k]) for k in (_SCALE, _CLIP, _SPLIT))
            return _masking_input(reply, scale, clip, split)

        try:
            return secaggplus_mod(msg, context, answer)
        except _Refused as refused:
            return Message(refused.error, reply_to=msg)
        except Exception as exc:  # a protocol step failed here: say which, as a bank error
            reason = f"SecAgg+ {stage} stage failed at this bank: {exc}"
            return Message(Error(code=rm.BANK_ERROR_CODE, reason=reason), reply_to=msg)

    return mod


def _masking_input(reply: Message, scale: float, clip: float, split: float) -> Message:
    """Turn the bank's reply into what `secaggplus_mod` masks: FitRes([vector / W], 1).
    With `split` (Flower's grid step), send [v on the grid, (v - that) * c / step]: the first
    part quantizes exactly, the second with step / c of the error."""
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
                "(secagg-stats-max-weight / secagg-stats-clipping-range for feature statistics)",
            )
        )
    if split:
        on_grid = np.round(vector / split) * split
        vector = np.concatenate([on_grid, (vector - on_grid) * (clip / split)])
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
