"""Measure CKKS parameter candidates for a ~50k-float update and pick the default.

For each candidate: upload bytes / fp32 bytes, protect / aggregate / reveal time (3 banks,
best of repeats), and the max-abs error of the revealed weighted mean against the exact float64
mean for three weightings (the worst over several fresh key sets: the noise differs per key).
Writes benchmarks/results/ckks_params.{json,md}.

Selection: among candidates within 128-bit security (all are; CKKSParams refuses the others),
upload <= 8x fp32 and error <= 1e-5 / 2 (worst key draw, with a 2x margin) for both sample-count
weightings, the smallest upload wins.

    .venv/bin/python benchmarks/ckks_params.py [--params 50000] [--repeats 9] [--key-draws 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tenseal as ts

from secure_agg import keys as ckks_keys
from secure_agg.ckks import CKKSAggregator

CANDIDATES = [
    (4096, (50, 30), 30),
    (4096, (52, 30), 32),
    (4096, (54, 30), 34),
    (4096, (56, 30), 36),
    (4096, (58, 30), 38),
    (4096, (60, 40), 40),
    (8192, (50, 30), 30),
    (8192, (56, 30), 36),
    (8192, (60, 40), 40),
    (8192, (60, 40, 40, 60), 40),
]
# Sample counts as weights: skewed bank sizes up to ~1e6, and a small round totalling 1,000.
WEIGHTINGS = {
    "sample_counts": [3_000, 40_000, 900_000],
    "small_counts": [100, 300, 600],
    "unit": [1, 1, 1],  # reported, not required: see docs/threat-model.md
}
REQUIRED = ("sample_counts", "small_counts")
MAX_RATIO, MAX_ERROR = 8.0, 1e-5
# The error is the worst of a few random draws, so a candidate must beat the target twice over.
SAFETY = 2.0


def best_time(fn, repeats: int) -> tuple[float, object]:
    """Fastest of `repeats` runs (timeit's convention: the least disturbed by other load)."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def max_errors(params: ckks_keys.CKKSParams, updates: list[np.ndarray], draws: int) -> dict:
    """Max-abs error of the revealed mean per weighting, worst over `draws` fresh key sets."""
    errors = dict.fromkeys(WEIGHTINGS, 0.0)
    for _ in range(draws):
        secret = ckks_keys.generate_keys(params)
        client = CKKSAggregator("client", secret)
        server = CKKSAggregator("server", ckks_keys.public_keys(secret))
        for name, weights in WEIGHTINGS.items():
            pairs = list(zip(updates, weights, strict=True))
            payloads = {
                f"bank-{i}": client.client_protect([u], w, 1) for i, (u, w) in enumerate(pairs)
            }
            agg = server.server_aggregate(payloads)
            mean = client.client_reveal(agg.payload, [updates[0].shape])[0].astype(np.float64)
            exact = sum(w * u for u, w in pairs) / sum(weights)
            errors[name] = max(errors[name], float(np.max(np.abs(mean - exact))))
    return errors


def measure(
    n: int, bits: tuple[int, ...], scale: int, num_params: int, repeats: int, draws: int
) -> dict:
    params = ckks_keys.CKKSParams(n, bits, scale)
    secret = ckks_keys.generate_keys(params)
    client = CKKSAggregator("client", secret)
    server = CKKSAggregator("server", ckks_keys.public_keys(secret))
    rng = np.random.default_rng(0)
    shapes = [(num_params,)]
    updates = [rng.uniform(-10, 10, num_params) for _ in range(3)]
    row: dict = {
        "poly_modulus": n,
        "coeff_mod_bits": list(bits),
        "scale_bits": scale,
        "total_modulus_bits": sum(bits),
        "security_limit_bits": ckks_keys.MAX_MODULUS_BITS_128[n],
        "weight_scale": client.weight_scale,
        "ciphertexts": -(-(num_params + 1) // params.slots),
        "errors": max_errors(params, updates, draws),
    }
    weights = WEIGHTINGS["sample_counts"]
    row["protect_s"], payload = best_time(
        lambda: client.client_protect([updates[0]], weights[0], 1), repeats
    )
    payloads = {
        f"bank-{i}": client.client_protect([u], w, 1)
        for i, (u, w) in enumerate(zip(updates, weights, strict=True))
    }
    row["aggregate_s"], agg = best_time(lambda: server.server_aggregate(payloads), repeats)
    row["reveal_s"], _ = best_time(lambda: client.client_reveal(agg.payload, shapes), repeats)
    row["bytes_up"] = payload.nbytes()
    row["bytes_down"] = agg.payload.nbytes()
    row["bytes_ratio"] = payload.nbytes() / (4 * num_params)
    row["passes"] = row["bytes_ratio"] <= MAX_RATIO and all(
        row["errors"][k] * SAFETY <= MAX_ERROR for k in REQUIRED
    )
    return row


def thread_check(params: ckks_keys.CKKSParams, num_params: int, repeats: int) -> dict:
    """Does encrypting chunks from 2 Python threads, or TenSEAL's n_threads, pay off?"""
    ctx = ckks_keys.generate_keys(params).context
    x = np.random.default_rng(1).uniform(-1, 1, num_params)
    chunks = [x[i : i + params.slots] for i in range(0, x.size, params.slots)]

    def encrypt(c):
        return ts.ckks_vector(ctx, c).serialize()

    out = {"sequential_s": best_time(lambda: [encrypt(c) for c in chunks], repeats)[0]}
    with ThreadPoolExecutor(2) as pool:
        out["two_threads_s"] = best_time(lambda: list(pool.map(encrypt, chunks)), repeats)[0]
    for n_threads in (1, 2):
        ctx_t = ts.context_from(ctx.serialize(save_secret_key=True), n_threads=n_threads)
        out[f"tenseal_n_threads_{n_threads}_s"] = best_time(
            lambda c=ctx_t: [ts.ckks_vector(c, ch).serialize() for ch in chunks], repeats
        )[0]
    return out


def to_markdown(result: dict) -> str:
    lines = [
        f"# CKKS parameters for a {result['num_params']}-float update (3 banks)",
        "",
        f"Errors: worst max-abs error over {result['key_draws']} key sets.",
        "",
        "| N | coeff bits | scale | modulus/limit | C | up bytes/fp32 | protect s | aggregate s "
        "| reveal s | err sample-counts | err small (W=1000) | err unit | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["candidates"]:
        e = r["errors"]
        lines.append(
            f"| {r['poly_modulus']} | {','.join(map(str, r['coeff_mod_bits']))} | "
            f"2^{r['scale_bits']} | {r['total_modulus_bits']}/{r['security_limit_bits']} | "
            f"2^{int(np.log2(r['weight_scale']))} | {r['bytes_ratio']:.2f} | "
            f"{r['protect_s']:.4f} | {r['aggregate_s']:.4f} | {r['reveal_s']:.4f} | "
            f"{e['sample_counts']:.1e} | {e['small_counts']:.1e} | {e['unit']:.1e} | "
            f"{'yes' if r['passes'] else 'no'} |"
        )
    c = result["chosen"]
    lines += [
        "",
        f"Chosen: N={c['poly_modulus']}, coeff_mod_bits={c['coeff_mod_bits']}, "
        f"scale=2^{c['scale_bits']}.",
        "",
        f"Threads (chosen parameters, encrypt + serialize): {result['threads']}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=9, help="timing repeats (best of)")
    parser.add_argument("--key-draws", type=int, default=8, help="key sets per error (worst)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    rows = []
    for n, bits, scale in CANDIDATES:
        rows.append(measure(n, bits, scale, args.params, args.repeats, args.key_draws))
        r = rows[-1]
        print(f"N={n} {bits} 2^{scale}: {r['bytes_ratio']:.2f}x err {r['errors']}")
    passing = [r for r in rows if r["passes"]]
    chosen = min(passing, key=lambda r: (r["bytes_ratio"], r["total_modulus_bits"]))
    params = ckks_keys.CKKSParams(
        chosen["poly_modulus"], tuple(chosen["coeff_mod_bits"]), chosen["scale_bits"]
    )
    result = {
        "num_params": args.params,
        "num_banks": 3,
        "weightings": WEIGHTINGS,
        "key_draws": args.key_draws,
        "required": {
            "bytes_ratio_max": MAX_RATIO,
            "max_abs_error": MAX_ERROR,
            "safety": SAFETY,
            "weightings": list(REQUIRED),
        },
        "encryption": "symmetric (secret-key) CKKS, one ciphertext per N/2 values",
        "tenseal": ts.__version__,
        "machine": {
            "python": platform.python_version(),
            "processor": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_1m": os.getloadavg()[0],  # timings are only comparable at equal load
        },
        "candidates": rows,
        "selection": "smallest bytes_ratio with bytes_ratio <= 8 and max_abs_error <= 1e-5 / "
        "safety for every required weighting over every key draw, all candidates within "
        "128-bit security",
        "chosen": {k: chosen[k] for k in ("poly_modulus", "coeff_mod_bits", "scale_bits")},
        "threads": thread_check(params, args.params, args.repeats),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ckks_params.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "ckks_params.md").write_text(to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
