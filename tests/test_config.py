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
        (
            {"min_banks": 6, "num_banks": 5},
            "5 banks is too few: every round needs at least min-banks=6",
        ),
        ({"seed": -1}, "seed must be 0 or more"),
        ({"dp_epsilon": float("inf")}, "dp-epsilon must be a finite number"),
        ({"mapping": "m.json"}, "--mapping applies to a CSV/Parquet file"),
        ({"dp_delta": 1.5}, "dp-delta"),
        ({"lr": -1.0}, "lr"),
        ({"client_cpus": 0.0}, "client-cpus"),
    ],
)
def test_invalid_values_are_rejected_with_the_setting_named(changes, fragment):
    with pytest.raises(ConfigError, match=fragment):
        RunConfig(**changes)


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("num-rounds", 1.5, "num-rounds must be a whole number, got 1.5"),
        ("num-banks", True, "num-banks must be a whole number, got True"),
        ("lr", "fast", "lr must be a finite number, got 'fast'"),
        ("dp-epsilon", float("inf"), "dp-epsilon must be a finite number (0 disables DP)"),
        ("round-timeout", float("nan"), "round-timeout must be a finite number"),
        ("model", 3, "model must be text, got 3"),
    ],
)
def test_values_are_read_strictly_never_coerced(key, value, fragment):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_mapping({key: value})
    assert fragment in str(info.value)


def test_strings_from_node_config_are_parsed():
    cfg = RunConfig.from_mapping({"num-rounds": "3", "lr": "0.01", "num-banks": 4.0})
    assert (cfg.num_rounds, cfg.lr, cfg.num_banks) == (3, 0.01, 4)


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
