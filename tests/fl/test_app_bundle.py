"""The app bundle (FAB) `flwr run` ships to the SuperLink and to every bank holds code only."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fab_holds_only_app_code(tmp_path):
    flwr = shutil.which("flwr", path=str(Path(sys.executable).parent))
    done = subprocess.run(
        [flwr, "build", "--app", str(ROOT)], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (fab,) = tmp_path.glob("*.fab")
    names = zipfile.ZipFile(fab).namelist()
    top = {n.split("/")[0] for n in names}
    assert top <= {".info", "pyproject.toml", "fedfraud", "fl_client", "fl_server", "secure_agg"}
    code = [n for n in names if "/" in n and not n.startswith(".info/")]
    assert code and all(n.endswith(".py") for n in code)  # no *.json(l), keys, data or docs
