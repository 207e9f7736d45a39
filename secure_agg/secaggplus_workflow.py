"""The operator side of 'secagg+': one exchange of Flower's SecAggPlusWorkflow.

The workflow is a legacy component: it wants a LegacyContext and a Strategy whose
`configure_fit` names the banks and whose `aggregate_fit` receives the unmasked result. This
module supplies both for a single exchange, records what every bank answered at every stage
(`_RecordingGrid`, so failures keep their node and reason; Flower only logs them) and leaves
out banks lost before they masked anything (`_Workflow`, a Flower 1.42 bug otherwise).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import FitIns, Parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.server import LegacyContext, ServerConfig
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey

from fedfraud import round_messages as rm
from secure_agg.base import Payload
from secure_agg.secaggplus_hardening import KeySignatureRelay

log = logging.getLogger("fedfraud.secaggplus")
COLLECT = "collect_masked_vectors"  # the stage in which banks compute what they mask


@dataclass(frozen=True)
class Protocol:
    """SecAgg+ parameters of one exchange, as Flower's workflow takes them."""

    num_shares: int
    threshold: int
    clipping_range: float
    quantization_range: int
    modulus_range: int


@dataclass(frozen=True)
class ExchangeRun:
    """What one exchange gave the operator."""

    replies: list[Message]  # one per bank: its masked-vector reply, or the error that lost it
    mean: np.ndarray | None  # Flower's unmasked mean of the summed vectors; None: it stopped
    count: int  # how many vectors `mean` averages
    banks: tuple[str, ...]  # their banks' ids
    halt_reason: str  # why it stopped (when `mean` is None)
    protocol_s: float  # time outside the banks' own work (every stage but COLLECT)


def run_exchange(
    grid: Any,
    nodes: Sequence[int],
    round_: int,
    fit_config: Mapping[str, Any],
    protocol: Protocol,
    timeout: float | None = None,
) -> ExchangeRun:
    """Run SecAgg+ once with `nodes`; every bank's masked-vector message carries `fit_config`
    (as FitIns.config)."""
    run_id = grid.run.run_id
    proxies = [GridClientProxy(node_id=node, grid=grid, run_id=run_id) for node in nodes]
    strategy = _OneExchange(proxies, FitIns(Parameters(tensors=[], tensor_type=""), fit_config))
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
        protocol.num_shares,
        protocol.threshold,
        max_weight=1.0,  # banks weight their vectors themselves (num_examples = 1)
        clipping_range=protocol.clipping_range,
        quantization_range=protocol.quantization_range,
        modulus_range=protocol.modulus_range,
        timeout=timeout,
    )
    recorder = _RecordingGrid(grid)
    start = time.perf_counter()
    workflow(recorder, context)
    protocol_s = time.perf_counter() - start - recorder.seconds.get(COLLECT, 0.0)
    banks = recorder.banks()
    return ExchangeRun(
        replies=recorder.final_replies(),
        mean=strategy.mean,
        count=len(strategy.included),
        banks=tuple(banks[node] for node in strategy.included if node in banks),
        halt_reason="" if strategy.mean is not None else recorder.halt_reason(protocol.threshold),
        protocol_s=protocol_s,
    )


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
    """The legacy Strategy the workflow drives: fixed banks, one FitIns, keep the result."""

    def __init__(self, proxies: list[GridClientProxy], fitins: FitIns):
        self.proxies, self.fitins = proxies, fitins
        self.mean: np.ndarray | None = None
        self.included: list[int] = []

    def initialize_parameters(self, client_manager):  # noqa: ANN001, ANN201
        return None

    def configure_fit(self, server_round, parameters, client_manager):  # noqa: ANN001, ANN201
        return [(proxy, self.fitins) for proxy in self.proxies]

    def aggregate_fit(self, server_round, results, failures):  # noqa: ANN001, ANN201
        if results:  # every result carries the same unmasked mean
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
        self.relay = KeySignatureRelay()  # the banks' roster signatures on their public keys
        self.stages: list[tuple[str, list[Message], list[Message]]] = []
        self.seconds: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        sent = list(messages)
        stage = str(sent[0].content.config_records[RECORD_KEY_CONFIGS][Key.STAGE]) if sent else ""
        if stage == Stage.SHARE_KEYS:
            self.relay.attach(sent)
        start = time.perf_counter()
        received = list(self._grid.send_and_receive(sent, timeout=timeout))
        if stage == Stage.SETUP:
            self.relay.collect(received)
        self.seconds[stage] = time.perf_counter() - start
        self.stages.append((stage, sent, received))
        return received

    def banks(self) -> dict[int, str]:
        """node -> bank id, from the masked-vector replies."""
        return {
            m.metadata.src_node_id: str(m.content[rm.BANK][rm.BANK_ID])
            for stage, _, received in self.stages
            if stage == COLLECT
            for m in received
            if not m.has_error() and rm.BANK in m.content
        }

    def final_replies(self) -> list[Message]:
        """One reply per bank, as a plain broadcast gives: its masked-vector reply with UPDATE
        = every protocol byte it sent (a Payload, for byte counts), or the error that made it
        drop out before that."""
        sent_bytes: dict[int, list[bytes]] = {}
        final: dict[int, Message] = {}
        for stage, _, received in self.stages:
            for msg in received:
                node = msg.metadata.src_node_id
                if msg.has_error():
                    # Once its masked vector is in, a bank stays in the sum whatever happens.
                    final.setdefault(node, msg)
                    if not final[node].has_error():
                        log.warning("SecAgg+ %s: node %d failed: %s", stage, node, msg.error)
                    continue
                sent_bytes.setdefault(node, []).extend(_bytes_in(msg.content))
                if rm.BANK in msg.content and node not in final:
                    final[node] = msg
        for node, msg in final.items():
            if not msg.has_error():
                payload = Payload("secagg+", tuple(sent_bytes[node]), {"protocol": "secagg+"})
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
    """The protocol bytes a bank sent in one reply (keys, encrypted shares, masked vector;
    node ids count 8 bytes each)."""
    record = content.config_records.get(RECORD_KEY_CONFIGS, {})
    out: list[bytes] = []
    for value in record.values():
        items = value if isinstance(value, list) else [value]
        out.extend(v if isinstance(v, bytes) else bytes(8) for v in items)
    return out
