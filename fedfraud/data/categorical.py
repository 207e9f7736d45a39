"""Categorical extra columns (a transaction's location, type, ...) as 0/1 extra features.

- few levels (at most ONE_HOT_MAX_LEVELS distinct values in the file): one column per level,
  x_<column>_<level>;
- many levels: the level's BLAKE2b hash picks one of HASH_BUCKETS columns x_<column>_h00 ..
  x_<column>_h15 (an unkeyed, stable hash: every bank and every run maps a level to the same
  bucket, whatever other levels its file holds; unrelated levels can share a bucket).

An empty cell is its own level ("missing"). One-hot columns depend on the levels present in the
file, so banks that load their own exports separately should ask for "hash" to get identical
feature columns.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd

from fedfraud.data.mapping import extra_name

ONE_HOT_MAX_LEVELS = 16
HASH_BUCKETS = 16
MISSING = "missing"


def encode_categorical(values: pd.Series, column: str, encoding: str = "auto") -> pd.DataFrame:
    """0/1 float columns for the source column `column` (named x_<column>_<level or hNN>)."""
    text = values.astype("string").str.strip().fillna(MISSING).replace("", MISSING)
    codes, levels = pd.factorize(text, sort=True)
    base = extra_name(column)
    one_hot = encoding == "onehot" or (encoding == "auto" and len(levels) <= ONE_HOT_MAX_LEVELS)
    if one_hot:
        names = [f"{base}_{_slug(str(level))}" for level in levels]
    else:
        names = [f"{base}_h{_bucket(str(level)):02d}" for level in levels]
    columns = sorted(set(names)) if one_hot else [f"{base}_h{b:02d}" for b in range(HASH_BUCKETS)]
    position = {name: i for i, name in enumerate(columns)}
    level_column = np.array([position[name] for name in names], dtype=np.int64)
    out = np.zeros((len(values), len(columns)), dtype=np.float64)
    out[np.arange(len(values)), level_column[codes]] = 1.0
    return pd.DataFrame(out, columns=columns, index=values.index)


def _slug(level: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", level.lower()).strip("_") or "blank"


def _bucket(level: str) -> int:
    digest = hashlib.blake2b(level.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % HASH_BUCKETS
