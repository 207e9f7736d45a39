"""The operator's cross-bank sketch stage (run-config cross-bank=sketch), once after the
statistics stage: banks send their keyed account sketches through the run's secure
aggregation; the operator keeps only the protected aggregate and its proof and forwards them
with every later train/evaluate message (as it does the scaler). It never holds the sketch
key, so even an opened sketch would not say which cell is which account."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedfraud import round_messages as rm
from secure_agg import Payload

if TYPE_CHECKING:
    from fl_server.federation import Federation, RunState

SKETCH_TYPE = f"query.{rm.SKETCH}"


def run_sketch_stage(fed: Federation, nodes: list[int]) -> dict[str, Any]:
    """Collect and aggregate the banks' sketches into `fed.state`; returns the evidence."""
    replies = fed.broadcast(nodes, SKETCH_TYPE, 0, {}, stage=rm.SKETCH)
    agg = fed._aggregate(replies, "cross-bank sketch")[0]
    fed.state.sketch = agg.payload
    fed.state.sketch_proof = fed._proof(replies, agg, 0, rm.SKETCH)
    fed.state.sketch_banks = len(agg.included)
    return {
        **fed._evidence(replies, agg),
        "stage": rm.SKETCH,
        "bytes_up": sum(replies.payloads[b].nbytes() for b in agg.included),
    }


def sketch_records(
    state: RunState,
) -> tuple[dict[str, Payload], dict[str, dict | None], dict[str, int]]:
    """(extra, proofs, settings) a train/evaluate message carries for the sketch (none if off)."""
    if state.sketch is None:
        return {}, {}, {}
    return (
        {rm.SKETCH: state.sketch},
        {rm.SKETCH: state.sketch_proof},
        {rm.SKETCH_CONTRIBUTORS: state.sketch_banks},
    )
