"""The code-bundle bypass of attack 6 (issue 13): a bundle with an extra package and a changed
`clientapp=` passed the bank guide's diff of the four package folders. The bank now pins one
hash over every file Flower ships (pyproject included) and its ClientApp refuses to run other
code; `fedfraud app-hash DIR` computes the same hash for the manual check."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import fl_client.bundle as bundle
from fedfraud import round_messages as rm
from fedfraud.config import RunConfig
from fl_client.bundle import app_hash
from tests.attacks.conftest import Consortium
from tests.conftest import fedfraud

pytestmark = pytest.mark.usefixtures("task_identity")
ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fedfraud", "fl_client", "fl_server", "secure_agg")


def copy_app(dest: Path) -> Path:
    """The reviewed bundle's sources: pyproject.toml and the four packages."""
    ignore = shutil.ignore_patterns("__pycache__")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def evil_app(dest: Path) -> Path:
    copy_app(dest)
    (dest / "evil").mkdir()
    (dest / "evil" / "__init__.py").write_text(
        "from flwr.clientapp import ClientApp\napp = ClientApp()  # sends raw rows home\n"
    )
    text = (dest / "pyproject.toml").read_text()
    text = text.replace('clientapp = "fl_client.app:app"', 'clientapp = "evil:app"')
    text = text.replace(
        'fab-include = ["fedfraud/**/*.py"', 'fab-include = ["evil/**/*.py", "fedfraud/**/*.py"'
    )
    (dest / "pyproject.toml").write_text(text)
    assert 'clientapp = "evil:app"' in text and "evil/**/*.py" in text
    return dest


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    return all(same_tree(a / d, b / d) for d in cmp.common_dirs)


@pytest.fixture
def bundles(tmp_path):
    return copy_app(tmp_path / "reviewed"), evil_app(tmp_path / "evil")


def test_old_four_folder_diff_passes_the_evil_bundle_but_the_hash_does_not(bundles):
    reviewed, evil = bundles
    # The bank guide's old check (diff -r of the four packages) finds nothing to object to.
    assert all(same_tree(reviewed / p, evil / p) for p in PACKAGES)
    assert app_hash(reviewed) == app_hash(ROOT)  # the hash covers what Flower ships, only
    assert app_hash(evil) != app_hash(reviewed)
    done = fedfraud("app-hash", str(evil))
    assert done.returncode == 0 and done.stdout.strip() == app_hash(evil)


def test_client_app_refuses_to_run_from_a_bundle_other_than_the_pinned_one(
    bundles, small_consortium, tmp_path, monkeypatch
):
    # Before issue 13 the ClientApp checked no code at all: whatever the SuperNode installed ran.
    reviewed, evil = bundles
    banks = Consortium(small_consortium, tmp_path / "c", app_hash=app_hash(reviewed))
    for folder, refused in ((evil, True), (reviewed, False)):
        monkeypatch.setattr(bundle, "app_dir", lambda folder=folder: folder)
        bundle.running_app_hash.cache_clear()
        fed = banks.operator(RunConfig(num_banks=3, num_rounds=1))
        replies = fed.broadcast(sorted(banks.contexts), f"query.{rm.STATS}", 0, {})
        if refused:
            assert replies.payloads == {}
            assert {r.error.code for r in fed.grid.replies} == {rm.REFUSED_ERROR_CODE}
        else:
            assert len(replies.payloads) == 3
    bundle.running_app_hash.cache_clear()


def test_installed_bundle_hashes_like_the_source_tree(tmp_path):
    """What a SuperNode installs is the FAB unpacked; the ClientApp hashes that folder and must
    find the hash the bank computed on the source tree it reviewed."""
    flwr = shutil.which("flwr", path=str(Path(sys.executable).parent))
    done = subprocess.run(
        [flwr, "build", "--app", str(ROOT)], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (fab,) = tmp_path.glob("*.fab")
    zipfile.ZipFile(fab).extractall(tmp_path / "installed")
    assert app_hash(tmp_path / "installed") == app_hash(ROOT)
