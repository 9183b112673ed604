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

- each evidence graph becomes a ``DistTensor`` of padded rows ``[N, max degree]`` (the dataset's
  item ids of each item's undirected neighbours, sorted, ``-1`` past the row's end) and the
  weights one ``[N]`` ``DistTensor``, partitioned as the items are; each trainer writes its own
  items' rows (:func:`shard_path_evidence`);
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
needs no shard file of them.  The padded rows cost ``N x max degree x 4`` bytes on the servers,
more than the graph's edges where degrees are skewed; the log says how full they are.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

import torch

from mmsc_dgl.distributed.sharded_metapaths import padded_csr
from mmsc_dgl.ops.csr import CSR
from mmsc_dgl.ops.paths import PathCounter, pair_table, undirected

logger = logging.getLogger(__name__)


class FetchedPathCounter:
    """In :class:`~mmsc_dgl.nn.path_evidence.PathEvidence`, in the place of a whole
    :class:`~mmsc_dgl.ops.paths.PathCounter`: graphs whose rows are pulled per call.

    Args:
        rows: per graph name, a ``DistTensor`` (or anything indexed by DistDGL's ids) of padded
            rows [num_items, width]: each item's neighbours in the dataset's ids, sorted, ``-1``
            past the row's end.
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

    def _pull(self, name: str, items: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(row item, neighbour)`` for every edge of graph ``name`` at ``items`` (dataset ids)."""
        padded = self.rows[name][self.new_ids[items]].to(torch.int64)
        present = padded >= 0
        return items.unsqueeze(1).expand_as(padded)[present], padded[present]

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
                src, dst = self._pull(name, frontier)
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
        rows: per graph name, the ``DistTensor`` of padded rows; ``widths`` their widths.
        weight: the ``DistTensor`` of the Adamic-Adar weights.
    """

    def __init__(self, evidence, rows: Dict[str, Any], widths: Dict[str, int], weight, new_ids: torch.Tensor,
                 weigh_by: Optional[Tuple[str, ...]], had_table: bool):
        self.evidence, self.rows, self.widths, self.weight = evidence, rows, widths, weight
        self.new_ids, self.weigh_by, self.had_table = new_ids, weigh_by, had_table

    def whole_counter(self) -> PathCounter:
        """Every row pulled back: the whole :class:`~mmsc_dgl.ops.paths.PathCounter` the model
        was built with (the same graphs and weights)."""
        from mmsc_dgl.distributed.sharded import pull_all
        n = int(self.new_ids.numel())
        graphs = {}
        for name, tensor in self.rows.items():
            padded = pull_all(tensor, self.new_ids, (n, self.widths[name]), torch.int32).to(torch.int64)
            graphs[name] = padded_csr(padded, n)
        weight = pull_all(self.weight, self.new_ids, (n,), torch.float32)
        return PathCounter(graphs, weight, self.weigh_by)

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


def shard_path_evidence(model, graph, orig: torch.Tensor, mine: torch.Tensor,
                        rank: int) -> Optional[ShardedPathEvidence]:
    """Move ``model.evidence``'s graphs onto the servers: each trainer writes the rows of its own
    items (``mine``, DistDGL's ids), and the model's counter becomes a :class:`FetchedPathCounter`
    (its whole counter and pair table are freed with their last reference).  ``None`` for a model
    without path evidence.

    Args:
        model: the MMSC model built on this trainer (its evidence is changed in place).
        graph: the :class:`dgl.distributed.DistGraph`.
        orig: [num_items] the dataset's id of each DistDGL id.
        mine: this trainer's share of DistDGL's ids.
        rank: this trainer (names the tensors' creator).
    """
    from mmsc_dgl.distributed.sharded import CHUNK, barrier, dataset_to_dist_ids, dist_tensor, write_rows
    from mmsc_dgl.schema import NODE_TYPE
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
    widths: Dict[str, int] = {}
    slots = edges = 0
    for i, (name, g) in enumerate(counter.graphs.items()):
        width = max(int(g.max_degree()), 1)
        tensor = dist_tensor(graph, policy, f"mmsc_evidence_{i}_rows", (n, width), rank, torch.int32)
        for ids, items in zip(mine.split(CHUNK), own.split(CHUNK)):
            write_rows(tensor, ids, padded_neighbours(g, items, width))
        rows[name], widths[name] = tensor, width
        slots += n * width
        edges += g.num_edges
    weight = dist_tensor(graph, policy, "mmsc_evidence_weight", (n,), rank, torch.float32)
    write_rows(weight, mine, counter.weight[own].cpu())
    sharded = ShardedPathEvidence(evidence, rows, widths, weight, new_ids, counter.weigh_by,
                                  evidence._table is not None)
    evidence.counter = FetchedPathCounter(rows, weight, new_ids, counter.weigh_by)
    evidence._table = None
    barrier()  # every trainer's rows written before any reads one
    from mmsc_dgl.progress import report
    report("rank %d: path evidence sharded over the graph servers (%d graphs, widths %s: %s of %s slots used, "
           "%.1f MiB on the servers); a step fetches its pairs' neighbour lists", rank, len(rows),
           ",".join(str(w) for w in widths.values()), f"{edges:,}", f"{slots:,}", (slots * 4 + n * 4) / 2**20)
    return sharded


__all__ = ["FetchedPathCounter", "ShardedPathEvidence", "padded_neighbours", "shard_path_evidence"]
