"""`fedfraud simulate --set`: any run-config key, checked like the other flags."""

import numpy as np
import pytest

from fedfraud.cli import run_config_sets
from fedfraud.errors import FedfraudError
from tests.conftest import assert_user_error, fedfraud, random_bank


def test_set_maps_run_config_keys():
    assert run_config_sets(["cross-bank=sketch", "sketch_width = 512"]) == {
        "cross_bank": "sketch",
        "sketch_width": "512",
    }
    for bad in ("cross-bank", "no-such-key=1"):
        with pytest.raises(FedfraudError, match="run-config key"):
            run_config_sets([bad])


@pytest.mark.parametrize(
    "value, fragment",
    [("maybe", "cross-bank must be one of off, sketch"), ("sketch+psi", "not wired into")],
)
def test_bad_cross_bank_value_is_a_one_line_error(tmp_path, value, fragment):
    proc = fedfraud("simulate", "--out", str(tmp_path / "r"), "--set", f"cross-bank={value}")
    assert_user_error(proc, fragment)


def test_sketch_needs_account_ids(tmp_path):
    from fedfraud.data.store import write_banks

    rng = np.random.default_rng(0)
    banks = {f"bank-{i:02d}": random_bank(rng, 600, 0, accounts=False) for i in range(3)}
    write_banks(banks, tmp_path / "ulb")
    proc = fedfraud(
        "simulate",
        "--out",
        str(tmp_path / "r"),
        "--data",
        str(tmp_path / "ulb"),
        "--rounds",
        "1",
        "--no-baselines",
        "--set",
        "cross-bank=sketch",
        "--set",
        "num-banks=3",
    )
    assert_user_error(proc, "cross-bank sketches need sender and receiver account ids")
