"""`fedfraud data export`: the synthetic generator's data in PaySim or ULB layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def data_export(
    format: Annotated[str, typer.Option("--format", help="paysim|ulb")],
    out: Annotated[Path, typer.Option(help="Output file (.csv or .parquet).")],
    banks: Annotated[int, typer.Option(help="Banks the generator simulates.")] = 5,
    transactions: Annotated[int, typer.Option(help="Total transactions.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
) -> None:
    """Write synthetic transactions as one PaySim- or ULB-format file (then: data prepare)."""
    from fedfraud.data.export import export_synthetic

    with console.status(f"exporting {transactions:,} synthetic transactions as {format}"):
        summary = export_synthetic(format, out, banks, transactions, seed, force=force)
    console.print(
        f"wrote {summary['rows']:,} transactions ({summary['fraud']:,} fraud) to "
        f"{summary['path']} in {summary['format']} format; split it into banks with "
        f"`fedfraud data prepare {summary['path']} --format {summary['format']} --out DIR`"
    )
