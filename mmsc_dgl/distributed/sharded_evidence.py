"""MMSC's path evidence counted from neighbour lists held by DistDGL's graph servers (``mmsc-dgl
train --distributed --shard-embeddings``; issue 33, item 3; docs/distributed.md, section 6).

On one machine the path evidence (:class:`~mmsc_dgl.nn.path_evidence.PathEvidence`) holds the
whole training graph of each relation (and of the content look-alikes, ``content_paths``)
undirected, its sorted edge keys, the Adamic-Adar weight of every item and, where it fits, a
table of every pair's features: 0.58 KB an item, measured, on every trainer.  A step needs far
less.  The two-hop count of a pair,

.. math::
    C_{xy}(i, j) = \\sum_k A_x[i, k]\\, w_k\\, A_y[k, j],

reads only the edges at ``i`` and at ``j`` and the weights of their neighbours, and a link
(whether ``(i, j)`` is an edge of another relation) only the edges at ``i``.  So with
``--shard-embeddings``:

- each relation's graph is read from the graph the servers hold already: an item's in-edges
  there are its out-edges in the dataset, fetched by DistDGL's neighbour sampling with a fan-out
  of all (:class:`GraphRows`); a relation stored symmetrically (each edge both ways, as the
  synthetic catalog stores both) needs nothing more.  Its in-edges that are not also
  out-edges, which the servers cannot give (DistDGL 2.1 samples in-edges only), become a
  ``DistTensor`` of padded rows ``[N, their largest count]`` (:class:`PaddedRows`), as does the
  content look-alikes' graph (``content_paths``), which the partition does not hold at all, and
  the Adamic-Adar weights one ``[N]`` ``DistTensor``; each trainer writes its own items' rows
  (:func:`shard_path_evidence`);
- in the model, the evidence's counter is a :class:`FetchedPathCounter`: for the pairs of a call it
  pulls the rows of their items (and, for :meth:`~mmsc_dgl.nn.path_evidence.PathEvidence.reached`,
  of their neighbours too), builds an ordinary :class:`~mmsc_dgl.ops.paths.PathCounter` over that
  neighbourhood alone, and counts there (:meth:`FetchedPathCounter.around`).  Every edge a pair's
  paths and links use is in that neighbourhood and every edge in it is real, so the counts are the
  whole graph's (the same sums, added in another order); tests/test_sharded_evidence.py checks
  them against the whole counter;
- after training, the rows are pulled back into the whole counter
  (:meth:`ShardedPathEvidence.unshard`): calibration, evaluation and the saved run are one
  machine's.

Nothing in it is learnt or drawn: the rows are rebuilt the same at every start, so a resumed job
needs no shard file of them.  Padded rows cost ``N x max degree x 4`` bytes on the servers; for
the relations' graphs, whose degrees are skewed (a synthetic catalog of 100k items has items of
2,700 neighbours, and padding took 2 GB for 2.3 million edges), they would cost far more than
the edges, which is why those are read from the graph itself.  (Storing the in-edges in the
partition as another edge type was tried: DGL 2.1's METIS crashed the process on the repeated
edges, and its partitioner refuses an edge type without edges in some partition.)  The
look-alike graph's degrees are bounded by ``content_paths`` out and its hubs' in-degree; the log
says how full its rows are.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

import torch

from mmsc_dgl.ops.csr import CSR
from mmsc_dgl.ops.paths import PathCounter, pair_table, undirected

logger = logging.getLogger(__name__)


class PaddedRows:
    """A graph's undirected neighbours as padded rows of a ``DistTensor`` [num_items, width]
    (DistDGL's ids; each row the dataset's ids of the item's neighbours, sorted, ``-1`` past its
    end), or of anything indexed the same way."""

    def __init__(self, tensor, new_ids: torch.Tensor):
        self.tensor, self.new_ids = tensor, new_ids

    def edges_at(self, items: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(item, neighbour)`` for every edge at ``items`` (the dataset's ids)."""
        if items.numel() == 0:
            return items, items
        padded = self.tensor[self.new_ids[items]].to(torch.int64)
        present = padded >= 0
        return items.unsqueeze(1).expand_as(padded)[present], padded[present]


class GraphRows:
    """A relation's out-neighbours in the dataset, read from the graph the servers hold (stored
    reversed: an item's in-edges there are its out-edges,
    :data:`~mmsc_dgl.distributed.sampling.EDGE_DIR`) by neighbour sampling with a fan-out of
    all; from a ``DistGraph``, or from a local ``DGLGraph`` of the same layout (how it is tested
    without servers).  With ``extra`` (:class:`PaddedRows`), the edges it adds too: the
    relation's in-edges that are not out-edges, for the undirected graph.

    Args:
        graph: the ``DistGraph`` (or ``DGLGraph``).
        relation: the relation.
        new_ids: [num_items] DistDGL's id of each dataset item; ``orig`` the inverse.
    """

    def __init__(self, graph, relation: str, new_ids: torch.Tensor, orig: torch.Tensor,
                 extra: Optional[PaddedRows] = None):
        self.graph, self.new_ids, self.orig, self.extra = graph, new_ids, orig, extra
        self.etype = next(e for e in graph.canonical_etypes if e[1] == relation)
        self.fanout = {e: (-1 if e == self.etype else 0) for e in graph.canonical_etypes}

    def with_extra(self, extra: Optional[PaddedRows]) -> "GraphRows":
        return GraphRows(self.graph, self.etype[1], self.new_ids, self.orig, extra)

    def edges_at(self, items: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(item, neighbour)`` for every edge at ``items`` (the dataset's ids)."""
        import dgl
        from mmsc_dgl.distributed.sampling import EDGE_DIR
        if items.numel() == 0:
            return items, items
        nodes = self.new_ids[items]
        if isinstance(self.graph, dgl.distributed.DistGraph):
            sub = dgl.distributed.sample_etype_neighbors(self.graph, {self.etype[0]: nodes}, self.fanout,
                                                         edge_dir=EDGE_DIR, etype_sorted=False)
        else:
            sub = dgl.sampling.sample_neighbors(self.graph, {self.etype[0]: nodes}, self.fanout, edge_dir=EDGE_DIR)
        src, dst = sub.edges(etype=self.etype)
        item, neighbour = self.orig[dst.to(torch.int64)], self.orig[src.to(torch.int64)]
        if self.extra is None:
            return item, neighbour
        more = self.extra.edges_at(items)
        return torch.cat([item, more[0]]), torch.cat([neighbour, more[1]])


class FetchedPathCounter:
    """In :class:`~mmsc_dgl.nn.path_evidence.PathEvidence`, in the place of a whole
    :class:`~mmsc_dgl.ops.paths.PathCounter`: graphs whose edges at given items are fetched per
    call.

    Args:
        rows: per graph name, its :class:`GraphRows` or :class:`PaddedRows` (anything with
            ``edges_at(items) -> (item, neighbour)``, the dataset's ids).
        weight: the Adamic-Adar weight of each item [num_items] (DistDGL's ids).
        new_ids: [num_items] DistDGL's id of each dataset item.
        weigh_by: the graphs whose union gave ``weight`` (the whole counter's).
    """

    def __init__(self, rows: Dict[str, Any], weight, new_ids: torch.Tensor,
                 weigh_by: Optional[Tuple[str, ...]] = None):
        self.rows, self.weight_rows, self.new_ids, self.weigh_by = dict(rows), weight, new_ids, weigh_by
        self.num_items = int(new_ids.numel())
        self._device = torch.device("cpu")

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def names(self) -> List[str]:
        return list(self.rows)

    def to(self, device) -> "FetchedPathCounter":
        """The same rows, with the local counters built on ``device``."""
        out = FetchedPathCounter(self.rows, self.weight_rows, self.new_ids, self.weigh_by)
        out._device = torch.device(device)
        return out

    def __deepcopy__(self, memo) -> "FetchedPathCounter":
        return self  # read-only, shared by copies of the model (as the whole counter is)

    def around(self, *items: torch.Tensor, hops: int = 1) -> Tuple[PathCounter, torch.Tensor, List[torch.Tensor]]:
        """A :class:`~mmsc_dgl.ops.paths.PathCounter` over the neighbourhood of ``items`` (tensors
        of the dataset's ids, any shapes): every edge of every graph within ``hops - 1`` hops of
        them, over the items those edges touch, with their weights.  Returns it, the dataset id of
        each of its items [M] (sorted), and ``items`` in its ids (each its own shape).  Pairs of
        ``items`` count there what they count in the whole graphs with ``hops=1``; the items reached
        from ``items`` do so with ``hops=2``."""
        device = items[0].device if items else self._device
        seeds = torch.unique(torch.cat([t.reshape(-1).to(torch.int64).cpu() for t in items]))
        known, frontier = seeds, seeds
        edges: Dict[str, List[Tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name in self.rows}
        for hop in range(max(int(hops), 1)):
            reached = []
            for name in self.rows:
                src, dst = self.rows[name].edges_at(frontier)
                edges[name].append((src, dst))
                reached.append(dst)
            if hop + 1 < hops:
                ahead = torch.unique(torch.cat(reached))
                frontier = ahead[~torch.isin(ahead, known)]
                known = torch.unique(torch.cat([known, frontier]))
        ends = [d for pulled in edges.values() for _, d in pulled]
        nodes = torch.unique(torch.cat([known, *ends]))
        local = {}
        for name, pulled in edges.items():
            src = torch.cat([s for s, _ in pulled])
            dst = torch.cat([d for _, d in pulled])
            local[name] = undirected(torch.searchsorted(nodes, src), torch.searchsorted(nodes, dst), nodes.numel())
        weight = self.weight_rows[self.new_ids[nodes]].to(torch.float32)
        counter = PathCounter(local, weight, self.weigh_by)
        if device != torch.device("cpu"):
            counter = counter.to(device)
        relabelled = [torch.searchsorted(nodes, t.reshape(-1).to(torch.int64).cpu()).view(t.shape).to(device)
                      for t in items]
        return counter, nodes.to(device), relabelled

    def __repr__(self) -> str:
        return f"FetchedPathCounter(graphs={self.names}, items={self.num_items:,}, on DistDGL's servers)"


class ShardedPathEvidence:
    """The model's path evidence with its graphs on DistDGL's servers: made by
    :func:`shard_path_evidence`.

    Attributes:
        rows: per graph name, its :class:`GraphRows` or :class:`PaddedRows`.
        weight: the ``DistTensor`` of the Adamic-Adar weights.
    """

    def __init__(self, evidence, rows: Dict[str, Any], weight, new_ids: torch.Tensor,
                 weigh_by: Optional[Tuple[str, ...]], had_table: bool):
        self.evidence, self.rows, self.weight = evidence, rows, weight
        self.new_ids, self.weigh_by, self.had_table = new_ids, weigh_by, had_table

    def whole_counter(self) -> PathCounter:
        """Every item's edges fetched back: the whole :class:`~mmsc_dgl.ops.paths.PathCounter`
        the model was built with (the same graphs and weights)."""
        from mmsc_dgl.distributed.sharded import CHUNK, pull_all
        n = int(self.new_ids.numel())
        graphs = {}
        for name, rows in self.rows.items():
            pulled = [rows.edges_at(items) for items in torch.arange(n).split(CHUNK)]
            graphs[name] = undirected(torch.cat([a for a, _ in pulled]), torch.cat([b for _, b in pulled]), n)
        return PathCounter(graphs, pull_all(self.weight, self.new_ids, (n,), torch.float32), self.weigh_by)

    def unshard(self) -> None:
        """The whole counter (and its pair table, where it had one) back in the model: from here
        the evidence is one machine's."""
        counter = self.whole_counter()
        self.evidence.counter = counter
        if self.had_table:
            self.evidence._table = pair_table(counter, self.evidence.metapaths, self.evidence.links)


def padded_neighbours(graph: CSR, items: torch.Tensor, width: int) -> torch.Tensor:
    """The rows of ``items`` of ``graph`` as padded lists [len(items), width] (int32, ``-1``
    past each row's end)."""
    neighbours, present = graph.padded(items, width=width)
    return neighbours.masked_fill(~present, -1).to(torch.int32)


def _lacking(rows: GraphRows, graph: CSR, own: torch.Tensor) -> Optional[CSR]:
    """The edges of ``graph`` at this trainer's items ``own`` (the dataset's ids) that ``rows``
    do not give, as an adjacency over every item (rows of ``own`` only); ``None`` where ``rows``
    give an edge ``graph`` lacks, on this trainer or any other (the servers hold another graph)."""
    from mmsc_dgl.distributed.sharded import CHUNK
    n = graph.num_rows
    lacking, foreign = [], False
    for items in own.split(CHUNK):
        src, dst = rows.edges_at(items)
        loop = src == dst  # the counter's graphs have none
        fetched = torch.unique(src[~loop] * n + dst[~loop])  # as fetched: not made undirected
        want = graph.select_rows(items)
        keys = items[want.row_ids()] * n + want.indices
        foreign |= not bool(torch.isin(fetched, keys).all())
        lacking.append(keys[~torch.isin(keys, fetched)])
    if _most(foreign):
        return None
    keys = torch.cat(lacking) if lacking else torch.zeros(0, dtype=torch.int64)
    return CSR.from_edges(keys // n, keys % n, n)


def _most(value: int) -> int:
    """The largest ``value`` over the trainers of the ``torch.distributed`` group."""
    import torch.distributed as dist
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return int(value)
    out = torch.tensor([int(value)])
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return int(out)


def shard_path_evidence(model, graph, orig: torch.Tensor, mine: torch.Tensor,
                        rank: int) -> Optional[ShardedPathEvidence]:
    """Move ``model.evidence``'s graphs onto the servers and make its counter a
    :class:`FetchedPathCounter` (its whole counter and pair table are freed with their last
    reference).  A relation's graph is read from the servers' own graph (:class:`GraphRows`)
    where that gives this trainer's items the counter's neighbours (it does unless the training
    edges were changed after partitioning: ``train_noise``, ``train_edges``); any other graph (the
    look-alikes') is written as padded rows (:class:`PaddedRows`), each trainer its own items'.
    ``None`` for a model without path evidence.

    Args:
        model: the MMSC model built on this trainer (its evidence is changed in place).
        graph: the :class:`dgl.distributed.DistGraph`.
        orig: [num_items] the dataset's id of each DistDGL id.
        mine: this trainer's share of DistDGL's ids.
        rank: this trainer (names the tensors' creator).
    """
    from mmsc_dgl.distributed.sharded import CHUNK, barrier, dataset_to_dist_ids, dist_tensor, write_rows
    from mmsc_dgl.schema import NODE_TYPE, RELATIONS
    evidence = getattr(model, "evidence", None)
    if evidence is None:
        return None
    counter: PathCounter = evidence.counter
    policy = graph.get_node_partition_policy(NODE_TYPE)
    n = int(orig.numel())
    new_ids = dataset_to_dist_ids(orig)
    mine = mine.to(torch.int64)
    own = orig[mine].to(torch.int64)  # the dataset's ids of this trainer's items
    rows: Dict[str, Any] = {}
    said = []

    def write_padded(tensor_name: str, adjacency: CSR, width: int) -> PaddedRows:
        """A ``DistTensor`` [N, width] on the servers, this trainer's items' rows of ``adjacency`` written."""
        tensor = dist_tensor(graph, policy, tensor_name, (n, width), rank, torch.int32)
        for ids, items in zip(mine.split(CHUNK), own.split(CHUNK)):
            write_rows(tensor, ids, padded_neighbours(adjacency, items, width))
        return PaddedRows(tensor, new_ids)

    for i, (name, g) in enumerate(counter.graphs.items()):
        served = GraphRows(graph, name, new_ids, orig) if name in RELATIONS else None
        lacking = _lacking(served, g, own) if served is not None else None
        if served is not None and lacking is not None:  # the out-edges from the servers; the rest as rows
            width = _most(int(lacking.max_degree()))
            if width:
                served = served.with_extra(write_padded(f"mmsc_evidence_{i}_in_rows", lacking, width))
            rows[name] = served
            said.append(f"{name} from the servers' graph" + (
                f", and its in-edges that are not out-edges as padded rows of width {width} "
                f"({n * width * 4 / 2**20:.1f} MiB)" if width else ""))
            continue
        width = max(int(g.max_degree()), 1)  # the whole graph is on every trainer: the same width
        rows[name] = write_padded(f"mmsc_evidence_{i}_rows", g, width)
        said.append(f"{name} as padded rows of width {width} ({g.num_edges / max(n * width, 1):.0%} full, "
                    f"{n * width * 4 / 2**20:.1f} MiB)")
    weight = dist_tensor(graph, policy, "mmsc_evidence_weight", (n,), rank, torch.float32)
    write_rows(weight, mine, counter.weight[own].cpu())
    sharded = ShardedPathEvidence(evidence, rows, weight, new_ids, counter.weigh_by, evidence._table is not None)
    evidence.counter = FetchedPathCounter(rows, weight, new_ids, counter.weigh_by)
    evidence._table = None
    barrier()  # every trainer's rows written before any reads one
    from mmsc_dgl.progress import report
    report("rank %d: path evidence sharded over the graph servers (%s); a step fetches its pairs' neighbour lists",
           rank, "; ".join(said))
    return sharded


__all__ = ["FetchedPathCounter", "GraphRows", "PaddedRows", "ShardedPathEvidence", "padded_neighbours",
           "shard_path_evidence"]
