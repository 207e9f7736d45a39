"""Random-draw helpers shared by the world, the typologies and the legit rows."""

from __future__ import annotations

import numpy as np


def cumulative(p: np.ndarray) -> np.ndarray:
    """Cumulative probabilities along the last axis, ending at exactly 1."""
    c = np.cumsum(p / p.sum(axis=-1, keepdims=True), axis=-1)
    c[..., -1] = 1.0
    return c


def pick(rng: np.random.Generator, cum: np.ndarray) -> np.ndarray:
    """Row-wise categorical draw from per-row cumulative probabilities."""
    u = rng.random((len(cum), 1))
    return np.minimum((u > cum).sum(axis=1), cum.shape[1] - 1)


def draw(rng: np.random.Generator, pool: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    """n entities from a popularity-weighted pool (entities, cumulative weights)."""
    ent, cum = pool
    return ent[np.minimum(np.searchsorted(cum, rng.random(n)), len(ent) - 1)]


def zipf_pool(rng: np.random.Generator, ent: np.ndarray, a: float = 1.1) -> tuple:
    """A pool for `draw`: entities with Zipf popularity in a random order."""
    pop = 1.0 / (rng.permutation(len(ent)) + 1.0) ** a
    return ent, cumulative(pop)


def dirichlet_rows(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """One Dirichlet draw per row of `alpha` (vectorized through Gamma variates)."""
    g = rng.gamma(alpha)
    return g / g.sum(axis=1, keepdims=True)


def event_times(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    """Stratified event times on [lo, hi) with a linear intensity trend (slope in (-1, 1)).

    Stratifying keeps even a handful of events spread over train and test periods.
    """
    u = (rng.permutation(n) + rng.random(n)) / n
    if abs(slope) > 1e-9:  # inverse CDF of the density 1 + slope * (2u - 1)
        u = (-(1 - slope) + np.sqrt((1 - slope) ** 2 + 4 * slope * u)) / (2 * slope)
    return lo + u * (hi - lo)


def bursts(rng: np.random.Generator, sizes: np.ndarray, gap_mean: float) -> tuple:
    """Row -> event index and time offset (hours) for events of `sizes` rows with random gaps."""
    ev = np.repeat(np.arange(len(sizes)), sizes)
    first = np.cumsum(sizes) - sizes
    gaps = rng.exponential(gap_mean, len(ev))
    gaps[first[sizes > 0]] = 0.0
    cs = np.cumsum(gaps)
    return ev, cs - cs[first[ev]]


def stochastic_round(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Round up with probability equal to the fractional part (unbiased counts)."""
    return np.floor(x + rng.random(x.shape)).astype(np.int64)
