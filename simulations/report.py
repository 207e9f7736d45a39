"""report.md (+ plots) for one run, and the comparison table shared with the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

SUMMARY_COLUMNS = (
    "run",
    "model",
    "secure_agg",
    "dp ε",
    "PR-AUC",
    "ROC-AUC",
    "recall@1%FPR",
    "local-only PR-AUC",
    "centralized PR-AUC",
    "round s",
    "upload ×fp32",
)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_row(results: dict[str, Any], name: str = "") -> dict[str, str]:
    """One line of the comparison table for a results.json."""
    final = results.get("final", {})
    base = results.get("baselines", {})
    rounds = results.get("rounds", [])
    plain = sum(r.get("bytes_plain", 0) for r in rounds)
    up = sum(r.get("bytes_up", 0) for r in rounds)
    eps = results.get("privacy", {}).get("epsilon_per_bank", {})
    return {
        "run": name,
        "model": results.get("model", "?"),
        "secure_agg": results.get("secure_agg", "?"),
        "dp ε": _fmt(max(eps.values()), 2) if eps else "off",
        "PR-AUC": _fmt(final.get("pr_auc")),
        "ROC-AUC": _fmt(final.get("roc_auc")),
        "recall@1%FPR": _fmt(final.get("recall_at_1pct_fpr")),
        "local-only PR-AUC": _fmt(base.get("local_only", {}).get("mean_pr_auc")),
        "centralized PR-AUC": _fmt(base.get("centralized", {}).get("pr_auc")),
        "round s": _fmt(results.get("timing", {}).get("mean_round_s"), 2),
        "upload ×fp32": _fmt(up / plain, 2) if plain else "–",
    }


def markdown_table(rows: list[dict[str, str]]) -> str:
    """Rows of equal keys as a GitHub markdown table."""
    if not rows:
        return ""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r[h] for h in head) + " |" for r in rows]
    return "\n".join(lines)


def plot_convergence(results: dict[str, Any], path: Path) -> None:
    """PR-AUC per round against the local-only mean and the centralized yardstick."""
    rounds = results.get("rounds", [])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(
        [r["round"] for r in rounds],
        [r["metrics"].get("pr_auc") for r in rounds],
        marker="o",
        label=f"federated ({results.get('secure_agg')})",
    )
    base = results.get("baselines", {})
    if base.get("local_only", {}).get("mean_pr_auc") is not None:
        ax.axhline(base["local_only"]["mean_pr_auc"], ls="--", c="tab:red", label="local-only mean")
    if base.get("centralized", {}).get("pr_auc") is not None:
        ax.axhline(base["centralized"]["pr_auc"], ls=":", c="tab:green", label="centralized")
    same = base.get("centralized_same_features", {}).get("pr_auc")
    if same is not None:
        ax.axhline(same, ls="-.", c="tab:olive", label="centralized, same features")
    ax.set_xlabel("round")
    ax.set_ylabel("PR-AUC (test, weighted)")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{results.get('model')} · {results.get('num_banks')} banks")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    """Write report.md and convergence.png into `out_dir`."""
    out_dir = Path(out_dir)
    plot_convergence(results, out_dir / "convergence.png")
    cfg = results.get("config", {})
    final = results.get("final", {})
    lines = [
        f"# fedfraud run: {results.get('model')} · secure aggregation "
        f"`{results.get('secure_agg')}`",
        "",
        f"{results.get('num_banks')} banks, {cfg.get('num_rounds')} rounds, "
        f"{cfg.get('local_epochs')} local epoch(s), data: {cfg.get('data_format')}, "
        f"seed {cfg.get('seed')}. DP: {'on' if results.get('privacy', {}).get('dp') else 'off'}.",
        "",
        "## Summary",
        "",
        markdown_table([summary_row(results, out_dir.name)]),
        "",
        "Metrics are computed by each bank on its held-out test split (the last 20% of its "
        "time range) and combined as sample-weighted means. *Centralized* pools all banks' raw "
        "data: a research yardstick, not a private option.",
        "",
        "![convergence](convergence.png)",
        "",
        "## Per bank (final global model)",
        "",
    ]
    local = results.get("baselines", {}).get("local_only", {}).get("per_bank", {})
    rows = []
    for bank, m in sorted(final.get("per_bank", {}).items()):
        rows.append(
            {
                "bank": bank,
                "federated PR-AUC": _fmt(m.get("pr_auc")),
                "local-only PR-AUC": _fmt(local.get(bank, {}).get("pr_auc")),
                "federated recall@1%FPR": _fmt(m.get("recall_at_1pct_fpr")),
                "local-only recall@1%FPR": _fmt(local.get(bank, {}).get("recall_at_1pct_fpr")),
            }
        )
    lines += [markdown_table(rows), "", "## Rounds", ""]
    lines.append(
        markdown_table(
            [
                {
                    "round": str(r["round"]),
                    "PR-AUC": _fmt(r["metrics"].get("pr_auc")),
                    "wall s": _fmt(r["wall_s"], 2),
                    "aggregate s": _fmt(r["aggregate_s"], 3),
                    "bytes up": f"{r['bytes_up']:,}",
                    "×fp32": _fmt(r["bytes_up"] / r["bytes_plain"], 2)
                    if r.get("bytes_plain")
                    else "–",
                    "banks ok/failed": f"{r['num_results']}/{r['num_failures']}",
                }
                for r in results.get("rounds", [])
            ]
        )
    )
    typ = results.get("analysis", {}).get("typology_recall")
    if typ:
        central = results.get("baselines", {}).get("centralized", {}).get("typology_recall", {})
        lines += ["", "## Recall per fraud typology at 1% FPR (pooled test rows)", ""]
        lines.append(
            markdown_table(
                [
                    {"typology": t, "federated": _fmt(v), "centralized": _fmt(central.get(t))}
                    for t, v in typ.items()
                ]
            )
        )
    lines += rings_section(results.get("analysis", {}).get("fraud_rings", {}))
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def rings_section(rings: dict[str, Any], top: int = 5) -> list[str]:
    """report.md lines for the GNN's flagged account groups per bank (fedfraud/rings.py)."""
    if not rings:
        return []
    lines = [
        "",
        "## Fraud rings (GNN): flagged groups of accounts per bank",
        "",
        "Each bank flags its test transactions scored above its 1%-FPR threshold (set on its "
        "validation split); the flagged transactions' accounts form connected groups. Groups of "
        "3+ accounts, largest first; *fraud share* = labelled fraud among the group's flagged "
        "transactions, *typology* = its most common fraud typology (ground truth, research only).",
        "",
    ]
    summary, detail = [], []
    for bank, r in sorted(rings.items()):
        summary.append(
            {
                "bank": bank,
                "flagged tx": str(r.get("flagged_transactions", "–")),
                "rings": str(r.get("num_rings", 0)),
                "accounts in rings": str(r.get("accounts_in_rings", "–")),
                "threshold": _fmt(r.get("threshold")),
            }
        )
        for i, ring in enumerate(r.get("rings", [])[:top], start=1):
            detail.append(
                {
                    "bank": bank,
                    "ring": str(i),
                    "accounts": str(ring["accounts"]),
                    "transactions": str(ring["transactions"]),
                    "max score": _fmt(ring["max_score"]),
                    "mean score": _fmt(ring["mean_score"]),
                    "fraud share": _fmt(ring["fraud_share"], 2),
                    "typology": ring.get("typology", "–"),
                }
            )
    lines.append(markdown_table(summary))
    if detail:
        lines += ["", f"Largest {top} per bank:", "", markdown_table(detail)]
    return lines
