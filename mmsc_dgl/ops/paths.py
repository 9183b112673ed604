"""Weighted counts of the two-hop paths that join item pairs, in plain torch (no DGL, no scipy).

For undirected graphs :math:`A_x, A_y` (0/1, no self-loops) and node weights :math:`w`:

.. math::
    C_{xy}(i, j) = \\sum_k A_x[i, k]\\, w_k\\, A_y[k, j]

the number of ``x``-then-``y`` paths from ``i`` to ``j``, each weighted by its middle item.
With :math:`w_k = 1 / \\log \\deg(k)` and ``x = y`` this is Adamic-Adar; with :math:`w = 1` it
counts common neighbours.  Two ways to compute it, for two shapes of question:

* :meth:`PathCounter.pairs` -- arbitrary pairs ``(i, j)``: each pair walks the neighbours of
  whichever end has the smaller degree and looks the closing edge up in the other graph's
  sorted edge keys (``O(min degree x log E)`` per pair).  Training batches use it.
* :meth:`PathCounter.rows` -- every ``j`` for a block of ``i``: a sparse-dense product
  ``(A_x[i] * w) A_y``, dense ``[B, N]``.  Ranking 1,000 candidates per query uses it.

A two-hop path never uses the edge ``(i, j)`` itself (its middle item would be ``i`` or ``j``,
and the graphs have no self-loops), so counting on a training graph that holds a training pair
leaks nothing about that pair.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Protocol, Tuple

import torch

from mmsc_dgl.ops.csr import CSR, is_compiling
from mmsc_dgl.ops.sparse import SparseMatrix, sparse_mm


class EdgeArrays(Protocol):
    """One relation's edges as ``src`` and ``dst`` node-id arrays (a
    :class:`~mmsc_dgl.data.edges.RelationEdges`; this floor does not import it)."""

    src: Any
    dst: Any


def undirected(src: torch.Tensor, dst: torch.Tensor, num_items: int) -> CSR:
    """The undirected 0/1 adjacency of an edge list (both directions, deduplicated, no
    self-loops); row ``i`` lists the neighbours of ``i``, sorted."""
    src = torch.as_tensor(src, dtype=torch.int64)
    dst = torch.as_tensor(dst, dtype=torch.int64)
    keep = src != dst
    a, b = torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])
    code = torch.unique(a * num_items + b)
    return CSR.from_edges(code // num_items, code % num_items, num_items)


class PathCounter:
    """Two-hop path counts between items over named undirected graphs.

    Args:
        graphs: name -> undirected adjacency (:func:`undirected`), all over the same items.
        weight: weight of each middle item [num_items] (default: 1, common neighbours).

    Example:
        >>> g = undirected(torch.tensor([0, 1]), torch.tensor([1, 2]), 3)   # 0 - 1 - 2
        >>> PathCounter({"s": g}).pairs("s", "s", torch.tensor([0]), torch.tensor([2])).tolist()
        [1.0]
    """

    def __init__(self, graphs: Dict[str, CSR], weight: Optional[torch.Tensor] = None,
                 weigh_by: Optional[Tuple[str, ...]] = None):
        sizes = {g.num_rows for g in graphs.values()}
        if len(sizes) != 1:
            raise ValueError(f"the graphs cover different item counts: {sorted(sizes)}")
        self.num_items = sizes.pop()
        self.graphs = dict(graphs)
        # The graphs whose union's degrees gave ``weight`` (None: all of them); with_edges keeps the rule.
        self.weigh_by = None if weigh_by is None else tuple(weigh_by)
        device = next(iter(graphs.values())).device
        self.weight = (torch.ones(self.num_items, device=device) if weight is None
                       else weight.to(device=device, dtype=torch.float32))
        # Edge keys row * N + col, sorted because CSR rows and their indices are sorted.
        self._keys = {name: g.row_ids() * self.num_items + g.indices for name, g in self.graphs.items()}
        self._sparse: Dict[str, SparseMatrix] = {}
        for g in self.graphs.values():  # the width of padded walks in a compiled trace (pairs)
            g.max_degree()

    def unweighted(self) -> "PathCounter":
        """The same graphs counting every middle item once (common neighbours); shares the
        sorted edge keys instead of rebuilding them."""
        out = object.__new__(PathCounter)
        out.num_items, out.graphs, out._keys, out._sparse = self.num_items, self.graphs, self._keys, self._sparse
        out.weight = torch.ones_like(self.weight)
        out.weigh_by = self.weigh_by
        return out

    def __deepcopy__(self, memo) -> "PathCounter":
        # Read-only graph state, shared by copies of the model that holds it (as the models'
        # tables are); its cache of sparse matrices could not be deep-copied anyway.
        return self

    def to(self, device) -> "PathCounter":
        return PathCounter({k: g.to(device) for k, g in self.graphs.items()}, self.weight.to(device), self.weigh_by)

    @property
    def device(self) -> torch.device:
        return self.weight.device

    def degrees(self, name: str) -> torch.Tensor:
        return self.graphs[name].degrees

    def _has_edge(self, name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        keys = self._keys[name]
        if keys.numel() == 0:
            return torch.zeros(a.shape, dtype=torch.bool, device=a.device)
        query = a * self.num_items + b
        at = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
        return keys[at] == query

    def linked(self, name: str, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """1.0 where ``(src, dst)`` is an edge of graph ``name``, else 0.0 (pairs of any equal shape)."""
        return self._has_edge(name, src.to(torch.int64), dst.to(torch.int64)).to(torch.float32)

    def _walk(self, walk: str, close: str, start: torch.Tensor, end: torch.Tensor, out: torch.Tensor,
              pick: torch.Tensor) -> None:
        """Add to ``out[pick]`` the weighted paths start -walk- k -close- end, in blocks of
        about :data:`WALK_BLOCK` first hops (each pair whole in one block: the same sums in the
        same order as one pass)."""
        if pick.numel() == 0:
            return
        graph = self.graphs[walk]
        hops = torch.cumsum(graph.indptr[start[pick] + 1] - graph.indptr[start[pick]], 0)
        total = int(hops[-1])
        if total == 0:
            return
        cuts = (torch.searchsorted(hops, torch.arange(WALK_BLOCK, total, WALK_BLOCK, device=hops.device), right=True)
                if total > WALK_BLOCK else hops[:0])
        for block in torch.tensor_split(pick, cuts.cpu()):
            owner, k = _expand(graph, start[block], torch.arange(block.numel(), device=start.device))
            if k.numel() == 0:
                continue
            hit = self._has_edge(close, k, end[block][owner])
            out.index_add_(0, block[owner[hit]], self.weight[k[hit]])

    def pairs(self, first: str, second: str, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """:math:`C_{first,second}(src, dst)` for pairs of the same shape (any shape)."""
        shape = src.shape
        src = src.reshape(-1).to(torch.int64)
        dst = dst.reshape(-1).to(torch.int64)
        if is_compiling():
            # Static shapes for torch.compile: walk every pair from src over padded neighbour
            # lists as wide as the largest degree of `first` (the same sum, in another order).
            hop, real = self.graphs[first].padded(src)
            hit = self._has_edge(second, hop, dst.unsqueeze(1).expand_as(hop)) & real
            return (self.weight[hop] * hit).sum(1).view(shape)
        out = torch.zeros(src.numel(), device=src.device)
        # Walk from the end with fewer neighbours; the graphs are undirected, so the path
        # i -x- k -y- j is also j -y- k -x- i.
        from_src = self.degrees(first)[src] <= self.degrees(second)[dst]
        self._walk(first, second, src, dst, out, torch.nonzero(from_src).flatten())
        self._walk(second, first, dst, src, out, torch.nonzero(~from_src).flatten())
        return out.view(shape)

    def reached(self, first: str, second: str, src: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:math:`C_{first,second}(src[b], j)` for every ``j`` it is non-zero for, sparse:
        ``(row [P], col [P], count [P])`` with ``row`` an index into ``src``, each ``(row, col)``
        once.  Costs the number of paths, not ``len(src) x N``: what ranking a large catalog needs
        (:meth:`rows` is dense)."""
        src = src.reshape(-1).to(torch.int64)
        a, b = self.graphs[first], self.graphs[second]
        # first hop: (row, k) for every neighbour k of src[row] in `first`
        row, k = _expand(a, src, torch.arange(src.numel(), device=src.device))
        # second hop: (row, j) for every neighbour j of k in `second`, weighted by k
        owner, j = _expand(b, k, torch.arange(k.numel(), device=src.device))
        n = self.num_items
        keys, inverse = torch.unique(row[owner] * n + j, return_inverse=True)
        counts = torch.zeros(keys.numel(), device=src.device).index_add_(0, inverse, self.weight[k[owner]])
        return keys // n, keys % n, counts

    def neighbours(self, name: str, src: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(row [P], col [P])``: every edge of graph ``name`` at ``src[row]``."""
        src = src.reshape(-1).to(torch.int64)
        return _expand(self.graphs[name], src, torch.arange(src.numel(), device=src.device))

    def _sparse_matrix(self, name: str) -> SparseMatrix:
        if name not in self._sparse:
            g = self.graphs[name]
            self._sparse[name] = SparseMatrix(g, torch.ones(g.num_edges, device=g.device))
        return self._sparse[name]

    def first_hop(self, name: str, src: torch.Tensor) -> torch.Tensor:
        """Dense ``A_name[src] * w`` [B, N]: the weighted first hop of each row."""
        g = self.graphs[name]
        rows = g.select_rows(src.reshape(-1).to(torch.int64))
        out = torch.zeros(rows.num_rows, self.num_items, device=src.device)
        out[rows.row_ids(), rows.indices] = self.weight[rows.indices]
        return out

    def rows(self, first: str, second: str, src: torch.Tensor, hop: Optional[torch.Tensor] = None) -> torch.Tensor:
        """:math:`C_{first,second}(src, \\cdot)` for every item, dense [len(src), N] (``hop``:
        :meth:`first_hop` of ``first`` when the caller already has it)."""
        if hop is None:
            hop = self.first_hop(first, src)
        # (X A_y)^T = A_y X^T, since A_y is symmetric: a sparse-dense product.
        return sparse_mm(self._sparse_matrix(second), hop.t().contiguous()).t()


def _expand(graph: CSR, nodes: torch.Tensor, tags: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(tag, neighbour)`` for every neighbour of every ``nodes[i]`` (tagged ``tags[i]``)."""
    lo = graph.indptr[nodes]
    counts = graph.indptr[nodes + 1] - lo
    total = int(counts.sum())
    within = torch.arange(total, device=nodes.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    return torch.repeat_interleave(tags, counts), graph.indices[torch.repeat_interleave(lo, counts) + within]


def adamic_adar_counter(num_items: int, edges: Mapping[str, EdgeArrays],
                        weigh_by: Optional[Iterable[str]] = None) -> PathCounter:
    """Two-hop path counts over each relation's undirected graph (``edges``: per name, objects
    with ``src``/``dst`` node ids), every middle item weighted by Adamic-Adar's
    :math:`1 / \\log \\deg` in the union of the graphs named in ``weigh_by`` (default: all of
    them; MMSC leaves its content-neighbour graph out, so that it changes no behaviour path's
    weight)."""
    graphs = {name: undirected(torch.as_tensor(e.src), torch.as_tensor(e.dst), num_items) for name, e in edges.items()}
    names = tuple(graphs) if weigh_by is None else tuple(weigh_by)
    union = undirected(torch.cat([graphs[g].row_ids() for g in names]),
                       torch.cat([graphs[g].indices for g in names]), num_items)
    return PathCounter(graphs, 1.0 / torch.log(union.degrees.clamp(min=2).to(torch.float32)),
                       None if weigh_by is None else names)


def normalised(csr: CSR) -> SparseMatrix:
    """:math:`D^{-1/2} A D^{-1/2}` of a square adjacency (row degrees): LightGCN's propagation
    matrix (multiply it with :func:`~mmsc_dgl.ops.sparse.sparse_mm`)."""
    norm = csr.degrees.clamp(min=1).to(torch.float32).rsqrt()
    return SparseMatrix(csr, norm[csr.row_ids()] * norm[csr.indices])


def normalised_adjacency(graphs: Iterable[CSR], num_items: int) -> SparseMatrix:
    """:func:`normalised` of the union of undirected ``graphs``."""
    graphs = list(graphs)
    return normalised(undirected(torch.cat([g.row_ids() for g in graphs]), torch.cat([g.indices for g in graphs]),
                                 num_items))


def with_edges(counter: PathCounter, extra: Mapping[str, Tuple[torch.Tensor, torch.Tensor]],
               num_items: Optional[int] = None) -> PathCounter:
    """``counter``'s graphs with ``extra`` edges added (per graph name, ``(src, dst)`` node ids;
    an edge already there changes nothing), over ``num_items`` items (default: the counter's;
    more when new items joined), with the Adamic-Adar weights of :func:`adamic_adar_counter`
    recomputed on the union.  What a new item's first edges add to the path evidence: paths
    through them, and links."""
    n = counter.num_items if num_items is None else int(num_items)
    if n < counter.num_items:
        raise ValueError(f"num_items {n} is fewer than the counter's {counter.num_items}")
    device = counter.device
    edges = {}
    for name, graph in counter.graphs.items():
        src, dst = graph.row_ids(), graph.indices
        more = extra.get(name)
        if more is not None:
            src = torch.cat([src, torch.as_tensor(more[0], dtype=torch.int64, device=device)])
            dst = torch.cat([dst, torch.as_tensor(more[1], dtype=torch.int64, device=device)])
        edges[name] = _Pairs(src, dst)
    unknown = set(extra) - set(counter.graphs)
    if unknown:
        raise ValueError(f"no graph named {sorted(unknown)[0]!r}: the counter has {sorted(counter.graphs)}")
    return adamic_adar_counter(n, edges, counter.weigh_by)


class _Pairs:
    def __init__(self, src: torch.Tensor, dst: torch.Tensor):
        self.src, self.dst = src, dst


WALK_BLOCK = 1 << 21
"""First hops (pair, middle item) expanded at once when pairs are walked: a few arrays of this
many int64 (about 16 MiB each).  Unbounded, the warm-up curve's walks (20k items, 200 queries x
1,001 candidates) took 0.8 GB above the process for one call."""

PAIR_TABLE_BYTES = 1 << 30
"""Most memory :func:`pair_table` may take while it builds (estimated from the walks before any
is made); above it the features are computed per pair, as before."""


class PairTable:
    """Every item pair with a non-zero feature, precomputed: sorted keys ``i * N + j`` [P] and
    their feature rows [P, F]; any other pair's row is zeros.  Built once
    (:func:`pair_table`), so a training step looks its pairs up (one binary search each)
    instead of walking their two-hop paths again; static shapes, so ``torch.compile`` traces it.

    Example:
        >>> t = PairTable(torch.tensor([1, 5]), torch.tensor([[1.0], [2.0]]), num_items=3)
        >>> t.lookup(torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0])).flatten().tolist()
        [1.0, 2.0, 0.0]
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, num_items: int):
        self.keys, self.values, self.num_items = keys, values, num_items

    def __deepcopy__(self, memo) -> "PairTable":
        return self  # read-only, shared by copies of the model that holds it (as the counter is)

    def to(self, device) -> "PairTable":
        return PairTable(self.keys.to(device), self.values.to(device), self.num_items)

    @property
    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()

    def lookup(self, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """Feature rows [*shape, F] of pairs ``(src, dst)`` of any equal shape."""
        query = src.to(torch.int64) * self.num_items + dst.to(torch.int64)
        if self.keys.numel() == 0:
            return self.values.new_zeros(*query.shape, self.values.shape[1])
        at = torch.searchsorted(self.keys, query.reshape(-1)).clamp(max=self.keys.numel() - 1)
        hit = (self.keys[at] == query.reshape(-1)).unsqueeze(1)
        return torch.where(hit, self.values[at], 0.0).view(*query.shape, self.values.shape[1])


def pair_table(counter: PathCounter, metapaths: Iterable[Tuple[str, str]], links: Iterable[str],
               budget: int = PAIR_TABLE_BYTES) -> Optional[PairTable]:
    """The :class:`PairTable` of ``counter``: per pair, :meth:`PathCounter.pairs` of each of
    ``metapaths``, then :meth:`PathCounter.linked` of each of ``links`` (the columns in that
    order); ``None`` when building it would take more than ``budget`` bytes (the walks, bounded
    by :math:`\\sum_k \\deg_x(k) \\deg_y(k)` per meta-path, and their keys)."""
    metapaths, links = list(metapaths), list(links)
    width = len(metapaths) + len(links)
    walks = sum(int((counter.degrees(x).to(torch.float64) * counter.degrees(y).to(torch.float64)).sum())
                for x, y in metapaths) + sum(counter.graphs[x].num_edges for x in links)
    if walks * (8 * 4 + 4 * width) > budget:
        return None
    everyone = torch.arange(counter.num_items, device=counter.device)
    keys, columns, values = [], [], []
    for f, (x, y) in enumerate(metapaths):
        row, col, count = counter.reached(x, y, everyone)
        keys.append(row * counter.num_items + col)
        columns.append(torch.full_like(row, f))
        values.append(count)
    for f, x in enumerate(links, start=len(metapaths)):
        keys.append(counter._keys[x])
        columns.append(torch.full_like(counter._keys[x], f))
        values.append(torch.ones(counter._keys[x].numel(), device=counter.device))
    unique, inverse = torch.unique(torch.cat(keys), return_inverse=True)
    table = torch.zeros(unique.numel(), width, device=counter.device)
    table[inverse, torch.cat(columns)] = torch.cat(values)
    return PairTable(unique, table, counter.num_items)
