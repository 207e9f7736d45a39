"""Score one new transaction with the GNN in O(neighbourhood), exactly as the full graph would.

The GNN (fedfraud.models.gnn) embeds every account of the bank's graph with two message-passing
layers, then scores a transaction from [h_src, h_dst, tx features]. Re-running it over the whole
graph per transaction costs ~10 ms per bank-sized graph; only a few accounts change, though.

How a transaction is scored: the bank's history table is its graph (the same graph the banks
train on: accounts are nodes, every past transaction an undirected edge); the new transaction
is added as one more edge, its two accounts' features (degrees, amounts, ...) are updated, and
only the embeddings that change are recomputed:
* layer 0: h0 = relu(encode(x)) changes at the two accounts C = {sender, receiver};
* layer 1: h1 changes on C and their neighbours R = C ∪ N(sender) ∪ N(receiver). Each node keeps
  the cached sum Z[v] of its neighbours' (weighted) h0, so h1 on R costs O(|R|) vector updates
  instead of a 2-hop gather (a merchant's 2-hop neighbourhood is most of the bank);
* layer 2: h2 is needed on C only, from h1 over their neighbours (all in R).
The result equals the full-graph forward on history + the new edge (tested for SAGE and GCN);
the edge then stays in the graph, like every observed transaction (see fedfraud.online).
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.nn import GCNConv, SAGEConv

from fedfraud.models.gnn import FraudGNN


class IncrementalGNN:
    """The account graph of one bank with cached layer-0 embeddings and neighbour sums."""

    def __init__(self, model: FraudGNN, keys: list[str], node_x: np.ndarray) -> None:
        """`keys` name the accounts, `node_x` (scaled) their features; no edges yet: add the
        history with `add_edges`."""
        if len(model.convs) != 2 or not all(isinstance(c, SAGEConv | GCNConv) for c in model.convs):
            raise ValueError("IncrementalGNN supports FraudGNN with two SAGE or GCN layers")
        self.model = model.eval()
        self.gcn = isinstance(model.convs[0], GCNConv)
        self.index = {k: i for i, k in enumerate(keys)}
        n, hidden = len(keys), model.encode.out_features
        cap = max(16, 2 * n)
        self.n = n
        self.h0 = torch.zeros(cap, hidden)
        self.z = torch.zeros(cap, hidden, dtype=torch.float64)
        self.deg = np.zeros(cap, dtype=np.int64)
        self.self_loop = np.zeros(cap, dtype=bool)
        self._pos = np.zeros(cap, dtype=np.int64)  # scratch: node -> row in the update region
        self.nbrs: list[set[int]] = [set() for _ in range(n)]
        with torch.no_grad():
            self.h0[:n] = torch.relu(model.encode(torch.from_numpy(node_x)))

    def add_edges(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Add the history's transactions (node indices) and rebuild the caches from scratch."""
        for a, b in zip(src.tolist(), dst.tolist(), strict=True):
            self.nbrs[a].add(b)
            self.nbrs[b].add(a)
        n = self.n
        self.deg[:n] = [len(s) for s in self.nbrs]
        self.self_loop[:n] = [i in s for i, s in enumerate(self.nbrs)]
        rows = np.repeat(np.arange(n), self.deg[:n])
        cols = np.fromiter((j for s in self.nbrs for j in s), dtype=np.int64, count=len(rows))
        if self.gcn:  # M(v) = N(v) ∪ {v}: GCN adds the missing self-loops
            extra = np.flatnonzero(~self.self_loop[:n])
            rows, cols = np.concatenate([rows, extra]), np.concatenate([cols, extra])
        weighted = self.h0[:n].double() * self._alpha(np.arange(n))[:, None]
        self.z[:n] = 0
        self.z.index_add_(0, torch.from_numpy(rows), weighted[torch.from_numpy(cols)])

    def _dhat(self, nodes: np.ndarray) -> np.ndarray:
        return self.deg[nodes] + ~self.self_loop[nodes]

    def _alpha(self, nodes: np.ndarray) -> torch.Tensor:
        """Weight of a node's h0 in its neighbours' sums (GCN: d̂^-1/2, SAGE mean: 1)."""
        if not self.gcn:
            return torch.ones(len(nodes), dtype=torch.float64)
        return torch.from_numpy(self._dhat(nodes).astype(np.float64) ** -0.5)

    def node(self, key: str) -> int:
        """Index of account `key`, adding an isolated node for an account never seen."""
        i = self.index.get(key)
        if i is None:
            i = self.index[key] = self.n
            if self.n == len(self.deg):
                self._grow()
            self.nbrs.append(set())
            self.n += 1
        return i

    def _grow(self) -> None:
        cap = 2 * len(self.deg)
        self.h0 = torch.cat([self.h0, torch.zeros_like(self.h0)])[:cap]
        self.z = torch.cat([self.z, torch.zeros_like(self.z)])[:cap]
        self.deg = np.concatenate([self.deg, np.zeros_like(self.deg)])[:cap]
        self.self_loop = np.concatenate([self.self_loop, np.zeros_like(self.self_loop)])[:cap]
        self._pos = np.zeros(cap, dtype=np.int64)

    @torch.no_grad()
    def add_and_score(
        self, s_key: str, d_key: str, node_x: dict[str, np.ndarray], edge_attr: np.ndarray
    ) -> float:
        """Add transaction s -> d (its accounts' updated, scaled features in `node_x`) and return
        its fraud logit."""
        s, d = self.node(s_key), self.node(d_key)
        centers = [s] if s == d else [s, d]
        conv1, conv2 = self.model.convs
        x_new = np.stack([node_x[s_key], node_x[d_key]][: len(centers)])
        h0_new = torch.relu(self.model.encode(torch.from_numpy(x_new)))
        old_n = {u: _array(self.nbrs[u]) for u in centers}
        new_edge = d not in self.nbrs[s]
        old_alpha = self._alpha(np.array(centers))
        self.nbrs[s].add(d)
        self.nbrs[d].add(s)
        for u in centers:
            self.deg[u] = len(self.nbrs[u])
        self.self_loop[s] = s in self.nbrs[s]
        new_alpha = self._alpha(np.array(centers))
        new_n = {u: _array(self.nbrs[u]) for u in centers}

        region = np.unique(np.concatenate([centers, *new_n.values()]))
        pos = self._pos
        pos[region] = np.arange(len(region))
        rows = torch.from_numpy(region)
        z = self.z[rows]
        h0 = self.h0[rows]
        for k, u in enumerate(centers):
            # u's term in every sum that already held it: replace old by new weighted h0.
            holders = np.union1d(old_n[u], [u]) if self.gcn else old_n[u]
            delta = new_alpha[k] * h0_new[k].double() - old_alpha[k] * self.h0[u].double()
            z[torch.from_numpy(pos[holders])] += delta
            h0[pos[u]] = h0_new[k]
        if new_edge and (s != d or not self.gcn):  # a self-loop is already in GCN's sums
            z[pos[s]] += new_alpha[-1] * h0_new[-1].double()
            if s != d:
                z[pos[d]] += new_alpha[0] * h0_new[0].double()

        if self.gcn:
            norm = torch.from_numpy(self._dhat(region).astype(np.float32)) ** -0.5
            h1 = h0 + torch.relu(conv1.lin(z.float() * norm[:, None]) + conv1.bias)
        else:
            deg = torch.from_numpy(np.maximum(self.deg[region], 1).astype(np.float64))
            h1 = h0 + torch.relu(conv1.lin_l((z / deg[:, None]).float()) + conv1.lin_r(h0))
        h2 = []
        for u in centers:
            members = torch.from_numpy(pos[new_n[u]])
            if self.gcn:
                if not self.self_loop[u]:
                    members = torch.cat([members, torch.tensor([pos[u]])])
                agg = (h1[members] * norm[members, None]).sum(0) * norm[pos[u]]
                out = conv2.lin(agg) + conv2.bias
            else:
                out = conv2.lin_l(h1[members].mean(0)) + conv2.lin_r(h1[pos[u]])
            h2.append(h1[pos[u]] + torch.relu(out))
        self.z[rows] = z
        self.h0[torch.tensor(centers)] = h0_new
        tx = torch.from_numpy(np.asarray(edge_attr, dtype=np.float32))
        return float(self.model.score(torch.cat([h2[0], h2[-1], tx])).squeeze(-1))


def _array(nodes: set[int]) -> np.ndarray:
    return np.fromiter(nodes, dtype=np.int64, count=len(nodes))
