"""Where output goes: one place for output-folder checks and atomic file writes.

Every command that writes files asks `prepare_out_dir` / `check_out_file` first, so a finished
run, a bank's prepared data or a key folder is never overwritten without `--force`, and an
unusable target (an existing file, a read-only place such as /proc) is one clear error before any
work starts. `atomic_write` is the single write-then-rename used for files a reader may open while
they are replaced (checkpoints, ledgers, keys, rosters, run models).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from fedfraud.errors import FedfraudError


class OutputError(FedfraudError):
    """An output path that cannot be used: it exists already, is a file, or is not writable."""


def atomic_write(path: Path, data: bytes, mode: int | None = None, durable: bool = True) -> Path:
    """Write `data` to `path` through a temporary file in the same folder, then rename it over
    `path`: a reader (or a crash) sees the old file or the new one, never half of one.
    `mode` sets the permission bits from the start (a secret is never briefly world-readable);
    `durable` fsyncs the file and the folder so the rename survives a power cut."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def atomic_write_text(path: Path, text: str, durable: bool = False) -> Path:
    """`atomic_write` for UTF-8 text (reports, manifests, JSON documents)."""
    return atomic_write(path, text.encode("utf-8"), durable=durable)


def prepare_out_dir(
    path: Path,
    *,
    force: bool = False,
    flag: str = "--out",
    allowed: Iterable[str] = (),
    create: bool = True,
) -> Path:
    """Check (then create) an output folder before any work starts.

    Refuses, as an OutputError naming the fix: a path that is a file; a folder that already
    holds anything other than `allowed` names, unless `force`; a place that cannot be created
    or written. Nothing is left behind when it refuses; `create=False` only checks (the caller
    makes the folder once its own checks passed)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder; pass a new folder name")
    if path.is_dir():
        extra = sorted(p.name for p in path.iterdir() if p.name not in set(allowed))
        if extra and not force:
            shown = ", ".join(extra[:3]) + (", ..." if len(extra) > 3 else "")
            raise OutputError(
                f"{flag} {path} is not empty ({shown}); pass a new folder, or --force to "
                "overwrite what is there"
            )
        _check_writable(path, flag)
        return path
    parent = _existing_parent(path)
    if not parent.is_dir():
        raise OutputError(f"{flag} {path}: {parent} is a file, not a folder; pick another place")
    _check_writable(parent, flag, target=path)
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{flag} {path} cannot be created ({exc.strerror or exc}); pick a writable place"
        ) from exc
    return path


def check_out_file(
    path: Path, *, force: bool = False, flag: str = "--out", suffixes: Iterable[str] = ()
) -> Path:
    """Check an output file before any work: not a folder, not an existing file unless `force`,
    a wanted suffix, and a folder that exists (or can be made) and is writable."""
    path = Path(path)
    suffixes = tuple(suffixes)
    if suffixes and path.suffix not in suffixes:
        raise OutputError(f"{flag} {path}: use a {' or '.join(suffixes)} file name")
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; pass a file name")
    if path.exists() and not force:
        raise OutputError(
            f"{flag} {path} exists; pass another file name, or --force to overwrite it"
        )
    parent = _existing_parent(path.parent)
    if not parent.is_dir():
        raise OutputError(f"{flag} {path}: {parent} is a file, not a folder; pick another place")
    _check_writable(parent, flag, target=path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{flag} {path}: cannot create {path.parent} ({exc.strerror or exc})"
        ) from exc
    return path


def _existing_parent(path: Path) -> Path:
    """The nearest ancestor of `path` that exists (the current folder at worst)."""
    for candidate in (path, *path.absolute().parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _check_writable(folder: Path, flag: str, target: Path | None = None) -> None:
    """Try to create a file in `folder` (os.access is not trusted: /proc and read-only mounts
    answer it inconsistently); raise OutputError if that fails."""
    shown = target or folder
    try:
        fd, probe = tempfile.mkstemp(prefix=".fedfraud-write-check-", dir=folder)
    except OSError as exc:
        # /proc answers ENOENT to a new file: "No such file" would only confuse there.
        why = "" if exc.errno == errno.ENOENT else f" ({exc.strerror or exc})"
        raise OutputError(
            f"{flag} {shown}: {folder} is not writable{why}; pick a writable place"
        ) from exc
    os.close(fd)
    os.unlink(probe)
