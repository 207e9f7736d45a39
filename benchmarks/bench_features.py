"""Point-in-time featurization time (issue 15 target: 1M transactions in <= 30 s).

Generates a consortium with the synthetic generator, then times `build_bank_table` (features,
splits and both GNN graph snapshots) for every bank; the generator's time is not counted.
Writes benchmarks/results/features.json. Usage:
    python benchmarks/bench_features.py [--banks 10] [--transactions 1000000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from fedfraud.data.features import build_bank_table
from fedfraud.data.synth import generate_consortium

RESULTS = Path(__file__).parent / "results"
TARGET_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banks", type=int, default=10)
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    frames = generate_consortium(args.banks, args.transactions, args.seed)
    generate_s = time.perf_counter() - start
    per_bank = {}
    start = time.perf_counter()
    for name, frame in frames.items():
        t0 = time.perf_counter()
        table = build_bank_table(frame, name, with_graph=True)
        per_bank[name] = {"rows": len(frame), "seconds": round(time.perf_counter() - t0, 3)}
    total_s = time.perf_counter() - start
    result = {
        "transactions": args.transactions,
        "banks": args.banks,
        "seed": args.seed,
        "features": len(table.feature_names),
        "node_features": len(table.node_feature_names),
        "featurize_seconds": round(total_s, 2),
        "target_seconds": TARGET_S,
        "meets_target": total_s <= TARGET_S * args.transactions / 1_000_000,
        "generate_seconds": round(generate_s, 2),
        "per_bank": per_bank,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "features.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_bank"}, indent=2))


if __name__ == "__main__":
    main()
