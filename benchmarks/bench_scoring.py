"""Single-transaction scoring latency and int8 quantization loss (issue 8 targets).

Trains the MLP and the GNN federatedly on the synthetic consortium, then for one bank
(default: the largest) keeps its train+validation rows as history and streams its test rows
through `fedfraud.scoring.Scorer` one at a time, as the live service would: per-transaction
latency (features + neighbourhood + model, 1 thread), also end to end through `fedfraud serve`
(uvicorn subprocess, localhost, keep-alive client), and the online decisions' FPR/recall.
Quantization loss is the pooled test PR-AUC of the fp32 MLP minus that of its int8 dynamic
quantization (every bank's test split).
Writes benchmarks/results/scoring.json and .md. Usage:
    python benchmarks/bench_scoring.py [--banks 5] [--transactions 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fedfraud.config import RunConfig
from fedfraud.data.features import TEST, build_bank_table
from fedfraud.data.store import list_banks, read_bank, write_banks
from fedfraud.data.synth import write_consortium
from fedfraud.metrics import score_metrics
from fedfraud.run_model import load_run_model
from fedfraud.scoring import Scorer, quantize
from fedfraud.train import make_inputs, predict
from simulations.report import markdown_table
from simulations.runner import simulate

RESULTS = Path(__file__).parent / "results"
TARGETS = {"mlp_p99_ms": 5.0, "gnn_p99_ms": 20.0, "quantization_pr_auc_loss": 0.005}


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "n": int(ms.size),
    }


def stream_bank(run: Path, data: Path, bank: str, tmp: Path, quantized: bool, limit: int) -> dict:
    """History = the bank's train+val rows; stream (up to `limit`) test rows one by one."""
    frame = read_bank(data / bank).sort_values("timestamp", kind="stable").reset_index(drop=True)
    split = build_bank_table(frame, bank, with_graph=False).split
    hist_dir = tmp / f"history-{bank}"
    write_banks({bank: frame[split != TEST]}, hist_dir)
    start = time.perf_counter()
    scorer = Scorer(run, hist_dir / bank, quantized=quantized)
    load_s = time.perf_counter() - start
    test = frame[split == TEST].drop(columns=["is_fraud", "typology"], errors="ignore")
    labels = frame.loc[split == TEST, "is_fraud"].to_numpy()
    records = test.to_dict("records")[:limit]
    labels = labels[:limit]
    for r in records[:20]:  # warm-up (allocator, lazy init); scored again below as new rows
        scorer.score(r)
    scorer = Scorer(run, hist_dir / bank, quantized=quantized)
    times, probs, alerts = [], [], []
    for r in records:
        t0 = time.perf_counter()
        d = scorer.score(r)
        times.append(time.perf_counter() - t0)
        probs.append(d.probability)
        alerts.append(d.alert)
    probs, alerts = np.asarray(probs), np.asarray(alerts)
    online = score_metrics(labels, probs)
    return {
        "bank": bank,
        "history_transactions": scorer.history_size,
        "streamed_transactions": len(records),
        "load_s": load_s,
        "latency": percentiles(times),
        "threshold": scorer.threshold.value,
        "validation_fpr": scorer.threshold.val_fpr,
        "online_fpr": float(alerts[labels == 0].mean()),
        "online_recall": float(alerts[labels == 1].mean()) if labels.any() else None,
        "online_pr_auc": online["pr_auc"],
        "http_latency": http_latency(run, hist_dir / bank, quantized, records[:500]),
    }


def http_latency(run: Path, bank_dir: Path, quantized: bool, records: list[dict]) -> dict:
    """POST /score to a real `fedfraud serve` (uvicorn subprocess) on localhost, keep-alive."""
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "fedfraud.cli", "serve", str(run), "--data", str(bank_dir)]
    # --no-auth: this measures scoring; a bearer-JWT check adds one signature verification.
    cmd += ["--port", str(port), "--no-auth"] + ["--quantize"] * quantized
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    client.get("/health").raise_for_status()
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("fedfraud serve did not start") from None
                    time.sleep(0.2)
            times = []
            for r in records:
                body = {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                t0 = time.perf_counter()
                response = client.post("/score", json=body)
                times.append(time.perf_counter() - t0)
                response.raise_for_status()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return percentiles(times)


def batch_pr_auc(run: Path, data: Path, quantized: bool) -> float:
    """Pooled test PR-AUC over every bank (the evaluation the federation reports)."""
    model, card = load_run_model(run)
    model = quantize(model) if quantized else model
    ys, ss = [], []
    for bank in list_banks(data):
        table = build_bank_table(read_bank(data / bank), bank, with_graph=card.model == "gnn")
        y, s = predict(model, make_inputs(card.model, table, card.scaler), TEST)
        ys.append(y)
        ss.append(s)
    return score_metrics(np.concatenate(ys), np.concatenate(ss))["pr_auc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--banks", type=int, default=5)
    parser.add_argument("--transactions", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bank", default="", help="bank to stream (default: the largest)")
    parser.add_argument("--limit", type=int, default=3000, help="test rows streamed per model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out: dict = {
        "setup": {**vars(args), "torch": torch.__version__, "cpu": platform.processor()},
        "targets": TARGETS,
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "data"
        manifest = write_consortium(data, args.banks, args.transactions, args.seed)
        bank = args.bank or max(manifest["banks"], key=lambda b: b["transactions"])["bank"]
        for model in ("mlp", "gnn"):
            cfg = RunConfig(
                num_banks=args.banks,
                num_rounds=args.rounds,
                model=model,
                data_format="banks",
                data_path=str(data),
                seed=args.seed,
            )
            run = tmp / f"run-{model}"
            simulate(cfg, run, baselines=False)
            out[model] = stream_bank(run, data, bank, tmp, False, args.limit)
            out[model]["batch_test_pr_auc"] = batch_pr_auc(run, data, False)
            if model == "mlp":
                out["mlp_int8"] = stream_bank(run, data, bank, tmp, True, args.limit)
                out["mlp_int8"]["batch_test_pr_auc"] = batch_pr_auc(run, data, True)
    loss = out["mlp"]["batch_test_pr_auc"] - out["mlp_int8"]["batch_test_pr_auc"]
    out["quantization_pr_auc_loss"] = loss
    out["targets_met"] = {
        "mlp p99 <= 5 ms": out["mlp"]["latency"]["p99_ms"] <= TARGETS["mlp_p99_ms"],
        "gnn p99 <= 20 ms": out["gnn"]["latency"]["p99_ms"] <= TARGETS["gnn_p99_ms"],
        "int8 PR-AUC loss <= 0.005": loss <= TARGETS["quantization_pr_auc_loss"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scoring.json").write_text(json.dumps(out, indent=2))
    (RESULTS / "scoring.md").write_text(render(out) + "\n")
    print(render(out))


def render(out: dict) -> str:
    s = out["setup"]
    rows = []
    for key in ("mlp", "mlp_int8", "gnn"):
        r = out[key]
        rows.append(
            {
                "model": key,
                "p50 ms": f"{r['latency']['p50_ms']:.3f}",
                "p99 ms": f"{r['latency']['p99_ms']:.3f}",
                "max ms": f"{r['latency']['max_ms']:.2f}",
                "HTTP p50 / p99 ms (localhost)": f"{r['http_latency']['p50_ms']:.2f} / "
                f"{r['http_latency']['p99_ms']:.2f}",
                "load s": f"{r['load_s']:.2f}",
                "batch test PR-AUC": f"{r['batch_test_pr_auc']:.4f}",
                "online PR-AUC": f"{r['online_pr_auc']:.3f}",
                "online FPR / recall": f"{r['online_fpr']:.2%} / {r['online_recall']:.2f}"
                if r["online_recall"] is not None
                else f"{r['online_fpr']:.2%} / –",
            }
        )
    met = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in out["targets_met"].items())
    first = out["mlp"]
    return "\n".join(
        [
            f"Synthetic consortium: {s['banks']} banks, {s['transactions']:,} transactions, "
            f"{s['rounds']} rounds, seed {s['seed']}; torch {s['torch']}, 1 thread. Streamed "
            f"{first['streamed_transactions']:,} test transactions of {first['bank']} one at a "
            f"time after a history of {first['history_transactions']:,} (its train+val rows); "
            "latency = features + neighbourhood + model per transaction. Threshold: 1% FPR on "
            "the bank's validation split. Online PR-AUC/FPR/recall: the streamed rows' live "
            "scores (features without look-ahead); batch PR-AUC: every bank's test split as "
            "the federation evaluates it.",
            "",
            markdown_table(rows),
            "",
            f"int8 dynamic quantization PR-AUC loss (batch, pooled test): "
            f"{out['quantization_pr_auc_loss']:+.4f}. Targets met: {met}.",
        ]
    )


if __name__ == "__main__":
    main()
