"""`fedfraud serve`: the bank's real-time scoring service (FastAPI), one Scorer per process.

POST /score takes one transaction (canonical columns), POST /score/batch a list; both answer
with the transaction's id (echoed), the fraud probability and the decision at the bank's
threshold. GET /health describes the model, the threshold and its validation figures. Scored
transactions join the in-memory history.

The scoring routes verify a bearer JWT (fedfraud.auth) unless the app is built with
`auth=None` (`fedfraud serve --no-auth`, for local trials); /health stays open for probes.
Bodies are checked strictly: NaN/infinity, booleans for numbers and out-of-range codes are 422.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedfraud import __version__
from fedfraud.auth import TokenRejected, TokenVerifier
from fedfraud.data.schema import CHANNELS, MAX_AMOUNT, MAX_GEO_KM, MAX_HOURS, MCC_BUCKETS
from fedfraud.errors import FedfraudError
from fedfraud.online import Transaction
from fedfraud.scoring import ID_FIELDS, Decision, Scorer

# Open without a token: the liveness probe and the API description (no data in either).
OPEN_PATHS = frozenset({"/health", "/docs", "/openapi.json", "/docs/oauth2-redirect"})


class TransactionIn(BaseModel):
    """A transaction in the canonical schema; extra `x_*` features are passed through."""

    # allow_inf_nan=False: a NaN amount is the client's mistake (422), not a scoring crash.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    amount: float = Field(ge=0, le=MAX_AMOUNT, description="Absolute amount.")
    timestamp: float = Field(
        ge=0, le=MAX_HOURS, description="Hours since the bank's epoch (as in its history)."
    )
    sender: str | int | None = Field(None, description="Sending account id.")
    receiver: str | int | None = Field(None, description="Receiving account id.")
    channel: int | None = Field(
        None, ge=0, le=len(CHANNELS) - 1, description="0..4, see fedfraud.data.schema.CHANNELS."
    )
    mcc: int | None = Field(
        None, ge=0, le=len(MCC_BUCKETS) - 1, description="0..9, see schema.MCC_BUCKETS."
    )
    device_new: int | None = Field(None, ge=0, le=1)
    geo_km: float | None = Field(None, ge=0, le=MAX_GEO_KM)

    @field_validator("amount", "timestamp", "channel", "mcc", "device_new", "geo_km", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        # pydantic's lax mode reads true as 1; for an amount or a code that hides a bug.
        if isinstance(value, bool):
            raise ValueError("must be a number, not true/false")
        return value


class ScoreOut(BaseModel):
    tx_id: str | int | None = Field(
        None, description="The request's tx_id (or transaction_id, id), echoed; null if none."
    )
    fraud_probability: float
    decision: str = Field(description="alert | pass")
    threshold: float


def create_app(scorer: Scorer, *, auth: TokenVerifier | None) -> FastAPI:
    """The HTTP app around a loaded scorer (tests pass it to fastapi's TestClient). `auth`
    verifies the bearer token of every scoring request; None leaves them open (--no-auth)."""
    app = FastAPI(title="fedfraud scoring", version=__version__)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input; a NaN there cannot be written as JSON and
        # the client would get a 500. Non-finite numbers are echoed as text instead.
        return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)

    if auth is not None:
        # A middleware, not a route dependency: the token is checked before the body is even
        # read, so an unauthenticated caller learns nothing about the service (not even 422).
        @app.middleware("http")
        async def authorize(request: Request, call_next: Any) -> Any:
            if request.url.path in OPEN_PATHS:
                return await call_next(request)
            try:
                auth.verify(request.headers.get("authorization"))
            except TokenRejected as exc:
                challenge = f'Bearer error="{exc.error}", error_description="{exc.description}"'
                if exc.status == 403:
                    challenge += f', scope="{auth.scope}"'
                return JSONResponse(
                    {"detail": exc.description},
                    status_code=exc.status,
                    headers={"WWW-Authenticate": challenge},
                )
            return await call_next(request)

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


def _finite(value: Any) -> Any:
    """`value` with NaN/infinity replaced by their text, so it can be sent as JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
