"""The synth package stays split into small modules and keeps its public names."""

from __future__ import annotations

from pathlib import Path

import pytest

import fedfraud.data.synth as synth
from fedfraud.data.synth import MIN_TX_PER_BANK, check_args
from fedfraud.errors import ConfigError


def test_every_synth_module_is_under_400_lines() -> None:
    package = Path(synth.__file__).parent
    lengths = {p.name: len(p.read_text().splitlines()) for p in package.glob("*.py")}
    assert len(lengths) > 1 and max(lengths.values()) < 400, lengths


def test_every_name_in_all_is_importable_from_the_package() -> None:
    missing = [name for name in synth.__all__ if not hasattr(synth, name)]
    assert not missing


def test_check_args_is_public_and_rejects_before_any_generation() -> None:
    check_args(3, 3 * MIN_TX_PER_BANK, 0)
    with pytest.raises(ConfigError, match="too small"):
        check_args(3, 3 * MIN_TX_PER_BANK - 1, 0)
    with pytest.raises(ConfigError, match="seed"):
        check_args(3, 3 * MIN_TX_PER_BANK, -1)
