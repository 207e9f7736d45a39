"""Mule rings: collector and layer-2 mule accounts, renewed every couple of weeks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedfraud.data.synth.constants import ALWAYS, FRAUD_TYPES, MULE, SPAN_H
from fedfraud.data.synth.sampling import cumulative
from fedfraud.data.synth.world import World


@dataclass
class Rings:
    """Mule rings running in parallel over the whole range; each replaces its mule accounts
    every couple of weeks (accounts get closed), so a known mule does not stay one forever.
    """

    start: np.ndarray  # (rings,) start of generation 0, hours (<= 0)
    gen_len: np.ndarray  # (rings,) hours a generation of mule accounts is used
    collectors: np.ndarray  # (rings, generations, max collectors) entity index
    n_col: np.ndarray  # (rings,)
    layer2: np.ndarray  # (rings, generations, 2)
    n_l2: np.ndarray  # (rings,)
    pref: np.ndarray  # (banks, rings) cumulative: which rings reach a bank's customers

    def ring_for(self, rng: np.random.Generator, bank: int, n: int) -> np.ndarray:
        """Rings for n victims at `bank`: each bank's customers meet mostly one or two rings."""
        cum = self.pref[bank]
        return np.minimum(np.searchsorted(cum, rng.random(n)), len(cum) - 1)

    def member(
        self, rng: np.random.Generator, ring: np.ndarray, t: np.ndarray, layer: int
    ) -> np.ndarray:
        """A collector (layer 1) or layer-2 mule of each ring, of the generation active at t."""
        mules, count = (self.collectors, self.n_col) if layer == 1 else (self.layer2, self.n_l2)
        gen = ((t - self.start[ring]) // self.gen_len[ring]).astype(np.int64)
        gen = np.clip(gen, 0, mules.shape[1] - 1)
        return mules[ring, gen, (rng.random(len(ring)) * count[ring]).astype(np.int64)]


def build_rings(
    rng: np.random.Generator, w: World, status: np.ndarray, budget: np.ndarray, n_victims: int
) -> Rings | None:
    """Mule rings whose mules are customers of banks that see mule rings all along.

    Sized so a collector gets a handful of victims in its lifetime whatever the data size;
    mule accounts spread over the home banks in proportion to their fraud budgets.
    """
    homes = np.flatnonzero(status[:, FRAUD_TYPES.index(MULE)] == ALWAYS)
    if len(homes) == 0:
        return None
    n_rings = max(1, round(n_victims / 120))  # ~8 victims per collector account
    gen_len = rng.uniform(10, 20, n_rings) * 24
    start = -rng.uniform(0, 1, n_rings) * gen_len
    n_gen = int(np.ceil((SPAN_H - start) / gen_len).max()) + 1
    n_col = rng.integers(2, 4, n_rings)
    n_l2 = rng.integers(1, 3, n_rings)
    home_cum = cumulative(budget[homes])

    def mules(shape: tuple[int, ...]) -> np.ndarray:
        # Systematic sampling keeps the spread close to proportional even for few mules.
        n = int(np.prod(shape))
        u = ((rng.permutation(n) + rng.random(n)) / n).reshape(shape)
        bank = homes[np.minimum(np.searchsorted(home_cum, u), len(homes) - 1)]
        span = w.cust_off[bank + 1] - w.cust_off[bank]
        return w.cust_off[bank] + (rng.random(shape) * span).astype(np.int64)

    pref = cumulative(rng.dirichlet(np.full(n_rings, 0.5), len(w.sizes)))
    return Rings(
        start, gen_len, mules((n_rings, n_gen, 3)), n_col, mules((n_rings, n_gen, 2)), n_l2, pref
    )
