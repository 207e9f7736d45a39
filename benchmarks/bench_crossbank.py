"""Cross-bank sketches (issue 19): pooled test PR-AUC and mule-ring recall@1%FPR of the
federated model with cross-bank off vs sketch, beside the centralized yardsticks of the same
run (pooled raw rows; union of the features the arm sees), over seeds, plus round time and the
sketch's error against exact consortium counts.

Every point is a real `fedfraud simulate` run (Flower simulation engine, secure-agg none: the
sketch stage's arithmetic is the same under every backend) on a synthetic consortium per seed.
Writes benchmarks/results/crossbank.json and .md. Usage:
    python benchmarks/bench_crossbank.py [--banks 5] [--transactions 40000] [--rounds 3]
        [--seeds 11,12,13] [--model mlp]
Sizes are chosen for 2 shared CPU cores (small scale: read the numbers as a smoke benchmark).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fedfraud.config import RunConfig
from fedfraud.data.synth import write_consortium
from simulations.runner import simulate

RESULTS = Path(__file__).parent / "results"
MULE = "mule_ring"


def arm_metrics(pooled: dict[str, Any]) -> dict[str, float | None]:
    return {
        "pr_auc": pooled.get("pr_auc"),
        "recall_at_1pct_fpr": pooled.get("recall_at_1pct_fpr"),
        "mule_ring_recall": pooled.get("typology_recall", {}).get(MULE),
    }


def one_run(args, seed: int, data: Path, mode: str, out: Path) -> dict[str, Any]:
    cfg = RunConfig(
        num_banks=args.banks,
        num_rounds=args.rounds,
        model=args.model,
        seed=seed,
        data_format="banks",
        data_path=str(data),
        cross_bank=mode,
        client_cpus=0.5,
    )
    start = time.perf_counter()
    results = simulate(cfg, out)
    row = {
        "seed": seed,
        "cross_bank": mode,
        "wall_s": time.perf_counter() - start,
        "mean_round_s": results["timing"]["mean_round_s"],
        "federated": arm_metrics(results["final"]["pooled"]),
        "centralized_same_features": arm_metrics(
            results["baselines"]["centralized_same_features"]["pooled"]
        ),
        "centralized_pooled_raw": arm_metrics(results["baselines"]["centralized"]["pooled"]),
        "local_only": arm_metrics(results["baselines"]["local_only"]["pooled"]),
    }
    if mode != "off":
        row["cross_bank_analysis"] = results["analysis"]["cross_bank"]
        row["sketch_stage_bytes_up"] = results["sketch_stage"]["bytes_up"]
    return row


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in sorted({r["cross_bank"] for r in rows}):
        mine = [r for r in rows if r["cross_bank"] == mode]
        out[mode] = {"mean_round_s": statistics.mean(r["mean_round_s"] for r in mine)}
        for arm in ("federated", "centralized_same_features", "centralized_pooled_raw"):
            for metric in ("pr_auc", "mule_ring_recall"):
                values = [r[arm][metric] for r in mine if r[arm][metric] is not None]
                out[mode][f"{arm}.{metric}"] = {
                    "mean": statistics.mean(values) if values else None,
                    "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
                    "n": len(values),
                }
    return out


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Cross-bank sketches: off vs sketch",
        "",
        f"`python benchmarks/bench_crossbank.py {doc['argv']}` — {doc['setup']}",
        "",
        "| seed | cross-bank | fed PR-AUC | fed mule recall@1%FPR | same-feat PR-AUC | "
        "same-feat mule | pooled-raw PR-AUC | pooled-raw mule | round s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    for r in doc["runs"]:
        fed, same, raw = r["federated"], r["centralized_same_features"], r["centralized_pooled_raw"]
        lines.append(
            f"| {r['seed']} | {r['cross_bank']} | {f(fed['pr_auc'])} | "
            f"{f(fed['mule_ring_recall'])} | {f(same['pr_auc'])} | {f(same['mule_ring_recall'])} "
            f"| {f(raw['pr_auc'])} | {f(raw['mule_ring_recall'])} | {r['mean_round_s']:.1f} |"
        )
    lines += [
        "",
        "Means over seeds:",
        "",
        "| cross-bank | metric | mean | std | n |",
        "|---|---|---|---|---|",
    ]
    for mode, stats in doc["summary"].items():
        for key, v in stats.items():
            if isinstance(v, dict):
                lines.append(f"| {mode} | {key} | {f(v['mean'])} | {v['std']:.3f} | {v['n']} |")
            else:
                lines.append(f"| {mode} | {key} | {v:.2f} | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--banks", type=int, default=5)
    parser.add_argument("--transactions", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", default="11,12,13")
    parser.add_argument("--model", default="mlp")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-crossbank-") as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            data = Path(tmp) / f"data-{seed}"
            write_consortium(data, args.banks, args.transactions, seed)
            for mode in ("off", "sketch"):
                rows.append(one_run(args, seed, data, mode, Path(tmp) / f"run-{seed}-{mode}"))
                print(json.dumps({k: rows[-1][k] for k in ("seed", "cross_bank", "federated")}))
    doc = {
        "argv": " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "setup": f"{args.banks} banks, {args.transactions} synthetic transactions, "
        f"{args.rounds} rounds, {args.model}, secure-agg none, default sketch shape",
        "runs": rows,
        "summary": summary(rows),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "crossbank.json").write_text(json.dumps(doc, indent=2))
    (RESULTS / "crossbank.md").write_text(markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
