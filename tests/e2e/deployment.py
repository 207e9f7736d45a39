"""A real fedfraud deployment on localhost for end-to-end tests: a `flower-superlink` with TLS
and SuperNode authentication, `flower-supernode` processes with their own keys, and the `flwr`
CLI pointed at them through a private FLWR_HOME. Every process it starts is stopped in `stop()`,
including the ones Flower detaches (SuperExec, ServerApp, ClientApp processes)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FEDERATION = "consortium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], object], timeout: float, poll: float = 0.2):
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


class Deployment:
    """SuperLink + SuperNodes + flwr CLI, all under `root` (a pytest tmp folder)."""

    def __init__(self, root: Path, certs: Path) -> None:
        self.root = Path(root)
        self.certs = Path(certs)
        self.port = free_port()
        self.flwr_home = self.root / "flwr-home"
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.logs = self.root / "logs"
        self.logs.mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            # Marks every process of this deployment (children inherit it): see stop().
            "FLWR_HOME": str(self.flwr_home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            # No usage reports to Flower's servers (banks will want this too): without network
            # every Flower process would also wait for the report before exiting.
            "FLWR_TELEMETRY_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.node_ids: dict[str, int] = {}  # name -> node id given at registration
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{FEDERATION}"\n\n'
            f"[superlink.{FEDERATION}]\n"
            f'address = "127.0.0.1:{self.port}"\n'
            f'root-certificates = "{self.certs / "ca.crt"}"\n'
        )

    # -- processes ---------------------------------------------------------------------------
    def _start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_superlink(self) -> None:
        self._start(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--ssl-ca-certfile", str(self.certs / "ca.crt"),
                "--ssl-certfile", str(self.certs / "server.pem"),
                "--ssl-keyfile", str(self.certs / "server.key"),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
                # On disk, so registrations survive a restart of the SuperLink.
                "--database", str(self.root / "superlink.db"),
                "--port", str(self.port),
            ],
        )  # fmt: skip
        wait_for("the SuperLink to listen", self._superlink_listening, 60)

    def _superlink_listening(self) -> bool:
        if self.procs["superlink"].poll() is not None:
            raise RuntimeError(f"flower-superlink exited:\n{self.log('superlink')[-3000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def start_supernode(
        self, name: str, key: Path, node_config: Mapping[str, str], ca: Path | None = None
    ) -> subprocess.Popen:
        config = " ".join(f"{k}='{v}'" for k, v in node_config.items())
        return self._start(
            name,
            [
                str(BIN / "flower-supernode"),
                "--superlink", f"127.0.0.1:{self.port}",
                "--root-certificates", str(ca or self.certs / "ca.crt"),
                "--auth-supernode-private-key", str(key),
                "--node-config", config,
                "--port", str(free_port()),  # this node's local Runtime API
            ],
        )  # fmt: skip

    def kill(self, name: str) -> None:
        """SIGKILL a process and everything it started (a crash, not a shutdown)."""
        proc = self.procs[name]
        kill_tree(proc.pid)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in self.procs.values():
            kill_tree(proc.pid)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        # Flower detaches SuperExec (new session) and its App processes: find them by the
        # FLWR_HOME only this deployment uses.
        for proc in deployment_processes(self.flwr_home):
            kill_tree(proc.pid)

    # -- flwr CLI ----------------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "flwr"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )

    def register(self, public_key: Path) -> int:
        done = self.flwr("supernode", "register", str(public_key), "--format", "json")
        assert done.returncode == 0, done.stdout + done.stderr
        return int(json.loads(done.stdout)["node-id"])

    def online_nodes(self) -> set[int]:
        done = self.flwr("supernode", "list", "--format", "json")
        assert done.returncode == 0, done.stdout + done.stderr
        nodes = json.loads(done.stdout).get("nodes", [])
        return {int(n["node-id"]) for n in nodes if n.get("status") == "online"}

    def run(self, name: str, run_config: Mapping[str, object]) -> subprocess.Popen:
        """`flwr run` the fedfraud app against this deployment (streams the ServerApp log)."""
        config = " ".join(f"{k}={_toml(v)}" for k, v in run_config.items())
        return self._start(
            name,
            [str(BIN / "flwr"), "run", str(ROOT), FEDERATION, "--run-config", config, "--stream"],
        )


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)


def kill_tree(pid: int) -> None:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)


def deployment_processes(flwr_home: Path) -> list[psutil.Process]:
    """Live processes whose environment has FLWR_HOME=`flwr_home`."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("FLWR_HOME") == str(flwr_home):
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found
