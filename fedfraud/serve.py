"""`fedfraud serve`: the bank's real-time scoring service (FastAPI), one Scorer per process.

POST /score takes one transaction (canonical columns), POST /score/batch a list; both answer
with the transaction's id (echoed), the fraud probability and the decision at the bank's
threshold. GET /health describes the model, the threshold and its validation figures. Scored
transactions join the in-memory history.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from fedfraud import __version__
from fedfraud.errors import FedfraudError
from fedfraud.online import Transaction
from fedfraud.scoring import ID_FIELDS, Decision, Scorer


class TransactionIn(BaseModel):
    """A transaction in the canonical schema; extra `x_*` features are passed through."""

    model_config = ConfigDict(extra="allow")

    amount: float = Field(ge=0, description="Absolute amount.")
    timestamp: float = Field(description="Hours since the bank's epoch (as in its history).")
    sender: str | int | None = Field(None, description="Sending account id.")
    receiver: str | int | None = Field(None, description="Receiving account id.")
    channel: int | None = Field(None, description="0..4, see fedfraud.data.schema.CHANNELS.")
    mcc: int | None = Field(None, description="0..9, see fedfraud.data.schema.MCC_BUCKETS.")
    device_new: int | None = None
    geo_km: float | None = Field(None, ge=0)


class ScoreOut(BaseModel):
    tx_id: str | int | None = Field(
        None, description="The request's tx_id (or transaction_id, id), echoed; null if none."
    )
    fraud_probability: float
    decision: str = Field(description="alert | pass")
    threshold: float


def create_app(scorer: Scorer) -> FastAPI:
    """The HTTP app around a loaded scorer (tests pass it to fastapi's TestClient)."""
    app = FastAPI(title="fedfraud scoring", version=__version__)

    def out(tx: TransactionIn, d: Decision) -> ScoreOut:
        extra = tx.model_extra or {}
        tx_id = next((extra[k] for k in ID_FIELDS if extra.get(k) is not None), None)
        return ScoreOut(tx_id=tx_id, **d.to_json(), threshold=scorer.threshold.value)

    def parse(tx: TransactionIn, where: str) -> Transaction:
        try:
            return scorer.parse(tx.model_dump(exclude_none=True), where)
        except FedfraudError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", **scorer.info()}

    # Scoring takes ~0.1-2 ms of CPU and is serialised by the scorer's lock anyway, so the
    # endpoints run on the event loop: a hop to the thread pool would cost more than the work.
    @app.post("/score", response_model=ScoreOut)
    async def score(tx: TransactionIn) -> ScoreOut:
        return out(tx, scorer.score(parse(tx, "transaction")))

    @app.post("/score/batch", response_model=list[ScoreOut])
    async def score_batch(txs: list[TransactionIn]) -> list[ScoreOut]:
        # Validate the whole batch first, so a bad item leaves the history untouched.
        parsed = [parse(tx, f"transaction {i}") for i, tx in enumerate(txs)]
        return [out(tx, scorer.score(p)) for tx, p in zip(txs, parsed, strict=True)]

    return app
