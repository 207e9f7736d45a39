"""Time the synthetic consortium generator and its peak memory at 1M transactions / 10 banks.

Peak memory is the process's peak resident set size from `resource.getrusage(RUSAGE_SELF)
.ru_maxrss` (Linux reports KiB), so it includes the interpreter, numpy and pandas; the RSS
before generating is reported beside it. Timings are wall-clock (`time.perf_counter`), one run,
in this process: generation alone, then writing the parquet files + manifest to a temp folder.
Writes benchmarks/results/generator.{json,md}.

    .venv/bin/python benchmarks/bench_generator.py [--transactions 1000000] [--banks 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from fedfraud.data.store import write_banks
from fedfraud.data.synth import generate_consortium

RESULTS = Path(__file__).resolve().parent / "results"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--banks", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rss_before = current_rss_mib()
    start = time.perf_counter()
    frames = generate_consortium(args.banks, args.transactions, seed=args.seed)
    generate_s = time.perf_counter() - start
    peak_generate = peak_rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_banks(frames, Path(tmp), meta={"generator": "fedfraud.synth", "seed": args.seed})
        write_s = time.perf_counter() - start
        parquet_mib = sum(p.stat().st_size for p in Path(tmp).rglob("*.parquet")) / 2**20
    rows = sum(len(df) for df in frames.values())
    fraud = sum(int(df["is_fraud"].sum()) for df in frames.values())
    sizes = [len(df) for df in frames.values()]
    result = {
        "transactions": rows,
        "banks": args.banks,
        "seed": args.seed,
        "generate_s": round(generate_s, 3),
        "write_parquet_s": round(write_s, 3),
        "rows_per_s": round(rows / generate_s),
        "rss_before_mib": round(rss_before, 1),
        "peak_rss_after_generate_mib": round(peak_generate, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "memory_method": "resource.getrusage(RUSAGE_SELF).ru_maxrss (whole process)",
        "parquet_mib": round(parquet_mib, 1),
        "fraud_rate": round(fraud / rows, 5),
        "largest_to_smallest_bank": round(max(sizes) / min(sizes), 2),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generator.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "generator.md").write_text(
        "| transactions | banks | generate s | write parquet s | peak RSS MiB (before) |\n"
        "|---:|---:|---:|---:|---:|\n"
        f"| {rows:,} | {args.banks} | {generate_s:.2f} | {write_s:.2f} | "
        f"{result['peak_rss_mib']:.0f} ({rss_before:.0f}) |\n"
    )
    print(
        f"generator: {rows:,} tx / {args.banks} banks in {generate_s:.2f} s "
        f"(+{write_s:.2f} s parquet), peak RSS {result['peak_rss_mib']:.0f} MiB "
        f"(ru_maxrss; {rss_before:.0f} MiB before), fraud rate {fraud / rows:.3%}"
    )


if __name__ == "__main__":
    main()
