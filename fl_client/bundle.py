"""The app-bundle hash a bank pins in its policy (`app-hash`): one SHA-256 over every file
Flower ships in the FAB, pyproject.toml included.

Flower's own builder (`flwr build` / `flwr run`) picks the files (the pyproject's fab-include /
fab-exclude rules, .gitignore, its built-in patterns) and writes a CONTENT manifest of
`path,sha256,bits` lines, one per shipped file, the pyproject it ships first. The hash is the
SHA-256 of that manifest, so it changes with any shipped file, an added package, or a changed
`clientapp=`; and it is the same for the source tree the bank reviewed (`fedfraud app-hash DIR`)
and the bundle the SuperNode installed and runs (the ClientApp hashes its own folder).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from functools import lru_cache
from pathlib import Path

from flwr.cli.build import build_fab_from_files
from flwr.cli.utils import collect_files

from fedfraud.errors import ConfigError

MANIFEST = ".info/CONTENT"


def app_dir() -> Path:
    """The folder this ClientApp runs from (the installed FAB, or the source tree)."""
    return Path(__file__).resolve().parents[1]


def app_hash(directory: Path) -> str:
    """SHA-256 of the CONTENT manifest of the FAB Flower builds from `directory`."""
    directory = Path(directory).expanduser().resolve()
    if not (directory / "pyproject.toml").is_file():
        raise ConfigError(f"{directory} holds no pyproject.toml: point at the app's folder")
    try:
        fab, _ = build_fab_from_files(collect_files(directory))
    except ValueError as exc:
        raise ConfigError(f"{directory} is not a valid Flower app: {exc}") from exc
    manifest = zipfile.ZipFile(io.BytesIO(fab)).read(MANIFEST)
    return hashlib.sha256(manifest).hexdigest()


@lru_cache(maxsize=4)
def running_app_hash(directory: Path | None = None) -> str:
    """The hash of the code this process runs (computed once per process)."""
    return app_hash(directory or app_dir())
