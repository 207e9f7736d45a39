"""report.md (+ plots) for one run, and the comparison table shared with the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

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
    "selected round",
    "round s",
    "upload ×fp32",
)
ARMS = (
    ("federated (selected round)", None),
    ("local-only (each bank alone)", "local_only"),
    ("centralized, pooled raw data", "centralized"),
    ("centralized, same features", "centralized_same_features"),
)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pooled(results: dict[str, Any], arm: str | None = None) -> dict[str, Any]:
    """The pooled test metrics of the federated model (arm None) or of a baseline arm."""
    if arm is None:
        return results.get("final", {}).get("pooled", {})
    return results.get("baselines", {}).get(arm, {}).get("pooled", {})


def summary_row(results: dict[str, Any], name: str = "") -> dict[str, str]:
    """One line of the comparison table for a results.json."""
    final = pooled(results)
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
        "local-only PR-AUC": _fmt(pooled(results, "local_only").get("pr_auc")),
        "centralized PR-AUC": _fmt(pooled(results, "centralized").get("pr_auc")),
        "selected round": f"{results.get('final', {}).get('selected_round', '–')}/{len(rounds)}",
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
    """Pooled validation PR-AUC per round, the selected round, its test PR-AUC, the yardsticks
    (test) and the fraud base rate (the PR-AUC of a random score)."""
    rounds = results.get("rounds", [])
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    xs = [r["round"] for r in rounds]
    ax.plot(
        xs,
        [r["metrics"].get("pooled", {}).get("pr_auc") for r in rounds],
        marker="o",
        label=f"federated, validation ({results.get('secure_agg')})",
    )
    final = results.get("final", {})
    if final.get("selected_round") and pooled(results).get("pr_auc") is not None:
        ax.plot(
            [final["selected_round"]],
            [pooled(results)["pr_auc"]],
            marker="*",
            ms=12,
            ls="none",
            c="tab:blue",
            label="selected round, test",
        )
    styles = {"local_only": ("--", "tab:red"), "centralized": (":", "tab:green")}
    styles["centralized_same_features"] = ("-.", "tab:olive")
    for label, arm in ARMS[1:]:
        value = pooled(results, arm).get("pr_auc")
        if value is not None:
            ls, c = styles[arm]
            ax.axhline(value, ls=ls, c=c, label=f"{label}, test")
    test = pooled(results)
    if test.get("n_rows"):
        ax.axhline(
            test["n_frauds"] / test["n_rows"],
            ls="-",
            lw=0.8,
            c="grey",
            label="fraud base rate (test rows)",
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("pooled PR-AUC")
    ax.set_ylim(0, 1)
    # Legend beside the axes, never over the curves.
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    ax.set_title(f"{results.get('model')} · {results.get('num_banks')} banks")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
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
        f"{results.get('num_banks')} banks, {len(results.get('rounds', []))} of "
        f"{cfg.get('num_rounds')} rounds run (patience {cfg.get('patience')}), "
        f"{cfg.get('local_epochs')} local epoch(s), seed {cfg.get('seed')}. "
        f"DP: {'on' if results.get('privacy', {}).get('dp') else 'off'}.",
        "",
        "## Summary",
        "",
        markdown_table([summary_row(results, out_dir.name)]),
        "",
        "Every figure is **pooled**: computed over the union of the banks' test rows (the last "
        "part of each bank's time range), the same way for every arm. For the federated model "
        "the banks' per-score-bin counts travel through secure aggregation, so no bank's own "
        "metrics leave it. The federated model is the round with the best pooled *validation* "
        f"PR-AUC (round {final.get('selected_round', '–')}); test rows were never used to "
        "choose it. *Centralized* pools the banks' data: a research yardstick, not a private "
        "option.",
        "",
        "![convergence](convergence.png)",
        "",
        "## Arms (pooled test rows)",
        "",
        markdown_table(arm_rows(results)),
        "",
    ]
    lines += per_bank_section(results)
    lines += typology_section(results)
    lines += rounds_section(results)
    lines += privacy_section(results)
    lines += data_section(results)
    lines += rings_section(results.get("analysis", {}).get("fraud_rings", {}))
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def arm_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    for label, arm in ARMS:
        p = pooled(results, arm)
        if not p:
            continue
        rows.append(
            {
                "arm": label,
                "PR-AUC": _fmt(p.get("pr_auc")),
                "ROC-AUC": _fmt(p.get("roc_auc")),
                "recall@1%FPR": _fmt(p.get("recall_at_1pct_fpr")),
                "test rows": f"{p.get('n_rows', 0):,}",
                "frauds": f"{p.get('n_frauds', 0):,}",
            }
        )
    return rows


def per_bank_section(results: dict[str, Any]) -> list[str]:
    """Each bank's own figures: in a deployment they stay at the bank (its model-dir); a
    simulation holds every bank, so the runner computes them for this report."""
    fed = results.get("analysis", {}).get("per_bank", {})
    local = results.get("baselines", {}).get("local_only", {}).get("per_bank", {})
    if not fed and not local:
        return []
    rows = []
    for bank in sorted(set(fed) | set(local)):
        f, lo = fed.get(bank, {}), local.get(bank, {})
        m = f or lo
        rows.append(
            {
                "bank": bank,
                "test rows": f"{m.get('n_rows', 0):,}",
                "frauds": str(m.get("n_frauds", "–")),
                "federated PR-AUC": _fmt(f.get("pr_auc")),
                "local-only PR-AUC": _fmt(lo.get("pr_auc")),
                "federated recall@1%FPR": _fmt(f.get("recall_at_1pct_fpr")),
                "local-only recall@1%FPR": _fmt(lo.get("recall_at_1pct_fpr")),
            }
        )
    return [
        "## Per bank (test rows of each bank; simulation only)",
        "",
        "A bank's own figures never leave it in a deployment (node-config `model-dir` keeps "
        "them in bank_metrics.json). Read each against its fraud count: a recall from 2 frauds "
        'is 0, 0.5 or 1; "–" means undefined (no fraud in that bank\'s test split).',
        "",
        markdown_table(rows),
        "",
    ]


def typology_section(results: dict[str, Any]) -> list[str]:
    fed = pooled(results)
    frauds = fed.get("typology_frauds") or {}
    if not frauds:
        return []
    short = {None: "federated", "local_only": "local-only", "centralized": "centralized"}
    short["centralized_same_features"] = "same features"
    rows = []
    for typ, count in frauds.items():
        row = {"typology": typ, "test frauds": str(count)}
        for _, arm in ARMS:
            if pooled(results, arm):
                row[short[arm]] = _fmt(pooled(results, arm).get("typology_recall", {}).get(typ), 2)
        rows.append(row)
    return [
        "## Recall per fraud typology at 1% FPR (pooled test rows)",
        "",
        "At each arm's own threshold for 1% false positives on the pooled legit rows.",
        "",
        markdown_table(rows),
        "",
    ]


def rounds_section(results: dict[str, Any]) -> list[str]:
    by_round = results.get("analysis", {}).get("test_pr_auc_by_round", {})
    selected = results.get("final", {}).get("selected_round")
    rows = []
    for r in results.get("rounds", []):
        p = r["metrics"].get("pooled", {})
        rows.append(
            {
                "round": str(r["round"]) + (" (selected)" if r["round"] == selected else ""),
                "validation PR-AUC": _fmt(p.get("pr_auc")),
                "validation rows / frauds": f"{p.get('n_rows', 0):,} / {p.get('n_frauds', 0)}",
                "test PR-AUC (research)": _fmt(by_round.get(str(r["round"]))),
                "wall s": _fmt(r["wall_s"], 2),
                "bytes up": f"{r['bytes_up']:,}",
                "×fp32": _fmt(r["bytes_up"] / r["bytes_plain"], 2) if r.get("bytes_plain") else "–",
                "banks ok/failed": f"{r['num_results']}/{r['num_failures']}",
            }
        )
    return [
        "## Rounds",
        "",
        "Validation = the pooled metric the operator selects on. The test column is computed "
        "afterwards by the simulation (which holds all keys) for research only; the federation "
        "never sees it.",
        "",
        markdown_table(rows),
        "",
    ]


def privacy_section(results: dict[str, Any]) -> list[str]:
    privacy = results.get("privacy", {})
    lines = ["## Privacy", ""]
    if not privacy.get("dp"):
        lines.append(
            "Differential privacy is **off**: the model and the pooled evaluation counts carry "
            "no formal privacy guarantee; secure aggregation only hides each bank's update and "
            "counts from the operator and the other banks."
        )
    else:
        # Older results.json files lack `unit`; never call the record level "one transaction".
        unit = privacy.get("unit") or {
            "record": "one training example (record-level DP-SGD)",
            "bank": "a bank's whole update per round (bank-level)",
            "both": "one training example and a bank's whole update",
        }.get(str(privacy.get("level")), str(privacy.get("level")))
        if isinstance(unit, list):
            unit = "; ".join(unit)
        eps = privacy.get("epsilon_per_bank") or {}
        lines += [
            f"- unit protected: {unit}",
            f"- ε per bank: {', '.join(f'{b} {_fmt(e, 2)}' for b, e in sorted(eps.items()))}"
            f" (target {_fmt(privacy.get('target_epsilon'), 2)}), δ = {privacy.get('delta')}",
        ]
        if privacy.get("halted_banks"):
            lines.append(f"- halted (budget spent): {', '.join(privacy['halted_banks'])}")
        changed = results.get("analysis", {}).get("privacy_unit", {})
        if changed.get("rows_changed_per_transaction"):
            k = changed["rows_changed_per_transaction"]
            lines.append(
                f"- one transaction is not the unit: removing one changes the features of other "
                f"training rows of {changed.get('bank')} (median {k['median']:g}, p90 "
                f"{k['p90']:g}, max {k['max']:g} of {k['sampled']} sampled); it is protected "
                "only as that group of examples (no ε is claimed for it)"
            )
    lines += [
        "",
        "Not covered by DP: the per-score-bin counts behind the pooled metrics (revealed as a "
        "consortium sum, every round on validation and once on test) and the choice of the "
        "selected round; the number of contributing banks and timings; under `none`, `secagg+` "
        "and `crypten` the operator sees the aggregated sums (under `ckks` only the banks do).",
        "",
    ]
    return lines


def data_section(results: dict[str, Any]) -> list[str]:
    data = results.get("data", {})
    cfg = results.get("config", {})
    lines = [
        "## Data",
        "",
        f"- path: `{data.get('path') or cfg.get('data_path') or cfg.get('data_dir') or '–'}`"
        f" (format {data.get('format') or cfg.get('data_format')}), bank folders in "
        f"`{cfg.get('data_dir') or '–'}`",
    ]
    lines += [f"- warning: {w}" for w in data.get("warnings", [])]
    return lines + [""]


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
                    # A group without labelled fraud has no typology (not "legit").
                    "typology": ring.get("typology", "–") if ring["fraud_share"] > 0 else "–",
                }
            )
    lines.append(markdown_table(summary))
    if detail:
        lines += ["", f"Largest {top} per bank:", "", markdown_table(detail)]
    return lines
