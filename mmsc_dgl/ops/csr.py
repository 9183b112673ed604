"""A compressed sparse row adjacency in plain torch tensors (no DGL).

Row ``i`` lists the *source* nodes whose messages node ``i`` aggregates: for a meta-path table,
the meta-path neighbours of item ``i``.  This is DGL's CSC / "in-edges by destination" view:
``CSR.from_dgl(g)`` row ``i`` is ``g.in_edges(i)``, the rows of ``g.adj_tensors("csc")``.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import nn


if hasattr(torch.compiler, "is_compiling"):  # torch 2.3+
    is_compiling = torch.compiler.is_compiling
else:
    # torch 2.2: False when called, True where torch.compile traces it (dynamo's trace rules
    # name it).  torch._dynamo.is_compiling would import dynamo, with sympy and transformers
    # (about 1.5 s), into every process that only runs a model.
    is_compiling = torch._utils.is_compiling


class CSR(nn.Module):
    """Destination-major adjacency: ``indptr`` [num_rows + 1], ``indices`` [num_edges] (sources).

    Edge ``e`` goes from ``indices[e]`` to the row whose ``indptr`` range holds ``e``.  Derived
    arrays (the row of every edge, the transpose) are computed once and cached.

    A ``CSR`` is a module holding its tensors as (non-persistent) buffers: stored as an attribute
    of your module it follows ``module.to(device)``, and it never enters a ``state_dict``.
    ``csr.to(device)`` itself returns a moved copy, as a tensor's ``.to`` does.

    Args:
        indptr: int64 row pointers, non-decreasing, ``indptr[0] == 0``.
        indices: int64 source node of each edge.
        num_src: number of source nodes (default: ``num_rows``).
        edge_ids: for an adjacency read from a DGL graph, the graph's edge id of each edge
            (``edge_weight`` given in DGL's edge order is read through it); ``None`` otherwise.

    Example:
        >>> csr = CSR(torch.tensor([0, 2, 2, 3]), torch.tensor([1, 2, 0]))
        >>> csr.num_rows, csr.num_edges, csr.nonempty.tolist()
        (3, 3, [True, False, True])
    """

    indptr: torch.Tensor
    indices: torch.Tensor
    edge_ids: Optional[torch.Tensor]
    _rows: Optional[torch.Tensor]
    _t_indptr: Optional[torch.Tensor]
    _t_rows: Optional[torch.Tensor]
    _t_order: Optional[torch.Tensor]

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, num_src: Optional[int] = None,
                 edge_ids: Optional[torch.Tensor] = None, validate: bool = True):
        super().__init__()
        if indptr.dim() != 1 or indices.dim() != 1:
            raise ValueError("indptr and indices must be 1-D")
        if validate and (indptr.numel() == 0 or int(indptr[0]) != 0 or int(indptr[-1]) != indices.numel()):
            raise ValueError(f"indptr must start at 0 and end at len(indices)={indices.numel()}")
        self.register_buffer("indptr", indptr.to(torch.int64), persistent=False)
        self.register_buffer("indices", indices.to(torch.int64), persistent=False)
        self.register_buffer("edge_ids", None if edge_ids is None else edge_ids.to(torch.int64), persistent=False)
        self.register_buffer("_rows", None, persistent=False)
        for name in ("_t_indptr", "_t_rows", "_t_order"):
            self.register_buffer(name, None, persistent=False)
        self.num_src = int(num_src) if num_src is not None else self.num_rows
        self._max_degree: Optional[int] = None

    @classmethod
    def from_dgl(cls, graph: Any, etype: Any = None) -> "CSR":
        """The adjacency of one edge type of a ``DGLGraph`` or a ``DGLBlock`` (message-flow graph
        from DGL's samplers): row ``i`` lists the sources of the edges *into* destination node
        ``i`` (``graph.in_edges(i)``), which is where DGL's message passing aggregates.  The
        rows are the destination nodes (``graph.num_dst_nodes()``: all nodes of a graph, the
        output nodes of a block), the sources ``graph.num_src_nodes()``.  ``edge_ids`` keeps the
        graph's edge id of every edge.  DGL is not imported here: any object with DGL's
        ``adj_tensors`` works.

        Example:
            >>> import dgl
            >>> g = dgl.graph((torch.tensor([0, 1, 2]), torch.tensor([1, 2, 1])))
            >>> csr = CSR.from_dgl(g)
            >>> csr.indptr.tolist(), csr.indices.tolist(), csr.edge_ids.tolist()
            ([0, 0, 2, 3], [0, 2, 1], [0, 2, 1])
        """
        if not hasattr(graph, "adj_tensors"):
            raise TypeError(f"expected a DGLGraph or DGLBlock, got {type(graph).__name__}")
        if etype is None and len(graph.canonical_etypes) != 1:
            raise ValueError(f"the graph has {len(graph.canonical_etypes)} edge types "
                             f"{graph.canonical_etypes}; pass the layer etype=NAME (or the graph "
                             f"graph[NAME]) to name the one to aggregate over")
        canonical = graph.to_canonical_etype(etype) if etype is not None else graph.canonical_etypes[0]
        num_src, num_dst = graph.num_src_nodes(canonical[0]), graph.num_dst_nodes(canonical[2])
        # Read the format the graph already holds: DGL 2.1 crashes the process (SIGSEGV) when a
        # block (to_block) holding only COO is asked to make its CSC, and a graph restricted by
        # formats() may refuse to make another.  Only an existing CSC is taken as it is.
        created = graph.formats()["created"] if hasattr(graph, "formats") else ["csc"]
        if "csc" in created:
            indptr, indices, eids = graph.adj_tensors("csc", canonical)
            csr = cls(indptr, indices, num_src, edge_ids=eids)
        else:
            if "coo" in created:
                src, dst, eids = graph.edges(form="all", order="eid", etype=canonical)
            else:  # CSR only: expand its rows (sources) into COO
                src_ptr, dst, eids = graph.adj_tensors("csr", canonical)
                src = torch.repeat_interleave(torch.arange(num_src, device=src_ptr.device), src_ptr.diff())
            src, dst, eids = src.to(torch.int64), dst.to(torch.int64), eids.to(torch.int64)
            if dst.numel() and (int(dst.min()) < 0 or int(dst.max()) >= num_dst):
                # dgl.to_block(g, seeds) keeps every edge of g and marks those into other nodes
                # -1: a block is made from a frontier of the seeds, whose edges all end there.
                raise ValueError(f"the graph has edges of {canonical} into nodes outside its {num_dst} "
                                 f"destination nodes (ids {int(dst.min())} .. {int(dst.max())}); build a block "
                                 f"from a frontier: dgl.to_block(dgl.in_subgraph(g, seeds), seeds), or use "
                                 f"DGL's samplers")
            order = torch.argsort(dst * max(int(eids.numel()), 1) + eids)  # by destination, then edge id
            indptr = torch.zeros(num_dst + 1, dtype=torch.int64, device=dst.device)
            indptr[1:] = torch.cumsum(torch.bincount(dst, minlength=num_dst), 0)
            csr = cls(indptr, src[order], num_src, edge_ids=eids[order])
        if csr.num_rows != num_dst:  # the adjacency covers every destination
            raise ValueError("unexpected CSC shape from the graph")
        return csr

    @classmethod
    def from_edges(cls, dst: torch.Tensor, src: torch.Tensor, num_rows: int,
                   num_src: Optional[int] = None) -> "CSR":
        """Build from edge lists (any order); edges are sorted by ``(dst, src)``."""
        dst = dst.to(torch.int64)
        src = src.to(torch.int64)
        order = torch.argsort(dst * max(int(num_src or num_rows), 1) + src)
        counts = torch.bincount(dst, minlength=num_rows)
        indptr = torch.zeros(num_rows + 1, dtype=torch.int64, device=dst.device)
        indptr[1:] = torch.cumsum(counts, 0)
        return cls(indptr, src[order], num_src)

    def __prepare_scriptable__(self):
        raise RuntimeError("CSR and the mmsc_dgl layers are not TorchScript-able (they dispatch on "
                           "kernels and graph types at run time); use torch.compile or torch.export")

    @property
    def num_rows(self) -> int:
        return self.indptr.numel() - 1

    @property
    def num_edges(self) -> int:
        return self.indices.numel()

    @property
    def device(self) -> torch.device:
        return self.indptr.device

    @property
    def degrees(self) -> torch.Tensor:
        return self.indptr[1:] - self.indptr[:-1]

    @property
    def nonempty(self) -> torch.Tensor:
        """Rows with at least one neighbour: the others must be handled by the caller."""
        return self.degrees > 0

    def extra_repr(self) -> str:
        return f"rows={self.num_rows:,}, src={self.num_src:,}, edges={self.num_edges:,}"

    def __repr__(self) -> str:
        return f"CSR({self.extra_repr()})"

    def to(self, *args, **kwargs) -> "CSR":  # type: ignore[override]
        """A copy on another device (``module.to`` moves a CSR held by the module in place)."""
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is None:
            return self
        ids = None if self.edge_ids is None else self.edge_ids.to(device)
        out = CSR(self.indptr.to(device), self.indices.to(device), self.num_src, edge_ids=ids, validate=False)
        out._max_degree = self._max_degree
        return out

    def forward(self, *args, **kwargs):
        raise TypeError("a CSR is an adjacency, not a layer: pass it to one (layer(csr, feat))")

    def select_rows(self, rows: torch.Tensor) -> "CSR":
        """The sub-adjacency of ``rows`` (in that order); sources keep their global ids."""
        rows = rows.to(self.device, torch.int64)
        starts = self.indptr[rows]
        degree = self.indptr[rows + 1] - starts
        indptr = torch.zeros(rows.numel() + 1, dtype=torch.int64, device=self.device)
        indptr[1:] = torch.cumsum(degree, 0)
        offsets = torch.arange(int(indptr[-1]), device=self.device) - torch.repeat_interleave(indptr[:-1], degree)
        return CSR(indptr, self.indices[torch.repeat_interleave(starts, degree) + offsets], self.num_src,
                   validate=False)

    def max_degree(self) -> int:
        """The largest row degree (0 without rows), computed once: a host sync in eager code, a
        constant in a trace.  Code that ``torch.compile`` traces needs it asked for before (MMSC
        asks at construction); otherwise the trace breaks there."""
        if self._max_degree is None:
            self._max_degree = int(self.degrees.max()) if self.num_rows else 0
        return self._max_degree

    def padded(self, rows: torch.Tensor, width: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """The neighbours of ``rows`` as padded lists ``(neighbours [B, width], mask [B, width])``,
        in row order; a padding slot holds id 0 and ``False``.  ``width`` defaults to
        :meth:`max_degree` (a smaller one keeps each row's first ``width`` neighbours).  Unlike
        :meth:`select_rows`, every shape is known before the data is read: ``torch.compile``
        traces it whole (``fullgraph=True``), at the price of ``B x width`` slots.

        Example:
            >>> nbr, mask = CSR(torch.tensor([0, 2, 2, 3]), torch.tensor([1, 2, 0])).padded(torch.tensor([2, 0]))
            >>> nbr.tolist(), mask.tolist()
            ([[0, 0], [1, 2]], [[True, False], [True, True]])
        """
        width = self.max_degree() if width is None else int(width)
        rows = rows.to(self.device, torch.int64).reshape(-1)
        starts = self.indptr[rows]
        slots = torch.arange(width, device=self.device)
        mask = slots < (self.indptr[rows + 1] - starts).unsqueeze(1)
        if self.num_edges == 0:
            return torch.zeros(mask.shape, dtype=torch.int64, device=self.device), mask
        at = (starts.unsqueeze(1) + slots).clamp(max=self.num_edges - 1)
        return self.indices[at].masked_fill(~mask, 0), mask

    def drop_edges(self, p: float, generator: Optional[torch.Generator] = None) -> "CSR":
        """A copy without each edge with probability ``p`` (graph-level dropout for views)."""
        if p <= 0:
            return self
        keep = torch.rand(self.num_edges, generator=generator).to(self.device) >= p
        counts = torch.zeros(self.num_rows, dtype=torch.int64, device=self.device)
        counts.index_add_(0, self.row_ids(), keep.to(torch.int64))
        indptr = torch.zeros(self.num_rows + 1, dtype=torch.int64, device=self.device)
        indptr[1:] = torch.cumsum(counts, 0)
        return CSR(indptr, self.indices[keep], self.num_src, validate=False)

    def row_ids(self) -> torch.Tensor:
        """The destination row of every edge, [num_edges]."""
        if self._rows is None:
            # searchsorted keeps the output's size static (num_edges): torch.compile(fullgraph=True)
            # traces it, where repeat_interleave's data-dependent size would break the graph.
            edges = torch.arange(self.num_edges, device=self.device)
            rows = torch.searchsorted(self.indptr, edges, right=True) - 1
            if is_compiling():  # computed in the graph, not cached: a trace must not write buffers
                return rows
            self._rows = rows
        return self._rows

    def transpose(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Source-major view: ``(t_indptr [num_src + 1], t_rows [E], t_edge_ids [E])``.
        ``t_edge_ids`` are positions in this CSR's edge order."""
        if self._t_order is None:
            rows = self.row_ids()
            order = torch.argsort(self.indices * max(self.num_rows, 1) + rows)
            # a scatter, not bincount: its output shape is static, so torch.compile traces it
            counts = torch.zeros(self.num_src, dtype=torch.int64, device=self.device).index_add_(
                0, self.indices, torch.ones_like(self.indices))
            t_indptr = torch.zeros(self.num_src + 1, dtype=torch.int64, device=self.device)
            t_indptr[1:] = torch.cumsum(counts, 0)
            if is_compiling():
                return t_indptr, rows[order], order
            self._t_indptr, self._t_rows, self._t_order = t_indptr, rows[order], order
        assert self._t_indptr is not None and self._t_rows is not None
        return self._t_indptr, self._t_rows, self._t_order


class DroppedEdges:
    """``csr`` with each edge dropped with probability ``p``, read through :meth:`padded` only:
    graph-level dropout as :meth:`CSR.drop_edges` draws it, for code that ``torch.compile``
    traces (no new adjacency is built, and every shape is static).  Each padded slot is kept
    independently, so the rows it is asked for are dropped as the whole table would be."""

    def __init__(self, csr: CSR, p: float, generator: Optional[torch.Generator] = None):
        self.csr, self.p, self.generator = csr, float(p), generator

    def keep(self, shape, device) -> torch.Tensor:
        """Which of ``shape`` slots (or edges) stay: one draw each, kept with probability ``1 - p``."""
        return torch.rand(shape, generator=self.generator).to(device) >= self.p

    def padded(self, rows: torch.Tensor, width: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        neighbours, mask = self.csr.padded(rows, width)
        return neighbours, mask & self.keep(mask.shape, mask.device)


def as_csr(graph: Any, etype: Any = None) -> CSR:
    """``graph`` as a :class:`CSR`: a ``CSR`` as it is, a ``DGLGraph`` or ``DGLBlock`` through
    :meth:`CSR.from_dgl` (one edge type, or ``etype``)."""
    if isinstance(graph, CSR):
        return graph
    if hasattr(graph, "adj_tensors"):
        return CSR.from_dgl(graph, etype)
    raise TypeError(f"expected a CSR, DGLGraph or DGLBlock, got {type(graph).__name__}")


def graph_inputs(graph: Any, feat: Any, etype: Any = None) -> Tuple[CSR, torch.Tensor, torch.Tensor, bool]:
    """What a layer's ``forward(graph, feat)`` works on, by DGL's conventions: the adjacency,
    the source and the destination features, and whether they are one tensor.  ``feat`` is one
    tensor (on a ``DGLBlock`` the destination nodes are its first ``num_dst_nodes()`` sources,
    as DGL's layers assume) or a pair ``(feat_src, feat_dst)``."""
    csr = as_csr(graph, etype)
    if isinstance(feat, tuple):
        feat_src, feat_dst = feat
        if csr.device != feat_src.device:  # a DGL graph left on another device than the features
            csr = csr.to(feat_src.device)
        return csr, feat_src, feat_dst, False
    if csr.device != feat.device:
        csr = csr.to(feat.device)
    if getattr(graph, "is_block", False):
        return csr, feat, feat[: csr.num_rows], False
    if feat.shape[0] != csr.num_rows:
        raise ValueError(f"feat has {feat.shape[0]} rows but the graph has {csr.num_rows} destination rows; "
                         "pass (feat_src, feat_dst) for bipartite graphs and mini-batches")
    return csr, feat, feat, True


def edge_weight_in_csr_order(csr: CSR, edge_weight: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``edge_weight`` [E] (or [E, 1]) given in the graph's edge order (DGL's edge ids for an
    adjacency read from a DGL graph; the CSR's own order otherwise), in the CSR's order, [E]."""
    if edge_weight is None:
        return None
    weight = edge_weight.reshape(edge_weight.shape[0], -1)
    if weight.shape != (csr.num_edges, 1):
        raise ValueError(f"edge_weight must have one value per edge ({csr.num_edges}), got {tuple(edge_weight.shape)}")
    weight = weight.squeeze(1)
    return weight[csr.edge_ids] if csr.edge_ids is not None else weight
