"""DGL's CPU kernels (``dgl.ops.edge_softmax`` + ``u_mul_e_sum``) behind the same signature.

For comparison in tests and benchmarks only.  DGL is imported when this module is imported, and
``mmsc_dgl.ops`` imports this module only when the DGL implementation is asked for.
"""
from __future__ import annotations

import dgl
import torch
from dgl.ops import edge_softmax as dgl_edge_softmax
from dgl.ops import u_mul_e_sum

from mmsc_dgl.ops.csr import CSR


def to_dgl_graph(csr: CSR) -> dgl.DGLGraph:
    """The bipartite DGL graph src -> row with edge ids in CSR order."""
    eids = torch.arange(csr.num_edges, dtype=torch.int64, device=csr.device)
    return dgl.heterograph({("_U", "_E", "_V"): ("csc", (csr.indptr, csr.indices, eids))},
                           num_nodes_dict={"_U": csr.num_src, "_V": csr.num_rows})


def edge_softmax_aggregate(csr: CSR, logits: torch.Tensor, feat: torch.Tensor,
                           return_attention: bool = False, graph: dgl.DGLGraph = None):
    graph = graph if graph is not None else to_dgl_graph(csr)
    alpha = dgl_edge_softmax(graph, logits)
    out = u_mul_e_sum(graph, feat, alpha.unsqueeze(-1))
    return (out, alpha) if return_attention else out
