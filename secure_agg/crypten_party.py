"""One CrypTen compute party: open my shares, add them, and jointly reveal only the sum.

Run as `python -m secure_agg.crypten_party --party K --parties-dir DIR --error-file FILE` with
CrypTen's communicator settings (RANK, WORLD_SIZE, RENDEZVOUS, DISTRIBUTED_BACKEND) in the
environment; `crypten_launch` starts one per party for a local committee. The party joins the
committee once, then serves jobs: each stdin line is `JOB_FILE<TAB>RESULT_FILE`; a job holds the
sealed shares meant for this party, the result holds (on party 0) the revealed sum and (on every
party) the banks whose share it could not open. End of stdin ends the party. On any error it
writes the reason to the error file and exits non-zero, since the other parties cannot go on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedfraud.errors import FedfraudError, PayloadError
from fedfraud.io import atomic_write
from secure_agg._crypten_compat import import_crypten
from secure_agg.base import Payload
from secure_agg.crypten_committee import (
    SEED_BYTES,
    Committee,
    expand_mask,
    load_committee,
    load_party_key,
    open_sealed,
    share_context,
)
from secure_agg.crypten_proofs import PartyRules
from secure_agg.roster import Roster

JOB = "crypten-job"
RESULT = "crypten-result"


class Party:
    """Party `party` of `committee`, holding its private key and (once joined) a communicator."""

    def __init__(self, committee: Committee, party: int, rules: PartyRules | None = None):
        self.committee = committee
        self.party = party
        self.rules = rules or PartyRules()  # this party's own floor, roster and served sums
        self.key = load_party_key(committee, party)  # fail before the slow CrypTen import
        self.crypten: Any = None

    def join(self) -> None:
        """Connect to the other parties (CrypTen's communicator over torch.distributed)."""
        self.crypten = import_crypten()
        self.crypten.init()

    def leave(self) -> None:
        if self.crypten is not None:
            self.crypten.uninit()

    def open_shares(self, job: Payload) -> tuple[list[np.ndarray | None], dict[str, str]]:
        """This party's share of every contribution (None where it cannot be opened) + why."""
        meta = job.meta
        if job.backend != JOB or int(meta["party"]) != self.party:
            raise PayloadError(f"not a CrypTen job for party {self.party}")
        if meta["committee"] != self.committee.fingerprint:
            raise PayloadError(
                f"job is for committee {meta['committee']}, party {self.party} belongs to "
                f"{self.committee.fingerprint}"
            )
        size = int(meta["size"])
        contributions = json.loads(str(meta["contributions"]))
        if len(contributions) != len(job.chunks):
            raise PayloadError("job lists a different number of contributions than it carries")
        shares: list[np.ndarray | None] = []
        rejected: dict[str, str] = {}
        self.stages: list = []  # per contribution: the (run, stage, participants) it signed
        for item, sealed in zip(contributions, job.chunks, strict=True):
            bank, cid = str(item[0]), str(item[1])
            proof = item[2] if len(item) > 2 else None
            context = share_context(
                self.committee.fingerprint,
                self.party,
                int(meta["round"]),
                size,
                int(meta["precision"]),
                cid,
            )
            try:
                signed = self.rules.check_share(self.party, bank, int(meta["round"]), proof, sealed)
                plain = open_sealed(self.key, sealed, context)
                if self.party == 0 and len(plain) == 8 * size:
                    shares.append(np.frombuffer(plain, dtype="<i8"))
                elif self.party > 0 and len(plain) == SEED_BYTES:
                    shares.append(expand_mask(plain, size))
                else:
                    raise PayloadError(f"opened share has {len(plain)} bytes, the wrong size")
                self.stages.append(signed)
            except PayloadError as exc:
                rejected[bank] = f"compute party {self.party}: {exc}"
                shares.append(None)
                self.stages.append(None)
        return shares, rejected

    def reveal_sum(
        self, job: Payload, shares: Sequence[np.ndarray | None]
    ) -> tuple[np.ndarray | None, list[int]]:
        """Agree with the other parties on what to add, add locally, reveal the sum to party 0.

        Returns (the int64 sum on party 0, else None; indices of the contributions summed)."""
        import torch
        from torch.distributed import ReduceOp

        comm = self.crypten.communicator.get()
        # The operator must hand every party the same list, or the shares would not line up.
        header = json.dumps([job.meta[k] for k in sorted(job.meta) if k != "party"]).encode()
        digest = torch.from_numpy(np.frombuffer(hashlib.sha256(header).digest(), "<i8").copy())
        if any(not torch.equal(d, digest) for d in comm.all_gather(digest)):
            raise PayloadError("compute parties were given different contribution lists")
        # A contribution is summed only if every party could open its share of it.
        mine = torch.tensor([s is not None for s in shares], dtype=torch.long)
        agreed = [i for i, ok in enumerate(comm.all_reduce(mine, op=ReduceOp.MIN).tolist()) if ok]
        banks = [str(c[0]) for c in json.loads(str(job.meta["contributions"]))]
        # The floor, the stage and "one sum per stage" are this party's own rules: the
        # operator's min_banks can only raise the floor.
        self.rules.check_sum(
            int(job.meta["round"]),
            int(job.meta["min_banks"]),
            [banks[i] for i in agreed],
            [self.stages[i] for i in agreed],
        )
        local = np.zeros(int(job.meta["size"]), dtype=np.int64)
        for i in agreed:
            local += shares[i]  # int64 wraps around: addition in the ring Z_2^64
        shared = self.crypten.mpc.primitives.ArithmeticSharedTensor.from_shares(
            torch.from_numpy(local), precision=int(job.meta["precision"])
        )
        # reveal(), not get_plain_text(): the latter decodes to float32, losing precision on
        # large weighted sums; the banks divide the two integer sums themselves.
        total = shared.reveal(dst=0)
        return (total.numpy() if total is not None else None), agreed

    def serve(self, job: Payload) -> Payload:
        """Do this party's part of one aggregation; the result to hand back."""
        shares, rejected = self.open_shares(job)
        total, agreed = self.reveal_sum(job, shares)
        banks = [str(c[0]) for c in json.loads(str(job.meta["contributions"]))]
        chunks = () if total is None else (total.astype("<i8").tobytes(),)
        meta = {
            "party": self.party,
            "summed": json.dumps([banks[i] for i in agreed]),
            "rejected": json.dumps(rejected),
        }
        return Payload(RESULT, chunks, meta)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--party", type=int, required=True)
    parser.add_argument("--parties-dir", type=Path, required=True)
    parser.add_argument("--error-file", type=Path, required=True)
    parser.add_argument("--job-timeout", type=float, default=120.0)
    # This party's own rules (its institution sets them; the operator's job cannot lower them).
    parser.add_argument("--min-contributors", type=int, default=3)
    parser.add_argument("--roster", type=Path, default=None, help="pinned consortium roster")
    args = parser.parse_args(argv)
    party = None
    try:
        roster = Roster.load(args.roster) if args.roster else None
        rules = PartyRules(args.min_contributors, roster)
        party = Party(load_committee(args.parties_dir), args.party, rules)
        # Watchdog: never wait for missing peers longer than the operator would.
        signal.alarm(max(1, math.ceil(args.job_timeout)))
        party.join()
        signal.alarm(0)
        for line in sys.stdin:
            job_file, result_file = line.rstrip("\n").split("\t")
            # Watchdog: a job that hangs (a peer vanished mid-sum) ends this process.
            signal.alarm(max(1, math.ceil(args.job_timeout)))
            result = party.serve(Payload.from_bytes(Path(job_file).read_bytes()))
            signal.alarm(0)
            _write(Path(result_file), result.to_bytes())
        party.leave()
        return 0
    except FedfraudError as exc:
        _write(args.error_file, str(exc).encode())
        return 3
    except Exception as exc:  # e.g. another party vanished mid-protocol (a gloo error)
        _write(args.error_file, f"{type(exc).__name__}: {exc}".splitlines()[0].encode())
        return 4


def _write(path: Path, data: bytes) -> None:
    atomic_write(path, data, durable=False)  # the operator never sees a half-written file


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: with a gloo process group it takes seconds (measured ~3-5 s),
    # which would delay both a clean shutdown and the operator noticing a failed party.
    os._exit(code)
