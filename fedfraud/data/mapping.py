"""Column mappings: which source column feeds which canonical column, plus per-file options.

A mapping is a dict or a JSON/TOML file of {canonical_name: source_column}, with these keys
besides the canonical names (see docs/researcher-guide.md):

- "extra": list of numeric source columns kept as extra features x_<name>;
- "categorical": list of text/code source columns encoded as extra 0/1 features (one-hot for
  few levels, hashed buckets for many: fedfraud.data.categorical);
- "categorical_encoding": "auto" (default), "onehot" or "hash" (the same columns in every
  file, whatever levels each one holds: use it when banks load their own exports);
- "unlabelled": label values that mark unlabelled rows (e.g. [2]); those rows are dropped and
  counted.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fedfraud.data.schema import (
    ACCOUNT_COLUMNS,
    EXTRA_PREFIX,
    OPTIONAL_DEFAULTS,
    REQUIRED_COLUMNS,
    TX_ID,
    TYPOLOGY,
)
from fedfraud.errors import DataError

CANONICAL: tuple[str, ...] = (
    TX_ID,
    *REQUIRED_COLUMNS,
    *ACCOUNT_COLUMNS,
    *OPTIONAL_DEFAULTS,
    TYPOLOGY,
)
ENCODINGS: tuple[str, ...] = ("auto", "onehot", "hash")


@dataclass(frozen=True)
class ColumnMapping:
    """A parsed mapping: canonical columns, categorical extras and label options."""

    columns: dict[str, str] = field(default_factory=dict)  # canonical name -> source column
    categorical: tuple[str, ...] = ()  # source columns encoded as categorical extras
    encoding: str = "auto"
    unlabelled: tuple[float, ...] = ()  # label values meaning "no label": rows dropped

    def __bool__(self) -> bool:
        return bool(self.columns or self.categorical or self.unlabelled)


def read_mapping(mapping: Path | str | Mapping[str, object] | None) -> dict[str, str]:
    """Parse a column mapping (dict, or JSON/TOML file) into {canonical_name: source_column}."""
    return parse_mapping(mapping).columns


def parse_mapping(mapping: Path | str | Mapping[str, object] | None) -> ColumnMapping:
    """Parse a mapping (dict, or JSON/TOML file) with its options; DataError naming the fix."""
    if mapping is None or (isinstance(mapping, str) and not mapping.strip()):
        return ColumnMapping()
    if isinstance(mapping, Mapping):
        return _normalise_mapping(dict(mapping), "column mapping")
    path = Path(mapping)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not found"
        raise DataError(f"mapping file {path} {what}; give a JSON or TOML file of column names.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"mapping file {path} cannot be read ({exc.__class__.__name__}).") from exc
    raw = _parse_mapping_text(text, path)
    if not isinstance(raw, dict):
        raise DataError(
            f'mapping file {path} must hold one object like {{"amount": "amt"}}, '
            f"not a {type(raw).__name__}."
        )
    return _normalise_mapping(raw, f"mapping file {path}")


def _parse_mapping_text(text: str, path: Path) -> object:
    suffix = path.suffix.lower()
    parsers = {".json": ["json"], ".toml": ["toml"]}.get(suffix, ["json", "toml"])
    problems = []
    for parser in parsers:
        try:
            return json.loads(text) if parser == "json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"{parser.upper()}: {exc}")
    example = 'amount = "amt"' if parsers == ["toml"] else '{"amount": "amt"}'
    raise DataError(
        f"mapping file {path} is not valid {' or '.join(p.upper() for p in parsers)} "
        f"({'; '.join(problems)}); fix the syntax, e.g. {example}."
    )


def _normalise_mapping(raw: dict, where: str) -> ColumnMapping:
    plan: dict[str, str] = {}
    options: dict[str, object] = {}
    for key, value in raw.items():
        target = str(key).strip().lower()
        if target in ("extra", "categorical"):
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not all(isinstance(c, str) and c for c in names):
                raise DataError(f'{where}: "{target}" must be a list of column names.')
            if target == "extra":
                plan.update({extra_name(column): column for column in names})
            else:
                options["categorical"] = tuple(names)
            continue
        if target == "categorical_encoding":
            if value not in ENCODINGS:
                raise DataError(
                    f'{where}: "categorical_encoding" must be one of {", ".join(ENCODINGS)}, '
                    f"got {value!r}."
                )
            options["encoding"] = value
            continue
        if target == "unlabelled":
            values = [value] if isinstance(value, int | float) else value
            if not isinstance(values, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values
            ):
                raise DataError(f'{where}: "unlabelled" must be a list of label values, e.g. [2].')
            options["unlabelled"] = tuple(float(v) for v in values)
            continue
        if target not in CANONICAL and not _is_extra_name(target):
            hint = suggest(target, CANONICAL)
            if isinstance(value, str) and value.strip().lower() in CANONICAL:
                hint = f" (it looks reversed: write {{{value!r}: {str(key)!r}}})"
            raise DataError(
                f"{where}: unknown canonical column {key!r}{hint}; map onto "
                f'{", ".join(CANONICAL)}, x_<name>, or list extra features under "extra".'
            )
        if not isinstance(value, str) or not value:
            raise DataError(f"{where}: the source column for {key!r} must be a column name.")
        plan[target] = value
    return ColumnMapping(columns=plan, **options)


def extra_name(column: str) -> str:
    """Canonical name of an extra numeric feature: 'oldbalanceOrg' -> 'x_oldbalanceorg'."""
    slug = re.sub(r"[^0-9a-z]+", "_", column.strip().lower()).strip("_")
    return EXTRA_PREFIX + (slug or "col")


def _is_extra_name(name: str) -> bool:
    return bool(re.fullmatch(re.escape(EXTRA_PREFIX) + r"[0-9a-z_]+", name))


def suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
