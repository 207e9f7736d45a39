"""Federation vs local-only vs centralized on the synthetic consortium (issue 3 targets).

Runs `fedfraud simulate` for the MLP and the GNN on the same data in one process and writes
benchmarks/results/federation.json and .md. Usage:
    python benchmarks/bench_federation.py [--banks 5] [--transactions 200000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fedfraud.config import RunConfig
from fedfraud.data.synth import write_consortium
from simulations.report import markdown_table
from simulations.runner import simulate

RESULTS = Path(__file__).parent / "results"


def table_row(model: str, run: dict) -> dict[str, str]:
    """One markdown row: PR-AUC against both yardsticks, and federated recall per typology."""
    fed = run["federated_pr_auc"]
    return {
        "model": model,
        "federated PR-AUC": f"{fed:.3f}",
        "local-only mean": f"{run['local_only_mean_pr_auc']:.3f}",
        "fed − local": f"{fed - run['local_only_mean_pr_auc']:+.3f}",
        "centralized, same features": f"{run['centralized_same_features_pr_auc']:.3f}",
        "fed / same": f"{run['fed_over_centralized_same_features']:.3f}",
        "centralized, pooled raw": f"{run['centralized_pr_auc']:.3f}",
        "fed / pooled": f"{run['fed_over_centralized']:.3f}",
        **{f"recall {t}": f"{v:.2f}" for t, v in run["federated_typology_recall"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--banks", type=int, default=5)
    parser.add_argument("--transactions", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--models", default="mlp,gnn")
    parser.add_argument("--secure-agg", default="none")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows, runs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_consortium(data, args.banks, args.transactions, args.seed)
        for model in args.models.split(","):
            cfg = RunConfig(
                num_banks=args.banks,
                num_rounds=args.rounds,
                model=model,
                secure_agg=args.secure_agg,
                data_format="banks",
                data_path=str(data),
                seed=args.seed,
            )
            start = time.perf_counter()
            res = simulate(cfg, Path(tmp) / f"run-{model}")
            fed = res["final"]["pr_auc"]
            local = res["baselines"]["local_only"]["mean_pr_auc"]
            central = res["baselines"]["centralized"]["pr_auc"]
            same = res["baselines"]["centralized_same_features"]["pr_auc"]
            runs[model] = {
                "federated_pr_auc": fed,
                "local_only_mean_pr_auc": local,
                "centralized_pr_auc": central,
                "centralized_same_features_pr_auc": same,
                "fed_over_centralized": fed / central,
                "fed_over_centralized_same_features": fed / same,
                "fed_minus_local": fed - local,
                "targets_met": {
                    "fed >= 0.97 x centralized": fed >= 0.97 * central,
                    "fed >= 0.97 x centralized (same features)": fed >= 0.97 * same,
                    "fed >= local + 0.10": fed >= local + 0.10,
                },
                "federated_typology_recall": res["analysis"].get("typology_recall", {}),
                "centralized_typology_recall": res["baselines"]["centralized"].get(
                    "typology_recall", {}
                ),
                "local_only_typology_recall": {
                    b: m.get("typology_recall", {})
                    for b, m in res["baselines"]["local_only"]["per_bank"].items()
                },
                "mean_round_s": res["timing"]["mean_round_s"],
                "wall_s": time.perf_counter() - start,
            }
            rows.append(table_row(model, runs[model]))
            print(json.dumps({model: runs[model]["targets_met"]}), flush=True)
    out = {"args": vars(args), "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "federation.json").write_text(json.dumps(out, indent=2))
    (RESULTS / "federation.md").write_text(
        f"Synthetic consortium: {args.banks} banks, {args.transactions:,} transactions, "
        f"{args.rounds} rounds, secure-agg {args.secure_agg}, seed {args.seed}. Recall per "
        "typology at 1% FPR on the pooled test rows.\n\n" + markdown_table(rows) + "\n"
    )
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
