from pathlib import Path

import pytest

from fedfraud.config import RunConfig
from fedfraud.errors import ConfigError


def test_run_config_round_trips_through_flower_run_config():
    cfg = RunConfig(num_banks=4, model="gnn", dp_epsilon=3.0, secure_agg="ckks")
    assert RunConfig.from_mapping(cfg.to_run_config()) == cfg


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"num_rounds": 0}, "num-rounds"),
        ({"model": "xgboost"}, "model must be one of"),
        ({"min_banks": 6, "num_banks": 5}, "cannot exceed"),
        ({"dp_delta": 1.5}, "dp-delta"),
        ({"lr": -1.0}, "lr"),
        ({"client_cpus": 0.0}, "client-cpus"),
    ],
)
def test_invalid_values_are_rejected_with_the_setting_named(changes, fragment):
    with pytest.raises(ConfigError, match=fragment):
        RunConfig(**changes)


def test_toml_reads_fedfraud_table_and_rejects_unknown_keys(tmp_path: Path):
    good = tmp_path / "a.toml"
    good.write_text('[fedfraud]\nnum-banks = 3\nmodel = "gnn"\n')
    assert RunConfig.from_toml(good, {"num_rounds": 2}) == RunConfig(
        num_banks=3, model="gnn", num_rounds=2
    )
    bad = tmp_path / "b.toml"
    bad.write_text("[fedfraud]\nnum-bankz = 3\n")
    with pytest.raises(ConfigError, match="num-bankz"):
        RunConfig.from_toml(bad)


def test_unreadable_value_names_the_key():
    with pytest.raises(ConfigError, match="num-rounds"):
        RunConfig.from_mapping({"num-rounds": "ten"})
