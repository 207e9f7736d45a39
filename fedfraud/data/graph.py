"""A bank's account/transaction graph as one torch_geometric `Data` object, inductive in time."""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import coalesce, to_undirected

from fedfraud.data.features import TEST, BankTable, graph_rows
from fedfraud.errors import DataError


def to_graph(
    table: BankTable, x: np.ndarray, node_x: np.ndarray | None, node_x_eval: np.ndarray | None
) -> Data:
    """Accounts are nodes; each transaction is an edge scored by the model.

    Two snapshots of the undirected, de-duplicated account graph (see `graph_rows`):
    `x`/`edge_index` hold the training rows' accounts and edges (training and validation rows
    are scored on it), `x_eval`/`edge_index_eval` those of the training and validation rows (test
    rows are scored on it). `tx_graph` (n,) says which snapshot scores each transaction,
    `tx_index` (2, n) holds each transaction's sender/receiver, `edge_attr` its features.
    """
    if table.src is None or table.dst is None or node_x is None or node_x_eval is None:
        raise DataError(
            f"{table.name}: the GNN needs sender and receiver account ids, which this data "
            "lacks (e.g. the ULB card dataset); use --model mlp or map sender/receiver columns."
        )
    tx_index = torch.from_numpy(np.stack([table.src, table.dst]))
    num_nodes = node_x.shape[0]

    def edges(rows: np.ndarray) -> torch.Tensor:
        index = tx_index[:, torch.from_numpy(rows)]
        return to_undirected(coalesce(index, num_nodes=num_nodes), num_nodes=num_nodes)

    return Data(
        x=torch.from_numpy(node_x),
        edge_index=edges(graph_rows(table.split, 0)),
        x_eval=torch.from_numpy(node_x_eval),
        edge_index_eval=edges(graph_rows(table.split, TEST)),
        tx_graph=torch.from_numpy((table.split == TEST).astype(np.int64)),
        tx_index=tx_index,
        edge_attr=torch.from_numpy(x),
        y=torch.from_numpy(table.y),
        split=torch.from_numpy(table.split.astype(np.int64)),
        num_nodes=num_nodes,
    )
