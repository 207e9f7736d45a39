"""A bank's account/transaction graph as one torch_geometric `Data` object."""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import coalesce, to_undirected

from fedfraud.data.features import BankTable
from fedfraud.errors import DataError


def to_graph(table: BankTable, x: np.ndarray, node_x: np.ndarray | None) -> Data:
    """Accounts are nodes; each transaction is an edge scored by the model.

    `edge_index` holds the undirected, de-duplicated account graph used for message passing;
    `tx_index` (2, n) holds each transaction's sender/receiver, `edge_attr` its features.
    """
    if table.src is None or table.dst is None or node_x is None:
        raise DataError(
            f"{table.name}: the GNN needs sender and receiver account ids, which this data "
            "lacks (e.g. the ULB card dataset); use --model mlp or map sender/receiver columns."
        )
    tx_index = torch.from_numpy(np.stack([table.src, table.dst]))
    num_nodes = node_x.shape[0]
    edge_index = to_undirected(coalesce(tx_index, num_nodes=num_nodes), num_nodes=num_nodes)
    return Data(
        x=torch.from_numpy(node_x),
        edge_index=edge_index,
        tx_index=tx_index,
        edge_attr=torch.from_numpy(x),
        y=torch.from_numpy(table.y),
        split=torch.from_numpy(table.split.astype(np.int64)),
        num_nodes=num_nodes,
    )
