"""Runs a CrypTen committee's K compute parties as processes on the operator's machine.

The parties are fresh interpreters (`python -m secure_agg.crypten_party`), not forks and not
CrypTen's `run_multiprocess`: that one forks the caller (unsafe from a thread of a process that
runs Ray or gRPC), joins its children before reading their results (it hangs once a result is
larger than a pipe buffer) and never times out. The parties start on first use and stay up for
later aggregations (starting them costs ~1.5 s of CPU each for importing torch and CrypTen). Any
failure or timeout stops all of them; the next aggregation starts a fresh committee. They also
end when their stdin closes, so they never outlive the operator process.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

from fedfraud.errors import ConfigError, PayloadError
from secure_agg.base import Payload
from secure_agg.crypten_committee import Committee, key_file

log = logging.getLogger("fedfraud.secure_agg.crypten")
_warned = False


class LocalCommittee:
    """The parties of `committee` as local processes; `run(jobs)` hands party k jobs[k]."""

    def __init__(
        self,
        committee: Committee,
        timeout_s: float,
        min_contributors: int = 3,
        roster: Path | None = None,
    ):
        self.committee = committee
        self.timeout_s = timeout_s
        self.party_args = ["--min-contributors", str(min_contributors)]
        if roster is not None:
            self.party_args += ["--roster", str(roster)]
        self._procs: list[subprocess.Popen] = []
        self._work: tempfile.TemporaryDirectory | None = None
        self._finalizer: weakref.finalize | None = None
        self._jobs = 0
        self._lock = threading.Lock()

    @property
    def pids(self) -> list[int]:
        """Process ids of the running parties (for diagnostics and tests)."""
        return [p.pid for p in self._procs if p.poll() is None]

    def run(self, jobs: Sequence[Payload]) -> list[Payload]:
        """Run one aggregation; PayloadError (and a stopped committee) if any party fails."""
        with self._lock:
            try:
                if not self._procs:
                    self._start()
                return self._run(jobs)
            except BaseException:
                for proc in self._procs:  # the others may wait for the failed one forever
                    if proc.poll() is None:
                        proc.terminate()
                self.close()
                raise

    def close(self) -> None:
        """Stop the parties and remove their working folder."""
        if self._finalizer is not None:
            self._finalizer()
        self._procs, self._work, self._finalizer = [], None, None

    def _start(self) -> None:
        global _warned
        if not _warned:
            _warned = True
            log.warning(
                "SIMULATION: the CrypTen compute parties run on the operator's machine, which "
                "holds all their keys: no protection against the operator (see docs/mpc.md)"
            )
        self._work = tempfile.TemporaryDirectory(prefix="fedfraud-crypten-")
        work = Path(self._work.name)
        env = _party_env(work, self.committee.size)
        for k in range(self.committee.size):
            cmd = [
                sys.executable,
                "-m",
                "secure_agg.crypten_party",
                "--party",
                str(k),
                "--parties-dir",
                str(self.committee.directory),
                "--error-file",
                str(work / f"party-{k}.error"),
                "--job-timeout",
                str(self.timeout_s),
                *self.party_args,
            ]
            with open(work / f"party-{k}.log", "wb") as logfile:
                self._procs.append(
                    subprocess.Popen(
                        cmd,
                        env={**env, "RANK": str(k)},
                        stdin=subprocess.PIPE,
                        stdout=logfile,
                        stderr=subprocess.STDOUT,
                    )
                )
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._work)

    def _run(self, jobs: Sequence[Payload]) -> list[Payload]:
        assert self._work is not None and len(jobs) == len(self._procs)
        work, n = Path(self._work.name), self._jobs
        self._jobs += 1
        results = [work / f"result-{n}-{k}.bin" for k in range(len(jobs))]
        for k, (proc, job) in enumerate(zip(self._procs, jobs, strict=True)):
            job_file = work / f"job-{n}-{k}.bin"
            job_file.write_bytes(job.to_bytes())
            try:
                assert proc.stdin is not None
                proc.stdin.write(f"{job_file}\t{results[k]}\n".encode())
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # the party is gone; _wait reports why
        self._wait(results)
        out = [Payload.from_bytes(path.read_bytes()) for path in results]
        for path in work.glob(f"*-{n}-*.bin"):
            path.unlink()
        return out

    def _wait(self, results: list[Path]) -> None:
        deadline = time.monotonic() + self.timeout_s
        pause = 0.002
        while not all(path.exists() for path in results):
            for k, proc in enumerate(self._procs):
                code = proc.poll()
                if code is not None:
                    raise PayloadError(f"CrypTen compute party {k} failed: {self._why(k, code)}")
            if time.monotonic() > deadline:
                pending = [k for k, path in enumerate(results) if not path.exists()]
                raise PayloadError(
                    f"CrypTen committee did not finish within crypten-timeout={self.timeout_s:g}s"
                    f" (parties {pending} have not answered); check that every compute party is "
                    "up, or raise crypten-timeout"
                )
            time.sleep(pause)  # polling, so that one dead party stops the others at once
            pause = min(pause * 2, 0.02)

    def _why(self, k: int, code: int) -> str:
        assert self._work is not None
        work = Path(self._work.name)
        error = work / f"party-{k}.error"
        if error.exists():
            return error.read_text(errors="replace")
        lines = (work / f"party-{k}.log").read_text(errors="replace").strip().splitlines()
        # SIGALRM: the party's own crypten-timeout watchdog; SIGKILL: e.g. out of memory.
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        return (lines[-1] + f" ({how})") if lines else how


def _party_env(work: Path, world_size: int) -> dict[str, str]:
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env.update(
        WORLD_SIZE=str(world_size),
        RENDEZVOUS=f"file://{work / 'rendezvous'}",
        DISTRIBUTED_BACKEND="gloo",
        PYTHONPATH=os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p),
        OMP_NUM_THREADS="1",  # K parties share the machine; adding needs no thread pool
    )
    if "GLOO_SOCKET_IFNAME" not in env and Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # a local committee keeps its traffic on loopback
    return env


def _shutdown(procs: list[subprocess.Popen], work: tempfile.TemporaryDirectory) -> None:
    """Close stdin (the parties leave cleanly), then terminate, then kill what is left."""
    for p in procs:
        try:
            if p.stdin is not None:
                p.stdin.close()
        except OSError:
            pass
    deadline = time.monotonic() + 2
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=2)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    work.cleanup()


def check_operator_keys(committee: Committee, *, simulation: bool) -> None:
    """An operator holding two parties' keys holds two of K shares of every update: refuse,
    unless this is a simulation, which says so."""
    held = [k for k in range(committee.size) if key_file(committee.directory, k).exists()]
    if len(held) > 1 and not simulation:
        raise ConfigError(
            f"the operator can read the private keys of CrypTen compute parties {held} in "
            f"{committee.directory}: with more than one it can rebuild banks' updates. Each "
            "party runs at its own institution with only its own key (docs/mpc.md); set "
            "crypten-simulation=true only for a local simulation"
        )
    if simulation:
        log.warning(
            "crypten-simulation: the operator runs all %d compute parties and holds their keys; "
            "this protects nothing against the operator",
            committee.size,
        )
    elif len(held) <= 1:
        raise ConfigError(
            "CrypTen compute parties at other institutions are not reachable from this "
            "operator: this version runs parties only as local processes (a simulation, "
            "crypten-simulation=true); see docs/mpc.md for the deployment plan"
        )
