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

    def forward(self, data: Data, tx: torch.Tensor | None = None) -> torch.Tensor:
        """Fraud logits of transactions `tx` (indices; default all). Account embeddings are
        cheap (few accounts); scoring only a batch of transactions keeps training fast."""
        h = torch.relu(self.encode(data.x))
        for conv in self.convs:
            h = h + torch.relu(conv(h, data.edge_index))  # residual keeps account's own signal
        tx_index, edge_attr = data.tx_index, data.edge_attr
        if tx is not None:
            tx_index, edge_attr = tx_index[:, tx], edge_attr[tx]
        src, dst = tx_index
        return self.score(torch.cat([h[src], h[dst], edge_attr], dim=-1)).squeeze(-1)


@register("gnn")
def build_gnn(spec: ModelSpec) -> FraudGNN:
    return FraudGNN(spec.node_in_dim, spec.in_dim, spec.hidden, spec.gnn_conv, spec.output_bias)
