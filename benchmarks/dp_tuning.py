"""Does another training setting rescue record-level DP at ε = 3? One MLP run per setting
(batch size, learning rate, local epochs, rounds, clip, hidden width) on the consortium of
bench_dp_utility.py, each a real `fedfraud simulate` through that benchmark's `run_point`.
Single runs with fresh noise: read differences below ~0.1 as noise. Writes
benchmarks/results/dp_tuning.json and .md (about 8 minutes on 2 cores). Usage:
    python benchmarks/dp_tuning.py [--transactions 60000] [--epsilon 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_dp_utility as dp_bench

from fedfraud.data.synth import write_consortium
from simulations.report import markdown_table

BASE: dict[str, Any] = {**dp_bench.MODEL_SETTINGS["mlp"], "rounds": 5}
# Each entry changes the base setting in one or two places.
VARIANTS: list[dict[str, Any]] = [
    {},
    {"batch_size": 1024, "local_epochs": 1},
    {"batch_size": 1024, "lr": 0.003},
    {"batch_size": 512, "local_epochs": 1},
    {"lr": 0.003, "local_epochs": 1},
    {"batch_size": 2048, "lr": 0.02},
    {"batch_size": 512, "lr": 0.03},
    {"dp_grad_clip": 0.1},
    {"dp_grad_clip": 3.0},
    {"hidden": 16},
    {"hidden": 32},
    {"rounds": 10, "local_epochs": 1},
    {"rounds": 3, "local_epochs": 5},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--banks", type=int, default=5)
    parser.add_argument("--transactions", type=int, default=60_000)
    parser.add_argument("--epsilon", type=float, default=3.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    rows, runs = [], []
    with tempfile.TemporaryDirectory(prefix="fedfraud-dp-tuning-") as tmp:
        work = Path(tmp)
        write_consortium(work / "data", args.banks, args.transactions, args.seed)
        for variant in VARIANTS:
            setting = {**BASE, **variant}
            run_args = argparse.Namespace(**vars(args), rounds=setting.pop("rounds"))
            point = dp_bench.run_point(
                work / "data", work, run_args, "mlp", "record", args.epsilon, setting
            )
            runs.append({"change": variant, "rounds": run_args.rounds, **setting, **point})
            change = ", ".join(f"{k}={v}" for k, v in variant.items()) or "base"
            rows.append({"change from base": change, "PR-AUC": f"{point['pr_auc']:.3f}"})
            print(f"{change}: PR-AUC {point['pr_auc']:.3f}", flush=True)
    results = dp_bench.RESULTS
    (results / "dp_tuning.json").write_text(
        json.dumps({"args": vars(args), "base": BASE, "runs": runs}, indent=2)
    )
    (results / "dp_tuning.md").write_text(
        f"# Record-level DP at ε = {args.epsilon:g}: other training settings\n\n"
        f"MLP, {args.banks} banks, {args.transactions:,} synthetic transactions, δ = "
        f"{args.delta:g}; one run per setting (fresh noise). Base: {json.dumps(BASE)}. "
        f"Total {(time.perf_counter() - started) / 60:.0f} min on 2 cores.\n\n"
        + markdown_table(rows)
        + "\n"
    )
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
