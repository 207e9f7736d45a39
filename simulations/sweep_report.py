"""report.html for a sweep: the comparison table and matplotlib plots, inline (one file)."""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from simulations.sweep import table_rows  # noqa: E402


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plot_convergence(rows: list[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        if r.get("rounds"):
            ax.plot(r["rounds"], r["pr_auc_per_round"], marker="o", ms=3, label=r["cell"])
    ax.set_xlabel("round")
    ax.set_ylabel("pooled PR-AUC (validation)")
    ax.set_title("Convergence per cell")
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def plot_cost(rows: list[dict[str, Any]]) -> str:
    """Mean round time and upload per round by backend, one bar per model."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    backends = sorted({r["secure_agg"] for r in rows if r.get("mean_round_s") is not None})
    models = sorted({r["model"] for r in rows})
    width = 0.8 / max(len(models), 1)
    for ax, key, label, scale in (
        (axes[0], "mean_round_s", "seconds per round", 1.0),
        (axes[1], "bytes_up_per_round", "MB uploaded per round (all banks)", 1e6),
    ):
        for m, model in enumerate(models):
            means = []
            for backend in backends:
                vals = [
                    r[key] / scale
                    for r in rows
                    if r["model"] == model and r["secure_agg"] == backend and r.get(key)
                ]
                means.append(sum(vals) / len(vals) if vals else 0.0)
            ax.bar([i + m * width for i in range(len(backends))], means, width, label=model)
        ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(backends))])
        ax.set_xticklabels(backends)
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle("Cost per secure-aggregation backend (mean over the other axes)")
    return _png(fig)


def plot_epsilon(rows: list[dict[str, Any]]) -> str:
    """PR-AUC against the target ε per (model, backend); "off" = no DP, drawn last."""
    levels = sorted({r["dp_epsilon"] for r in rows if r["dp_epsilon"]}) + [0.0]
    labels = [f"{e:g}" if e else "off" for e in levels]
    series: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("pr_auc") is not None:
            series[(r["model"], r["secure_agg"])][r["dp_epsilon"]].append(r["pr_auc"])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for (model, backend), by_eps in sorted(series.items()):
        xs = [i for i, e in enumerate(levels) if e in by_eps]
        ys = [sum(by_eps[levels[i]]) / len(by_eps[levels[i]]) for i in xs]
        ax.plot(xs, ys, marker="o", label=f"{model} · {backend}")
    ax.set_xticks(range(len(levels)))
    ax.set_xticklabels(labels)
    ax.set_xlabel("target ε per bank")
    ax.set_ylabel("pooled PR-AUC (test, selected round)")
    ax.set_title("Privacy vs utility")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_baselines(rows: list[dict[str, Any]]) -> str | None:
    """Federated vs local-only vs centralized PR-AUC per cell (when baselines ran)."""
    done = [r for r in rows if r.get("local_only_pr_auc") is not None]
    if not done:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(done)), 3.8))
    width = 0.27
    for k, (key, label) in enumerate(
        (
            ("pr_auc", "federated"),
            ("local_only_pr_auc", "local-only (pooled)"),
            ("centralized_pr_auc", "centralized"),
        )
    ):
        ax.bar(
            [i + k * width for i in range(len(done))],
            [r.get(key) or 0 for r in done],
            width,
            label=label,
        )
    ax.set_xticks([i + width for i in range(len(done))])
    ax.set_xticklabels([r["cell"] for r in done], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("PR-AUC")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Federated vs each bank alone vs pooled data")
    return _png(fig)


def write_html(rows: list[dict[str, Any]], out: Path, title: str) -> Path:
    """OUT/report.html: table + plots as inline PNGs."""
    table = table_rows(rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row.values()) + "</tr>"
        for row in table
    )
    plots = [
        ("Convergence", plot_convergence(rows)),
        ("Cost per backend", plot_cost(rows)),
        ("ε vs PR-AUC", plot_epsilon(rows)),
        ("Federated vs local-only vs centralized", plot_baselines(rows)),
    ]
    figures = "".join(
        f'<h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" '
        f'src="data:image/png;base64,{data}">'
        for name, data in plots
        if data
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}} img{{max-width:100%}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>Metrics: each bank's held-out test split (last 20% of its time range), sample-weighted.
ε spent: the largest per-bank ε over the run. Cost: wall time per round and bytes the banks
upload per round, all banks together.</p>
<table><tr>{head}</tr>{body}</table>
{figures}
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path
