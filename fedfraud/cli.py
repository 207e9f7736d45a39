"""`fedfraud` command line (Typer + Rich). User mistakes print one line and exit with code 2."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedfraud.cli_checks import (
    check_backend_options,
    check_cert_args,
    drop_stale_synthetic_data,
    listen,
)
from fedfraud.cli_privacy import privacy_audit
from fedfraud.cli_roster import register as register_roster_commands
from fedfraud.config import RunConfig
from fedfraud.errors import FedfraudError
from fedfraud.io import atomic_write, atomic_write_text, check_out_file, prepare_out_dir

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Federated fraud detection across banks with secure aggregation and DP.",
)
data_app = typer.Typer(no_args_is_help=True, help="Make or prepare consortium data.")
keys_app = typer.Typer(no_args_is_help=True, help="Provision secure-aggregation key material.")
app.add_typer(data_app, name="data")
app.add_typer(keys_app, name="keys")
certs_app = typer.Typer(no_args_is_help=True, help="TLS certificates and SuperNode auth keys.")
audit_app = typer.Typer(no_args_is_help=True, help="Check an operator's audit log.")
app.add_typer(certs_app, name="certs")
app.add_typer(audit_app, name="audit")
register_roster_commands(app)  # fedfraud/cli_roster.py: roster init/new-bank/add/show, app-hash
app.command("privacy-audit")(privacy_audit)
console = Console()
err_console = Console(stderr=True)
MLFLOW_URI_HELP = (
    "Log the run to MLflow: a folder (mlruns), sqlite:///mlflow.db or http(s)://HOST:PORT. "
    "Needs the fedfraud\\[mlflow] extra."
)
FORCE_HELP = "Write into a non-empty --out, replacing what is there."


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option(help="Output folder (one sub-folder per bank).")],
    banks: Annotated[int, typer.Option(help="Number of banks.")] = 5,
    transactions: Annotated[int, typer.Option(help="Total transactions.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    force: Annotated[bool, typer.Option(help=FORCE_HELP)] = False,
) -> None:
    """Generate a synthetic consortium: DIR/bank-XX/transactions.parquet + manifest.json."""
    from fedfraud.data.store import bank_name, remove_stale_banks
    from fedfraud.data.synth import check_args, write_consortium

    check_args(banks, transactions, seed)
    prepare_out_dir(out, force=force)
    if force:  # --force means: this folder holds the new consortium only
        remove_stale_banks(out, keep={bank_name(b) for b in range(banks)})
    with _status(f"generating {transactions:,} transactions for {_count(banks, 'bank')}"):
        manifest = write_consortium(out, banks, transactions, seed)
    _print_manifest(manifest, out)


@data_app.command("prepare")
def data_prepare(
    source: Annotated[Path, typer.Argument(help="CSV or Parquet file.")],
    out: Annotated[Path, typer.Option(help="Output folder (one sub-folder per bank).")],
    banks: Annotated[int, typer.Option(help="Split into this many banks.")] = 5,
    format: Annotated[
        str, typer.Option("--format", help="auto|csv|parquet|paysim|ulb|txgraph")
    ] = "auto",
    mapping: Annotated[Path | None, typer.Option(help="Column mapping (JSON/TOML).")] = None,
    partition: Annotated[str, typer.Option(help="iid|dirichlet")] = "dirichlet",
    alpha: Annotated[float, typer.Option(help="Dirichlet concentration.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    force: Annotated[bool, typer.Option(help=FORCE_HELP)] = False,
) -> None:
    """Split one dataset into N bank folders (research: IID or Dirichlet non-IID)."""
    from fedfraud.data.partition import prepare_banks

    if banks < 1:
        raise FedfraudError(f"--banks must be at least 1, got {banks}")
    prepare_out_dir(out, force=force, create=False)
    with _status(f"splitting {source} into {_count(banks, 'bank')}"):
        manifest = prepare_banks(source, out, format, mapping, banks, partition, alpha, seed)
    _print_manifest(manifest, out)
    if manifest.get("partition_unit") == "row":
        err_console.print(
            "note: no sender/receiver account columns were found or mapped, so they are not in "
            f"{out}; the GNN (--model gnn) needs them: map them with --mapping "
            '\'{"sender": "<column>", "receiver": "<column>"}\' to keep them',
            highlight=False,
            soft_wrap=True,
        )


def _register_data_export() -> None:
    from fedfraud.cli_export import data_export

    data_app.command("export")(data_export)


_register_data_export()


def _print_manifest(manifest: dict[str, Any], out: Path) -> None:
    table = Table(title=f"consortium in {out}")
    for col in ("bank", "transactions", "fraud", "fraud rate"):
        table.add_column(col, justify="right")
    for b in manifest["banks"]:
        table.add_row(
            b["bank"], f"{b['transactions']:,}", f"{b['fraud']:,}", f"{100 * b['fraud_rate']:.2f}%"
        )
    console.print(table)
    if manifest.get("unlabelled_dropped"):
        console.print(f"dropped {manifest['unlabelled_dropped']:,} unlabelled transactions")
    _warn_no_test_fraud(manifest)


def _warn_no_test_fraud(manifest: dict[str, Any]) -> None:
    """Banks whose test split (the newest rows) holds no fraud: their recall is undefined."""
    empty = [b["bank"] for b in manifest.get("banks", []) if b.get("test_fraud") == 0]
    if empty:
        err_console.print(
            f"warning: {', '.join(empty)} {'has' if len(empty) == 1 else 'have'} no fraud in "
            "the test split (the newest 20% of rows), so recall and PR-AUC there show as '–'; "
            "use more transactions, fewer banks or another seed",
            highlight=False,
            soft_wrap=True,
        )


@keys_app.command("init")
def keys_init(
    out: Annotated[Path, typer.Option(help="Folder for the key files (keep it out of git).")],
    force: Annotated[bool, typer.Option(help="Overwrite existing key files.")] = False,
) -> None:
    """CKKS keys: the banks' secret context and the operator's public context."""
    from secure_agg.keys import init_keys

    prepare_out_dir(out, force=True, create=False)  # a file or unwritable place; keys: below
    paths = init_keys(out, overwrite=force)
    console.print(f"[green]wrote[/] CKKS key material to {out}:")
    for name, path in vars(paths).items():
        console.print(f"  {name}: {path}")
    console.print("Give the secret context to every bank only; the operator gets the public one.")


@keys_app.command("parties")
def keys_parties(
    out: Annotated[Path, typer.Option(help="Folder for the committee's key files.")],
    parties: Annotated[int, typer.Option(help="Number of CrypTen compute parties.")] = 3,
    force: Annotated[bool, typer.Option(help="Overwrite existing key files.")] = False,
) -> None:
    """CrypTen committee: one key pair per compute party plus the public parties.json."""
    from secure_agg.crypten_committee import init_parties

    prepare_out_dir(out, force=True, create=False)  # a file or unwritable place; keys: below
    init_parties(out, parties, overwrite=force)
    console.print(f"[green]wrote[/] {parties} party key pairs and parties.json to {out}")


@certs_app.command("init")
def certs_init(
    out: Annotated[Path, typer.Option(help="Output folder (keep it out of git).")] = Path(
        "certs/generated"
    ),
    banks: Annotated[
        int | None,
        typer.Option(help="Node-auth keys for bank-00 .. bank-(N-1) (default: 3 if new)."),
    ] = None,
    bank: Annotated[list[str] | None, typer.Option(help="A bank id (repeatable).")] = None,
    san: Annotated[
        str, typer.Option(help="Server certificate SANs.")
    ] = "DNS:localhost,IP:127.0.0.1",
    days: Annotated[int, typer.Option(help="Server certificate validity (days).")] = 397,
    renew_server: Annotated[bool, typer.Option(help="Issue a new server certificate.")] = False,
    rotate_banks: Annotated[bool, typer.Option(help="Replace the named banks' keys.")] = False,
    bank_keys_only: Annotated[
        bool, typer.Option(help="Only node-auth keys (a bank making its own pair).")
    ] = False,
) -> None:
    """Consortium CA, SuperLink TLS certificate and per-bank SuperNode auth keys
    (runs certs/generate.sh; existing files are kept)."""
    import os
    import shutil
    import subprocess

    script = Path(__file__).resolve().parents[1] / "certs" / "generate.sh"
    if not script.is_file():
        raise FedfraudError(f"{script} not found; run this from a fedfraud source checkout")
    check_cert_args(san, days, banks, bank or [])
    prepare_out_dir(out, force=True, create=False)  # existing credentials are kept, not replaced
    cmd = ["bash", str(script), "--out", str(out), "--san", san, "--days", str(days)]
    if bank:
        cmd += [a for b in bank for a in ("--bank", b)]
    elif banks is not None:
        cmd += ["--banks", str(banks)]
    cmd += ["--renew-server"] * renew_server + ["--rotate-banks"] * rotate_banks
    cmd += ["--bank-keys-only"] * bank_keys_only
    created = not out.exists()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")} if not created else {}
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)
    sys.stdout.write(done.stdout)
    if done.returncode == 0:
        sys.stderr.write(done.stderr)
        return
    # Leave no half-made CA or key behind: drop what this run created, keep what was there.
    if created:
        shutil.rmtree(out, ignore_errors=True)
    else:
        for path in sorted(out.rglob("*"), reverse=True):
            if path not in before and path.is_file():
                path.unlink()
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    reason = lines[-1].removeprefix("error: ") if lines else f"exit {done.returncode}"
    raise FedfraudError(f"certs init failed: {reason} (nothing new was kept in {out})")


@audit_app.command("verify")
def audit_verify(
    file: Annotated[Path, typer.Argument(help="An audit.jsonl written by the operator.")],
    head: Annotated[
        str | None, typer.Option(help="SHA-256 the last entry must have (kept out of band).")
    ] = None,
    bank_heads: Annotated[
        list[Path] | None,
        typer.Option(help="A bank's audit-heads.jsonl (repeatable): every head it kept."),
    ] = None,
    roster: Annotated[
        Path | None, typer.Option(help="Consortium roster.json: check the banks' signatures.")
    ] = None,
    allow_unfinished: Annotated[
        bool, typer.Option("--allow-unfinished", help="Accept a run still in progress.")
    ] = False,
) -> None:
    """Verify the hash chain and the operator's signatures; exit 2 naming the first edited,
    dropped or reordered entry, a cut-off end, or a head a bank kept that the log lost."""
    from fedfraud.audit import Head, read_bank_heads, read_entries, verify

    anchors = []
    # The operator's checkpoint records the entry it follows: a log cut short fails on it.
    state = file.parent / "checkpoint" / "state.json"
    if state.is_file():
        saved = json.loads(state.read_text()).get("audit") or {}
        if saved.get("entries"):
            anchors.append(Head(int(saved["entries"]), str(saved["sha256"])))
    kept: list[Head] = []
    keys: set[str] = set()
    if bank_heads:
        entries = read_entries(file)
        run = str(entries[0].get("run", "")) if entries else ""
        for path in bank_heads:
            heads, seen = read_bank_heads(path, run)
            kept += heads
            keys |= seen
        if len(keys) > 1:
            raise FedfraudError("the banks saw more than one operator key for this run")
    banks = None
    if roster is not None:
        # Lazy: the roster lives with the secure-aggregation keys (secure_agg/roster.py).
        from secure_agg.roster import Roster, statement

        banks = (Roster.load(roster).verify, statement)
    result = verify(
        file,
        head=head,
        anchors=anchors,
        signed=True,
        finished=not allow_unfinished,
        bank_heads=kept,
        operator_key=next(iter(keys)) if keys else None,
        banks=banks,
    )
    checks = ["chain intact", "operator signatures valid"]
    if anchors:
        checks.append(f"checkpoint entry {anchors[0].entries} found")
    if kept:
        checks.append(f"all {len(kept)} heads the banks kept found")
    if banks is not None:
        checks.append("bank signatures valid")
    console.print(
        f"[green]ok[/]: {result.entries} entries, {', '.join(checks)}; head sha256 {result.sha256}",
        soft_wrap=True,
    )


def run_config_sets(items: list[str]) -> dict[str, str]:
    """`--set KEY=VALUE` items as RunConfig overrides; unknown keys are a user error."""
    from dataclasses import fields

    known = {f.name for f in fields(RunConfig)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        name = key.strip().replace("-", "_")
        if not sep or name not in known:
            raise FedfraudError(
                f"--set {item!r}: write KEY=VALUE with a run-config key (e.g. cross-bank=sketch)"
            )
        out[name] = value.strip()
    return out


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Run folder for results.json, report.md, plots.")],
    config: Annotated[Path | None, typer.Option(help="TOML config (\\[fedfraud] table).")] = None,
    banks: Annotated[int | None, typer.Option(help="Number of banks.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Federated rounds.")] = None,
    model: Annotated[str | None, typer.Option(help="mlp|gnn")] = None,
    secure_agg: Annotated[str | None, typer.Option(help="none|ckks|secagg+|crypten")] = None,
    dp_epsilon: Annotated[float | None, typer.Option(help="Target ε per bank (0 = off).")] = None,
    dp_delta: Annotated[float | None, typer.Option(help="DP δ.")] = None,
    data: Annotated[Path | None, typer.Option(help="Data file or bank folders.")] = None,
    format: Annotated[
        str | None, typer.Option("--format", help="synthetic|csv|parquet|paysim|ulb|txgraph|banks")
    ] = None,
    mapping: Annotated[Path | None, typer.Option(help="Column mapping for csv/parquet.")] = None,
    transactions: Annotated[int | None, typer.Option(help="Synthetic transactions.")] = None,
    local_epochs: Annotated[int | None, typer.Option(help="Local epochs per round.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    client_cpus: Annotated[
        float | None, typer.Option(help="CPUs per simulated bank (0.5: two banks per core).")
    ] = None,
    no_baselines: Annotated[
        bool, typer.Option("--no-baselines", help="Skip local-only/centralized.")
    ] = False,
    secure_agg_option: Annotated[
        list[str] | None,
        typer.Option(help="Backend option KEY=VALUE, repeatable (e.g. secagg-num-shares=5)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Run-config KEY=VALUE, repeatable (e.g. cross-bank=sketch)."),
    ] = None,
    mlflow_uri: Annotated[str | None, typer.Option(help=MLFLOW_URI_HELP)] = None,
    mlflow_experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "fedfraud",
    verbose: Annotated[bool, typer.Option("-v", help="Show Flower/Ray logs.")] = False,
    force: Annotated[
        bool, typer.Option(help="Replace a finished run in --out (results, report, model).")
    ] = False,
) -> None:
    """Run a whole consortium locally (Flower simulation engine) plus baselines."""
    flags = {
        "num_banks": banks,
        "num_rounds": rounds,
        "model": model,
        "secure_agg": secure_agg,
        "dp_epsilon": dp_epsilon,
        "dp_delta": dp_delta,
        "mapping": str(mapping) if mapping else None,
        "transactions": transactions,
        "local_epochs": local_epochs,
        "seed": seed,
        "client_cpus": client_cpus,
        "data_format": format,
    }
    if data is not None:
        flags["data_path"] = str(data)
        if format is None:
            flags["data_format"] = "banks" if data.is_dir() else "csv"
            if data.suffix == ".parquet":
                flags["data_format"] = "parquet"
    overrides = {**run_config_sets(set_ or []), **{k: v for k, v in flags.items() if v is not None}}
    options = {}
    for item in secure_agg_option or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise FedfraudError(f"--secure-agg-option {item!r}: write KEY=VALUE")
        options[key.strip()] = value.strip()
    cfg = RunConfig.from_toml(config, overrides) if config else RunConfig.from_mapping(overrides)
    if cfg.data_format in ("csv", "parquet", "paysim", "ulb") and cfg.data_path:
        cfg = cfg.replace(data_format=cfg.data_format)
    check_backend_options(cfg.secure_agg, options)
    from simulations.runner import check_resources

    check_resources(cfg)
    prepare_out_dir(out, force=force, create=False)
    if force:
        drop_stale_synthetic_data(out, cfg)
    if mlflow_uri is not None:  # a typo'd scheme or missing mlflow fails now, not after the run
        from fedfraud.tracking import client

        client(mlflow_uri)
    _quiet_libraries(verbose)
    from simulations.report import summary_row
    from simulations.runner import simulate as run

    console.print(
        f"[bold]fedfraud simulate[/]: {_count(cfg.num_banks, 'bank')} · {cfg.model} · "
        f"secure-agg {cfg.secure_agg} · DP {'ε=' + str(cfg.dp_epsilon) if cfg.dp else 'off'}"
        f" · {_count(cfg.num_rounds, 'round')}"
    )
    if cfg.data_format == "synthetic" and not cfg.data_dir:
        console.print(
            f"  no --data given: using {_count(cfg.transactions, 'synthetic transaction')} in "
            f"{out / 'data'} (pass --data DIR for bank folders, e.g. from `fedfraud data "
            "generate`)",
            highlight=False,
            soft_wrap=True,
        )
    import shutil

    new_out, started = not out.exists(), []
    with _status("preparing data") as status:

        def progress(event: str, info: dict[str, Any]) -> None:
            if event == "data":
                started.append(True)
                for warning in info.get("warnings", []):
                    err_console.print(f"warning: {warning}", highlight=False, soft_wrap=True)
                status.update("federating (starting Flower simulation engine)")
            elif event == "round":
                console.print(
                    f"  round {info['round']:>3}/{cfg.num_rounds}  validation PR-AUC "
                    f"{_num(info['metrics'].get('pooled', {}).get('pr_auc'))}  "
                    f"{info['wall_s']:.1f}s  "
                    f"{_count(info['num_results'], 'bank')} ok, {info['num_failures']} failed"
                )
                if console.is_terminal:  # a log already has the round's line
                    status.update(f"federating: round {info['round']}/{cfg.num_rounds} done")
            elif event == "baselines":
                status.update("baselines: local-only per bank and centralized")

        try:
            results = run(cfg, out, baselines=not no_baselines, progress=progress, options=options)
        except FedfraudError:
            if new_out and not started:  # bad data found before federating: leave nothing
                shutil.rmtree(out, ignore_errors=True)
            raise
    _print_rows([summary_row(results, out.name)])
    console.print(f"wrote {out / 'results.json'} and {out / 'report.md'}")
    if mlflow_uri is not None:
        _track_runs([out], mlflow_uri, mlflow_experiment)


@app.command()
def track(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (with results.json).")],
    mlflow_uri: Annotated[str, typer.Option(help=MLFLOW_URI_HELP)],
    mlflow_experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "fedfraud",
) -> None:
    """Log finished run folders to MLflow (what simulate --mlflow-uri does after a run)."""
    _track_runs(runs, mlflow_uri, mlflow_experiment)


def _track_runs(runs: list[Path], uri: str, experiment: str) -> None:
    from fedfraud.tracking import log_run

    for run in runs:
        if not (run / "results.json").is_file():
            raise FedfraudError(
                f"{run / 'results.json'} not found; pass folders written by `fedfraud simulate`"
            )
    for run in runs:
        with console.status(f"logging {run} to MLflow at {uri}"):
            try:
                run_id = log_run(run, uri, experiment)
            except FedfraudError as exc:
                raise FedfraudError(
                    f"{exc} (results are kept in {run}; log them later with: fedfraud track "
                    f"{run} --mlflow-uri URI)"
                ) from exc
        console.print(f"logged {run} to MLflow at {uri}: experiment {experiment}, run {run_id}")


@app.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="Sweep TOML: \\[fedfraud] base + \\[sweep] axes.")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: \\[sweep] out).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="List the cells and exit.")] = False,
    mlflow_uri: Annotated[str | None, typer.Option(help=MLFLOW_URI_HELP)] = None,
    mlflow_experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "fedfraud",
    verbose: Annotated[bool, typer.Option("-v", help="Show Flower/Ray logs.")] = False,
) -> None:
    """Grid of simulations (backend × DP ε × model × banks, ...): table, CSV and report.html.
    Re-running resumes: finished cells are skipped (and logged to MLflow if not yet)."""
    from simulations.sweep import load_sweep, run_sweep, table_rows, write_tables
    from simulations.sweep_report import write_html

    plan = load_sweep(config, out)
    prepare_out_dir(plan.out, force=True, create=False)  # sweeps resume: only a file or an
    # unwritable place is refused here
    console.print(f"[bold]fedfraud sweep[/]: {_count(len(plan.cells), 'cell')} into {plan.out}")
    if dry_run:
        for cell in plan.cells:
            console.print(f"  {cell.name}")
        return
    track = None
    if mlflow_uri is not None:
        from simulations.sweep import mlflow_tracker

        track = mlflow_tracker(mlflow_uri, mlflow_experiment, config.stem)
    _quiet_libraries(verbose)

    def progress(event: str, info: dict[str, Any]) -> None:
        where = f"[{info['index']}/{info['total']}] {info['cell']}"
        if event == "skip":
            console.print(f"  {where}: already done, skipped")
        elif event == "start":
            console.print(f"  {where}: running")
        elif info.get("status") == "failed":
            console.print(f"  {where}: [red]failed[/]: {info['error']}", soft_wrap=True)
        else:
            note = " (not logged to MLflow)" if "tracking_error" in info else ""
            console.print(f"  {where}: done in {info['wall_s']:.0f}s{note}")

    rows = run_sweep(plan, progress, track=track)
    md, csv_path = write_tables(rows, plan.out)
    html_path = write_html(rows, plan.out, f"fedfraud sweep: {config.stem}")
    _print_rows(table_rows(rows))
    console.print(f"wrote {md}, {csv_path} and {html_path}")
    failed = [r["cell"] for r in rows if r["status"] == "failed"]
    if failed:
        raise FedfraudError(
            f"{len(failed)} cell(s) failed: {', '.join(failed)} (errors in {plan.out}/sweep.json);"
            " fix and re-run to resume"
        )
    untracked = [r for r in rows if "tracking_error" in r]
    if untracked:
        raise FedfraudError(
            f"{untracked[0]['tracking_error']} ({len(untracked)} finished cell(s) not logged; "
            f"results are kept in {plan.out}: re-run the same command to log them)"
        )
    if mlflow_uri is not None:
        console.print(f"logged the cells to MLflow at {mlflow_uri}: experiment {mlflow_experiment}")


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (with results.json).")],
    out: Annotated[Path | None, typer.Option(help="Also write the table as markdown.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
) -> None:
    """Compare runs side by side."""
    from simulations.report import markdown_table, summary_row

    if out is not None:
        check_out_file(out, force=force)
    rows = []
    for run in runs:
        path = run / "results.json"
        if not path.exists():
            raise FedfraudError(f"{path} not found; pass folders written by `fedfraud simulate`")
        try:
            rows.append(summary_row(json.loads(path.read_text()), run.name))
        except json.JSONDecodeError as exc:
            raise FedfraudError(
                f"{path} is not valid JSON ({exc.msg}); re-run that simulation"
            ) from exc
    _print_rows(rows)
    if out:
        atomic_write_text(out, markdown_table(rows) + "\n")


@app.command()
def score(
    run: Annotated[Path, typer.Argument(help="Run folder (model.pt + model.json).")],
    data: Annotated[Path, typer.Option(help="This bank's folder; its transactions are history.")],
    input: Annotated[
        str, typer.Argument(help="CSV/Parquet file, or - for JSON lines on stdin.")
    ] = "-",
    target_fpr: Annotated[
        float, typer.Option(help="Alert threshold for this FPR on the bank's validation split.")
    ] = 0.01,
    quantize: Annotated[bool, typer.Option(help="int8 dynamic quantization (MLP).")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Write a .csv/.parquet here (default: JSON lines).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
) -> None:
    """Score transactions: fraud probability and alert decision, one per transaction."""
    from fedfraud.scoring import Scorer, read_transactions, score_json_lines

    if out is not None:
        check_out_file(out, force=force, suffixes=(".csv", ".parquet"))
        if input != "-" and Path(input).resolve() == out.resolve():
            raise FedfraudError(f"--out {out} is the input file; write the scores elsewhere")
    frame = read_transactions(Path(input)) if input != "-" else None
    import torch

    torch.set_num_threads(1)  # one transaction at a time: threads only add overhead
    scorer = Scorer(run, data, target_fpr, quantize)
    if frame is not None:
        scored = scorer.score_frame(frame)
        alerts, total = int((scored["decision"] == "alert").sum()), len(scored)
        if out is None:
            for row in scored.to_dict("records"):
                sys.stdout.write(json.dumps(row, default=str) + "\n")
        elif out.suffix == ".parquet":
            atomic_write(out, scored.to_parquet(None, index=False), durable=False)
        else:
            atomic_write_text(out, scored.to_csv(index=False))
    else:
        alerts = total = 0
        for result in score_json_lines(scorer, sys.stdin):
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
            total, alerts = total + 1, alerts + (result["decision"] == "alert")
    t = scorer.threshold
    err_console.print(
        f"scored {_count(total, 'transaction')}: {_count(alerts, 'alert')} (threshold "
        f"{t.value:.4f} for target FPR {t.target_fpr:.2%}; on {scorer.bank}'s validation "
        f"split: FPR {t.val_fpr:.2%}, recall {_num(t.val_recall)})"
        + (f"; wrote {out}" if out else ""),
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def serve(
    run: Annotated[Path, typer.Argument(help="Run folder (model.pt + model.json).")],
    data: Annotated[Path, typer.Option(help="This bank's folder; its transactions are history.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    target_fpr: Annotated[
        float, typer.Option(help="Alert threshold for this FPR on the bank's validation split.")
    ] = 0.01,
    quantize: Annotated[bool, typer.Option(help="int8 dynamic quantization (MLP).")] = False,
    auth_jwks: Annotated[
        Path | None, typer.Option(help="JWKS file with the gateway's token-signing public keys.")
    ] = None,
    auth_public_key: Annotated[
        Path | None, typer.Option(help="Or one PEM public key that signs the gateway's tokens.")
    ] = None,
    auth_issuer: Annotated[str | None, typer.Option(help="Required token issuer (iss).")] = None,
    auth_audience: Annotated[
        str | None, typer.Option(help="Required token audience (aud): this service's name.")
    ] = None,
    auth_scope: Annotated[str, typer.Option(help="Scope a token needs to score.")] = "fraud:score",
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without token checks (local trials only).")
    ] = False,
) -> None:
    """Real-time scoring service: POST /score, POST /score/batch, GET /health (FastAPI).
    Scoring routes need a bearer JWT from the bank's gateway unless --no-auth."""
    if not 1 <= port <= 65535:
        raise FedfraudError(f"--port must be 1..65535, got {port}")
    from fedfraud.auth import TokenVerifier

    if no_auth and (auth_jwks or auth_public_key or auth_issuer or auth_audience):
        raise FedfraudError(
            "--no-auth turns token checks off; drop it or drop the --auth-* options"
        )
    verifier = None
    if not no_auth:
        verifier = TokenVerifier.from_files(
            issuer=auth_issuer,
            audience=auth_audience,
            scope=auth_scope,
            jwks=auth_jwks,
            public_key=auth_public_key,
        )
    sock = listen(host, port)  # before "serving at": a busy port is an error, not a crash later
    import torch
    import uvicorn

    from fedfraud.scoring import Scorer
    from fedfraud.serve import create_app

    torch.set_num_threads(1)
    try:
        scorer = Scorer(run, data, target_fpr, quantize)
    except BaseException:
        sock.close()
        raise
    t = scorer.threshold
    where = f"[{host}]" if ":" in host else host
    console.print(
        f"[bold]fedfraud serve[/]: {scorer.card.model} for {scorer.bank} "
        f"({scorer.history_size:,} transactions of history), threshold {t.value:.4f} "
        f"(validation FPR {t.val_fpr:.2%}); serving at http://{where}:{port}/docs",
        soft_wrap=True,
        highlight=False,
    )
    console.print(
        f"  auth: {verifier.describe()}"
        if verifier
        else "  auth: [bold red]OFF[/] (--no-auth): anyone who reaches this port can score",
        soft_wrap=True,
        highlight=False,
    )
    server = uvicorn.Server(uvicorn.Config(create_app(scorer, auth=verifier), log_level="warning"))
    server.run(sockets=[sock])


@app.command()
def explain(
    run: Annotated[Path, typer.Argument(help="Run folder (model.pt + model.json).")],
    data: Annotated[Path, typer.Option(help="This bank's folder (explained locally).")],
    split: Annotated[str, typer.Option(help="Rows to explain: train|val|test|all.")] = "test",
    target_fpr: Annotated[
        float, typer.Option(help="Alert threshold for this FPR on the bank's validation split.")
    ] = 0.01,
    max_alerts: Annotated[int, typer.Option(help="Explain at most this many alerts.")] = 50,
    top: Annotated[int, typer.Option(help="Top contributing features per alert.")] = 5,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default RUN/explain-BANK).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an earlier explanation in --out.")] = False,
) -> None:
    """SHAP values of the global model's alerts at one bank: top features per alert + plot."""
    if top < 1:
        raise FedfraudError("--top must be at least 1")
    from fedfraud.explain import explain_bank, write_explanation

    out = out or run / f"explain-{data.name}"
    if run.is_dir():  # a missing run folder gets its own message from explain_bank
        prepare_out_dir(out, force=force, create=False)
    with _status(f"explaining {data.name}'s {split} alerts (SHAP)"):
        expl = explain_bank(run, data, split, target_fpr, max_alerts)
        json_path, png_path = write_explanation(expl, out, top)
    title = f"{_count(expl.num_alerts, 'alert')} on {expl.bank}'s {split} split (SHAP, log-odds)"
    table = Table(title=title)
    for col in ("tx", "probability", "fraud", "top features"):
        table.add_column(col, justify="left" if col == "top features" else "right")
    for alert in expl.alerts(min(top, 3))[:20]:
        feats = ", ".join(f"{f['feature']} {f['shap']:+.2f}" for f in alert["top_features"])
        table.add_row(
            str(alert["tx_id"]), f"{alert['fraud_probability']:.3f}", str(alert["is_fraud"]), feats
        )
    console.print(table)
    console.print(f"wrote {json_path} and {png_path}")


class _Status:
    """Rich's spinner on a terminal; plain lines (one per step) in a pipe or CI log, where
    the spinner shows nothing and a long Flower start-up would look like a hang."""

    def __init__(self, spinner: Any) -> None:
        self._spinner = spinner

    def update(self, text: str) -> None:
        if self._spinner is not None:
            self._spinner.update(text)
        else:
            console.print(f"  {text} ...", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _status(text: str) -> Iterator[_Status]:
    if console.is_terminal:
        with console.status(text) as spinner:
            yield _Status(spinner)
        return
    status = _Status(None)
    status.update(text)
    yield status


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "–"


def _print_rows(rows: list[dict[str, str]]) -> None:
    """One run as a metric/value list; several as a table that is never cut to the terminal
    (an 80-column pipe or CI log would otherwise turn every number into an ellipsis)."""
    if len(rows) == 1:
        table = Table(show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for key, value in rows[0].items():
            table.add_row(key, value)
        console.print(table)
        return
    table = Table()
    for col in rows[0]:
        table.add_column(
            col, justify="right", min_width=max(len(col), *(len(r[col]) for r in rows))
        )
    for row in rows:
        table.add_row(*row.values())
    console.print(table, width=max(console.width, console.measure(table).maximum), crop=False)


def _quiet_libraries(verbose: bool) -> None:
    import os
    import warnings

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if verbose:
        return
    # Flower sets its logger to DEBUG when first imported (and opacus gives the root logger a
    # handler that prints what it passes on), so import it first or the level below is undone.
    import flwr.common.logger  # noqa: F401

    # Flower warns that run_simulation is deprecated in favour of `flwr run`; we support both.
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _plain_notices()


def _plain_notices() -> None:
    """fedfraud's own warnings (e.g. the audit-log notice) as clean one-line notes on stderr,
    not raw `WARNING:fedfraud.server:...` records through whatever root handler is set."""
    logger = logging.getLogger("fedfraud")
    if not any(isinstance(h, _NoticeHandler) for h in logger.handlers):
        logger.addHandler(_NoticeHandler(logging.WARNING))
    logger.propagate = False


class _NoticeHandler(logging.Handler):
    """`note: MESSAGE` on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"note: {record.getMessage()}\n")


def main() -> None:
    """Console entry point: user errors → one line on stderr, exit code 2."""
    try:
        app(standalone_mode=False)
    except FedfraudError as exc:
        # escape: messages name TOML tables ([sweep]) that Rich would read as markup
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
