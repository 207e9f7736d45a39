"""Membership-inference audit with canaries at ε = 3 and without DP (fedfraud/privacy/
canary_audit.py, the same code as `fedfraud privacy-audit`): TPR at 0.1 % FPR, the attack
advantage and its noise floor, the one-run ε lower bound (Steinke et al. 2023) next to the
accounted ε. 3 banks, small synthetic consortia, DP-SGD training settings. Writes
benchmarks/results/privacy_audit.json and .md. Usage:
    python benchmarks/bench_privacy_audit.py [--seeds 41,42] [--epsilons inf,3]
        [--canaries 500] [--rounds 3] [--transactions 30000]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch

from fedfraud.config import RunConfig
from fedfraud.data.features import build_bank_table
from fedfraud.data.store import list_banks, read_bank
from fedfraud.data.synth import write_consortium
from fedfraud.privacy.canary_audit import canary_audit

RESULTS = Path(__file__).parent / "results"
SETTINGS = {"batch_size": 256, "lr": 0.01, "local_epochs": 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="41,42")
    parser.add_argument("--epsilons", default="inf,3")
    parser.add_argument("--canaries", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transactions", type=int, default=30_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedfraud-audit-bench-") as tmp:
        for seed in [int(s) for s in args.seeds.split(",")]:
            data = Path(tmp) / f"data-{seed}"
            write_consortium(data, 3, args.transactions, seed)
            tables = {b: build_bank_table(read_bank(data / b), b) for b in list_banks(data)}
            for eps in [float(e) for e in args.epsilons.split(",")]:
                cfg = RunConfig(
                    num_banks=3,
                    num_rounds=args.rounds,
                    dp_epsilon=0.0 if math.isinf(eps) else eps,
                    **SETTINGS,
                )
                audit = canary_audit(cfg, tables, args.canaries, seed=seed)
                rows.append({"seed": seed, "target_epsilon": eps, **audit})
                print(
                    f"seed {seed} ε={eps:g}: advantage {audit['advantage']:.3f} "
                    f"(floor {audit['advantage_null_95']:.3f}), ε_lb "
                    f"{audit['empirical_epsilon_lower_bound']:.3f}, accounted "
                    f"{audit['accounted_epsilon']}",
                    flush=True,
                )
    out = {
        "args": vars(args),
        "settings": SETTINGS,
        "runs": rows,
        "total_s": time.perf_counter() - started,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "privacy_audit.json").write_text(json.dumps(out, indent=2, default=str))
    lines = [
        f"# Canary audit (3 banks, {args.transactions:,} transactions, {args.rounds} rounds, "
        f"{args.canaries} mislabelled canaries in the largest bank, "
        f"settings {json.dumps(SETTINGS)})\n",
        "| seed | target ε | accounted ε | empirical ε ≥ (95 %) | advantage | noise floor (95 %) "
        "| TPR@0.1%FPR | correct / guesses |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = "∞" if r["accounted_epsilon"] is None else f"{r['accounted_epsilon']:.2f}"
        lines.append(
            f"| {r['seed']} | {r['target_epsilon']:g} | {acc} | "
            f"{r['empirical_epsilon_lower_bound']:.3f} | {r['advantage']:.3f} | "
            f"{r['advantage_null_95']:.3f} | {r['tpr_at_0.1pct_fpr']:.3f} | "
            f"{r['one_run']['correct']} / {r['one_run']['guesses']} |"
        )
    lines.append(f"\nTotal {out['total_s'] / 60:.1f} min on the shared 2-core machine.\n")
    (RESULTS / "privacy_audit.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
