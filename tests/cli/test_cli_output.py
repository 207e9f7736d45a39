"""What the CLI prints besides errors: help texts and library logs kept out of the way."""

import logging
import subprocess
import sys

import pytest

from tests.conftest import assert_user_error, fedfraud


@pytest.mark.parametrize(
    "command, text",
    [("simulate", "TOML config ([fedfraud] table)"), ("sweep", "(default: [sweep] out)")],
)
def test_help_keeps_toml_table_names(command, text):
    # Rich reads an unescaped [sweep] as a markup tag and drops it from the help.
    proc = fedfraud(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert text in proc.stdout


def test_user_errors_keep_the_toml_table_names_they_mention(tmp_path):
    sweep_file = tmp_path / "grid.toml"
    sweep_file.write_text("[fedfraud]\nnum-rounds = 2\n")
    assert_user_error(fedfraud("sweep", str(sweep_file), "--dry-run"), "add a [sweep] table")


def test_flower_debug_logs_stay_off_without_v_once_flower_is_imported():
    # `simulate` quiets the libraries before it imports the runner (and with it Flower, which
    # sets its logger to DEBUG on import); run in a fresh interpreter so Flower is not loaded yet.
    code = (
        "import logging; from fedfraud.cli import _quiet_libraries; _quiet_libraries(False); "
        "import simulations.runner; print(logging.getLogger('flwr').getEffectiveLevel())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) >= logging.ERROR
