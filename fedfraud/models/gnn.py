"""Graph model: account embeddings by message passing, then a per-transaction edge scorer.

We score transactions (edges), not accounts: labels are per transaction, banks act on
transactions, and the MLP and GNN are then evaluated on exactly the same rows.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import GCNConv, SAGEConv

from fedfraud.models.registry import ModelSpec, register


class FraudGNN(nn.Module):
    """Two GraphSAGE or GCN layers over the account graph + an MLP over [h_src, h_dst, tx]."""

    def __init__(
        self,
        node_in_dim: int,
        edge_in_dim: int,
        hidden: int = 64,
        conv: str = "sage",
        output_bias: float = 0.0,
    ):
        super().__init__()
        layer = {"sage": lambda: SAGEConv(hidden, hidden), "gcn": lambda: GCNConv(hidden, hidden)}
        self.encode = nn.Linear(node_in_dim, hidden)
        self.convs = nn.ModuleList([layer[conv](), layer[conv]()])
        self.score = nn.Sequential(
            nn.Linear(2 * hidden + edge_in_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )
        nn.init.constant_(self.score[-1].bias, output_bias)

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Account embeddings over one graph snapshot."""
        h = torch.relu(self.encode(x))
        for conv in self.convs:
            h = h + torch.relu(conv(h, edge_index))  # residual keeps account's own signal
        return h

    def head_inputs(self, data: Data, tx: torch.Tensor | None = None) -> torch.Tensor:
        """[h_src, h_dst, tx features] of transactions `tx` (indices; default all), each from
        the graph snapshot that scores it (`data.tx_graph`: 0 = training graph, 1 = the graph
        up to the end of validation; see fedfraud.data.graph). Only snapshots needed by `tx`
        are embedded, so training batches pay for one message-passing pass."""
        tx_index, edge_attr = data.tx_index, data.edge_attr
        which = getattr(data, "tx_graph", None)
        if which is None:
            which = torch.zeros(tx_index.shape[1], dtype=torch.long)
        if tx is not None:
            tx_index, edge_attr, which = tx_index[:, tx], edge_attr[tx], which[tx]
        src, dst = tx_index
        pair = edge_attr.new_empty((len(which), 2 * self.encode.out_features))
        for g in torch.unique(which).tolist():
            h = (
                self.embed(data.x, data.edge_index)
                if g == 0
                else self.embed(data.x_eval, data.edge_index_eval)
            )
            rows = which == g
            pair[rows] = torch.cat([h[src[rows]], h[dst[rows]]], dim=-1)
        return torch.cat([pair, edge_attr], dim=-1)

    def forward(self, data: Data, tx: torch.Tensor | None = None) -> torch.Tensor:
        """Fraud logits of transactions `tx` (indices; default all). Account embeddings are
        cheap (few accounts); scoring only a batch of transactions keeps training fast."""
        return self.score(self.head_inputs(data, tx)).squeeze(-1)


@register("gnn")
def build_gnn(spec: ModelSpec) -> FraudGNN:
    return FraudGNN(spec.node_in_dim, spec.in_dim, spec.hidden, spec.gnn_conv, spec.output_bias)
