"""A bank scores its transactions with a run's global model: probability + alert decision.

The decision threshold is set for a target false-positive rate on the bank's own validation
split (the model's scores of its legitimate validation transactions), so each bank controls
its alert volume. Transactions are scored one at a time against the bank's history: see
fedfraud.online (features) and fedfraud.online_gnn (the GNN's neighbourhood).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fedfraud.data.features import VAL, BankTable, build_bank_table
from fedfraud.data.schema import check_tx_ids
from fedfraud.data.store import TRANSACTIONS_FILE, read_bank
from fedfraud.errors import DataError, FedfraudError
from fedfraud.online import (
    ACCOUNT_FEATURES,
    AccountHistory,
    Transaction,
    account_key,
    ordered,
    parse_transaction,
    stateless_features,
)
from fedfraud.run_model import ModelCard, load_run_model
from fedfraud.train import make_inputs, predict

DEFAULT_TARGET_FPR = 0.01


@dataclass(frozen=True)
class Decision:
    """A transaction's fraud probability and whether it raises an alert."""

    probability: float
    alert: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "fraud_probability": self.probability,
            "decision": "alert" if self.alert else "pass",
        }


@dataclass(frozen=True)
class Threshold:
    """Alert threshold for a target FPR and what it gives on the validation split."""

    value: float
    target_fpr: float
    val_fpr: float
    val_recall: float | None
    val_legit: int
    val_fraud: int


def choose_threshold(y: np.ndarray, scores: np.ndarray, target_fpr: float) -> Threshold:
    """Smallest threshold flagging (score > threshold) at most `target_fpr` of legit rows."""
    legit, fraud = scores[y == 0], scores[y == 1]
    if legit.size == 0:
        raise DataError("the validation split has no legitimate transactions to set an FPR on")
    value = float(np.quantile(legit, 1 - target_fpr, method="higher"))
    return Threshold(
        value=value,
        target_fpr=target_fpr,
        val_fpr=float((legit > value).mean()),
        val_recall=float((fraud > value).mean()) if fraud.size else None,
        val_legit=int(legit.size),
        val_fraud=int(fraud.size),
    )


def quantize(model: nn.Module) -> nn.Module:
    """int8 dynamic quantization of the Linear layers (weights int8, activations quantized
    on the fly): the MLP is all Linear layers, so this is the whole model."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch 2.13 announces the move of quantized tensors to torchao; the API still works.
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def read_bank_dir(bank_dir: Path) -> pd.DataFrame:
    """One bank's transactions, with a hint when given the consortium folder instead."""
    bank_dir = Path(bank_dir)
    if not (bank_dir / TRANSACTIONS_FILE).is_file() and any(
        bank_dir.glob(f"*/{TRANSACTIONS_FILE}")
    ):
        first = sorted(bank_dir.glob(f"*/{TRANSACTIONS_FILE}"))[0].parent
        raise DataError(
            f"{bank_dir} is a consortium folder; pass one bank's folder, e.g. --data {first}"
        )
    return read_bank(bank_dir)


def bank_table(frame: pd.DataFrame, bank_dir: Path, card: ModelCard) -> BankTable:
    """The bank's history as a table with the model's feature layout; DataError if it differs."""
    table = build_bank_table(frame, Path(bank_dir).name, with_graph=card.model == "gnn")
    if table.feature_names != card.feature_names:
        missing = sorted(set(card.feature_names) - set(table.feature_names))
        raise DataError(
            f"{bank_dir}: this bank's data gives other features than the model was trained on"
            + (f" (missing {', '.join(missing[:5])})" if missing else "")
            + "; use the data schema the consortium trained with"
        )
    return table


class Scorer:
    """Loads a run's model and a bank's history; scores transactions one by one, thread-safe."""

    def __init__(
        self,
        run_dir: Path,
        bank_dir: Path,
        target_fpr: float = DEFAULT_TARGET_FPR,
        quantized: bool = False,
    ) -> None:
        if not 0 < target_fpr < 1:
            raise FedfraudError(f"--target-fpr must be in (0, 1), got {target_fpr}")
        model, card = load_run_model(run_dir)
        if quantized and card.model != "mlp":
            raise FedfraudError(
                "--quantize applies to the MLP only (the GNN's message passing is not "
                "quantized); drop --quantize for this run"
            )
        self.card, self.run_dir, self.bank = card, Path(run_dir), Path(bank_dir).name
        self.model = quantize(model) if quantized else model
        self.quantized = quantized
        frame = read_bank_dir(bank_dir)
        table = bank_table(frame, bank_dir, card)
        y, scores = predict(self.model, make_inputs(card.model, table, card.scaler), VAL)
        self.threshold = choose_threshold(y, scores, target_fpr)
        self._lock = threading.Lock()
        self._names = card.feature_names
        self._extras = [n for n in self._names if n.startswith("x_")]
        self._accounts = ACCOUNT_FEATURES[0] in self._names
        self._mean, self._std = card.scaler.mean, card.scaler.std
        self.history = AccountHistory()
        self.graph = None
        if self._accounts:
            sender = [account_key(v) for v in frame["sender"].tolist()]
            receiver = [account_key(v) for v in frame["receiver"].tolist()]
            order = np.argsort(frame["timestamp"].to_numpy(), kind="stable")
            t, amount = frame["timestamp"].to_numpy(float), frame["amount"].to_numpy(float)
            for i in order.tolist():
                self.history.observe(sender[i], receiver[i], t[i], amount[i])
            if card.model == "gnn":
                self._init_graph(sender, receiver)
        self.history_size = len(frame)

    def _init_graph(self, sender: list[str], receiver: list[str]) -> None:
        from fedfraud.online_gnn import IncrementalGNN

        keys = self.history.accounts()
        node_x = np.stack([self._node_x(k) for k in keys])
        self.graph = IncrementalGNN(self.model, keys, node_x)
        index = self.graph.index
        self.graph.add_edges(
            np.array([index[k] for k in sender]), np.array([index[k] for k in receiver])
        )

    def _node_x(self, key: str) -> np.ndarray:
        raw = ordered(self.history.node_features(key), self.card.node_feature_names, "account")
        return (raw - self.card.scaler.node_mean) / self.card.scaler.node_std

    def parse(self, record: Mapping[str, Any], where: str = "transaction") -> Transaction:
        """Validate a record against what this model needs; DataError naming `where`."""
        return parse_transaction(record, where, self._accounts, self._extras)

    def score(
        self, record: Mapping[str, Any] | Transaction, where: str = "transaction"
    ) -> Decision:
        """Score one transaction (canonical columns) and add it to the bank's history."""
        tx = record if isinstance(record, Transaction) else self.parse(record, where)
        with self._lock:
            values = stateless_features(tx)
            if self._accounts:
                values.update(self.history.observe(tx.sender, tx.receiver, tx.timestamp, tx.amount))
            x = (ordered(values, self._names, "feature") - self._mean) / self._std
            with torch.inference_mode():
                if self.graph is not None:
                    nodes = {k: self._node_x(k) for k in (tx.sender, tx.receiver)}
                    logit = self.graph.add_and_score(tx.sender, tx.receiver, nodes, x)
                else:
                    logit = float(self.model(torch.from_numpy(x[None].astype(np.float32)))[0])
        p = 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0
        return Decision(p, p > self.threshold.value)

    def score_records(
        self, records: Iterable[Mapping[str, Any]], label: str = "row"
    ) -> list[Decision]:
        """Score in the given order (each joins the history before the next is scored)."""
        return [self.score(r, f"{label} {i}") for i, r in enumerate(records)]

    def score_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Score a table in time order; return it (input order) with probability and decision."""
        order = np.argsort(_timestamps(frame), kind="stable")
        records = frame.to_dict("records")
        probability = np.empty(len(frame))
        alert = np.empty(len(frame), dtype=bool)
        for i in order.tolist():
            d = self.score(records[i], f"row {i + 1}")
            probability[i], alert[i] = d.probability, d.alert
        out = frame.copy()
        out["fraud_probability"] = probability
        out["decision"] = np.where(alert, "alert", "pass")
        return out

    def info(self) -> dict[str, Any]:
        """What this scorer runs: model, bank, threshold and its validation figures."""
        t = self.threshold
        return {
            "run": str(self.run_dir),
            "bank": self.bank,
            "model": self.card.model,
            "quantized": self.quantized,
            "history_transactions": self.history_size,
            "threshold": t.value,
            "target_fpr": t.target_fpr,
            "validation": {
                "fpr": t.val_fpr,
                "recall": t.val_recall,
                "legit": t.val_legit,
                "fraud": t.val_fraud,
            },
        }


ID_FIELDS = ("tx_id", "transaction_id", "id")


def score_json_lines(scorer: Scorer, lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Score JSON lines in arrival order (a stream); yield one result per non-blank line, with
    the transaction's id echoed when it has one of ID_FIELDS."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"line {number} is not valid JSON ({exc.msg}); send one object per line"
            ) from None
        decision = scorer.score(record, f"line {number}")
        ids = {k: record[k] for k in ID_FIELDS if isinstance(record, dict) and k in record}
        yield {**ids, **decision.to_json()}


def _timestamps(frame: pd.DataFrame) -> np.ndarray:
    if "timestamp" not in frame.columns:
        raise DataError("the input has no 'timestamp' column; every transaction needs one")
    values = pd.to_numeric(frame["timestamp"], errors="coerce").to_numpy(float)
    return np.where(np.isnan(values), np.inf, values)  # bad rows fail when scored, with a row


def read_transactions(path: Path) -> pd.DataFrame:
    """Transactions to score from a CSV or Parquet file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; pass a CSV or Parquet file (or '-' for JSON lines)")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif path.suffix in (".csv", ".txt") or path.suffix == "":
            frame = pd.read_csv(path)
        else:
            raise DataError(f"{path}: use a .csv or .parquet file (or '-' for JSON lines)")
    except DataError:
        raise
    except Exception as exc:  # pandas/pyarrow raise several types for unreadable files
        raise DataError(f"{path} is not a readable table ({exc.__class__.__name__})") from exc
    if frame.empty:
        raise DataError(f"{path} has no rows to score")
    for column in ID_FIELDS:  # answers are matched to transactions by id: one id, one row
        if column in frame.columns:
            check_tx_ids(frame[column], str(path), column)
    return frame
