"""`fedfraud roster ...` (the consortium's key ceremony) and `fedfraud app-hash DIR` (the
code a bank pins). Registered on the main app by `register(app)`; crypto modules load lazily."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedfraud.errors import ConfigError

roster_app = typer.Typer(
    no_args_is_help=True, help="The consortium roster: every bank's signing and key-agreement key."
)
console = Console(soft_wrap=True)
ENTRY_FILE = "roster-entry.json"


@roster_app.command("init")
def roster_init(
    out: Annotated[Path, typer.Option(help="Folder for roster.json and BANK/identity.pem.")],
    banks: Annotated[int, typer.Option(help="Number of banks (bank-00, bank-01, ...).")] = 3,
) -> None:
    """A new consortium in one place (simulations, tests, a single-site pilot)."""
    from secure_agg.roster import ROSTER_FILE, init_roster

    if banks < 3:
        raise ConfigError("--banks must be at least 3: no aggregate may combine fewer banks")
    if (out / ROSTER_FILE).exists():
        raise ConfigError(f"{out / ROSTER_FILE} exists; choose another --out")
    roster = init_roster([f"bank-{i:02d}" for i in range(banks)], out)
    console.print(f"wrote {out / ROSTER_FILE} and {banks} bank identities (keep them private)")
    console.print(f"roster fingerprint: {roster.fingerprint()}")


@roster_app.command("new-bank")
def roster_new_bank(
    bank: Annotated[str, typer.Option(help="This bank's id, as the consortium lists it.")],
    out: Annotated[Path, typer.Option(help="Folder for identity.pem and roster-entry.json.")],
) -> None:
    """At a bank: make its identity (private, stays here) and the public entry to send."""
    from secure_agg.roster import IDENTITY_FILE, BankIdentity

    identity = BankIdentity.generate(bank)
    identity.save(out / IDENTITY_FILE)
    (out / ENTRY_FILE).write_text(json.dumps(identity.entry().to_json(), indent=2) + "\n")
    console.print(f"wrote {out / IDENTITY_FILE} (private) and {out / ENTRY_FILE} (send this)")


@roster_app.command("add")
def roster_add(
    roster: Annotated[Path, typer.Argument(help="roster.json (created when missing).")],
    entry: Annotated[Path, typer.Option(help="A bank's roster-entry.json.")],
) -> None:
    """Add one bank's public entry to the roster, then print the new fingerprint."""
    from secure_agg.roster import Roster, RosterEntry

    try:
        item = json.loads(entry.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{entry} is not a readable roster entry: {exc}") from exc
    current = Roster.load(roster) if roster.exists() else Roster({})
    updated = current.with_entry(RosterEntry.from_json(item))
    updated.save(roster)
    console.print(f"{roster}: {len(updated.banks)} banks, fingerprint {updated.fingerprint()}")


@roster_app.command("show")
def roster_show(roster: Annotated[Path, typer.Argument(help="roster.json")]) -> None:
    """The banks and the fingerprint every bank compares out of band and pins in its policy."""
    from secure_agg.roster import Roster

    loaded = Roster.load(roster)
    table = Table("bank", "signing key (Ed25519)", "key agreement (X25519)")
    for bank in loaded.banks:
        item = loaded.entry(bank).to_json()
        table.add_row(bank, item["sign"], item["kex"])
    console.print(table)
    console.print(f"fingerprint: {loaded.fingerprint()}")


def app_hash(
    directory: Annotated[Path, typer.Argument(help="The app's folder (with pyproject.toml).")],
) -> None:
    """Hash of every file Flower ships from DIR (the bank policy's app-hash)."""
    from fl_client.bundle import app_hash as compute

    console.print(compute(directory), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(roster_app, name="roster")
    app.command("app-hash")(app_hash)
