"""Does DP-SGD keep the non-DP utility when the noise is negligible, and what does ε cost?
Pooled test PR-AUC (union of the banks' test rows) of the final federated MLP at each ε, with
record-level DP-SGD through every bank's own `BankRound` (fedfraud/privacy/canary_audit.py's
in-process FedAvg; secure aggregation equals plaintext FedAvg, tests/fl). Generator seeds are
ones the fix was not tuned on (0-2 were). Writes benchmarks/results/NAME.json and .md. Usage:
    python benchmarks/bench_dp_clipping.py [--seeds 31,32,33] [--epsilons 1e9,inf]
        [--rounds 2] [--settings default|dp] [--transactions 30000] [--name dp_clipping]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fedfraud.config import RunConfig
from fedfraud.data.features import TEST, build_bank_table
from fedfraud.data.store import list_banks, read_bank
from fedfraud.data.synth import write_consortium
from fedfraud.metrics import score_metrics
from fedfraud.privacy.canary_audit import pooled_scaler, train_consortium
from fedfraud.train import make_inputs, predict

RESULTS = Path(__file__).parent / "results"
SETTINGS = {"default": {}, "dp": {"batch_size": 256, "lr": 0.01, "local_epochs": 3}}


def pooled_pr_auc(config: RunConfig, tables: dict, work: Path) -> dict[str, float]:
    scaler = pooled_scaler(tables)
    inputs = {b: make_inputs("mlp", t, scaler) for b, t in tables.items()}
    first = next(iter(tables))
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        model, eps = train_consortium(
            config, inputs, tables[first], scaler.fraud_rate, Path(scratch)
        )
    ys, ss = zip(*(predict(model, i, TEST) for i in inputs.values()), strict=True)
    out = score_metrics(np.concatenate(ys), np.concatenate(ss))
    out["max_epsilon"] = max(eps.values()) if eps else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="31,32,33")
    parser.add_argument("--epsilons", default="1e9,inf")
    parser.add_argument("--banks", type=int, default=3)
    parser.add_argument("--transactions", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="default")
    parser.add_argument("--name", default="dp_clipping")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    epsilons = [float(e) for e in args.epsilons.split(",")]
    runs: dict[str, list[dict]] = {str(e): [] for e in epsilons}
    with tempfile.TemporaryDirectory(prefix="fedfraud-dp-clipping-") as tmp:
        work = Path(tmp)
        for seed in [int(s) for s in args.seeds.split(",")]:
            data = work / f"data-{seed}"
            write_consortium(data, args.banks, args.transactions, seed)
            tables = {b: build_bank_table(read_bank(data / b), b) for b in list_banks(data)}
            for eps in epsilons:
                cfg = RunConfig(
                    num_banks=args.banks,
                    num_rounds=args.rounds,
                    dp_epsilon=0.0 if math.isinf(eps) else eps,
                    **SETTINGS[args.settings],
                )
                point = {"seed": seed, **pooled_pr_auc(cfg, tables, work)}
                runs[str(eps)].append(point)
                print(f"seed {seed} ε={eps:g}: PR-AUC {point['pr_auc']:.3f}", flush=True)
    base = statistics.fmean(r["pr_auc"] for r in runs["inf"]) if "inf" in runs else None
    summary = {}
    for key, points in runs.items():
        values = [p["pr_auc"] for p in points]
        mean = statistics.fmean(values)
        summary[key] = {
            "pr_auc_mean": mean,
            "pr_auc_sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "roc_auc_min": min(p["roc_auc"] for p in points),
            "ratio_to_no_dp": mean / base if base else None,
            "runs": points,
        }
    out = {
        "args": vars(args),
        "settings": SETTINGS[args.settings],
        "summary": summary,
        "total_s": time.perf_counter() - started,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=2))
    lines = [
        f"# Pooled PR-AUC against ε ({args.banks} banks, {args.transactions:,} transactions, "
        f"{args.rounds} rounds, settings {args.settings} {json.dumps(SETTINGS[args.settings])}, "
        f"generator seeds {args.seeds})\n",
        "| ε | pooled PR-AUC mean ± sd | ratio to no DP | min ROC-AUC |",
        "|---|---|---|---|",
    ]
    for key, s in summary.items():
        ratio = f"{s['ratio_to_no_dp']:.2f}x" if s["ratio_to_no_dp"] else "-"
        label = "∞ (no DP)" if key == "inf" else f"{float(key):g}"
        lines.append(
            f"| {label} | {s['pr_auc_mean']:.3f} ± {s['pr_auc_sd']:.3f} | {ratio} | "
            f"{s['roc_auc_min']:.3f} |"
        )
    lines.append(f"\nTotal {out['total_s'] / 60:.1f} min on the shared 2-core machine.\n")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
