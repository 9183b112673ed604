"""Meta-path neighbourhoods drawn from a partitioned graph, per mini-batch.

The single-machine ``walk`` tables (:func:`mmsc_dgl.metapath.build.walk_table`) keep, per item,
the ``k`` most visited end points of ``W`` meta-path-guided random walks, each hop a uniform
choice among the current node's out-neighbours of that hop's relation.  On DistDGL the same
walks are taken for a mini-batch's items only, one hop at a time, by
``dgl.distributed.sample_etype_neighbors(..., fanout=1, replace=True)`` over every live walk
(in-edges of the reversed partitions: :data:`EDGE_DIR`) (a node that several walks stand on is passed once per walk, and gets one
independent uniform pick per occurrence: DGL samples each seed occurrence on its own, which is
checked on every call).  The ends are ranked as on one machine (:func:`top_visited`).

Cost per mini-batch of ``B`` items (the figures ``mmsc-dgl bench dist`` is to measure): per hop
one sampling call, i.e. one request to each graph server that owns a live walk's node (at most
``parts`` messages), carrying ``8 B`` per live walk out and ``24 B`` (source, destination, edge
id) per sampled edge back: at most ``B * W * hops * 32`` bytes, 1.5 MiB for B = 1024 items,
W = 16 walks and 3 hops.  Hops are sequential, so the latency is ``hops`` round trips.

The same code runs on a local ``DGLGraph`` (``dgl.sampling.sample_neighbors``), which is how it
is tested against the single-machine walk's distribution without servers.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from mmsc_dgl.schema import NODE_TYPE
from mmsc_dgl.metapath.build import top_visited
from mmsc_dgl.metapath.spec import MetaPath


def _etype(rel) -> Tuple[str, str, str]:
    return (NODE_TYPE, rel, NODE_TYPE) if isinstance(rel, str) else tuple(rel)


EDGE_DIR = "in"
"""Partitions are stored reversed (:func:`~mmsc_dgl.distributed.partition.partition_dataset`), so
a DistGraph's in-edges of ``i`` are ``i``'s out-edges in the dataset: DistDGL 2.1's out-edge
sampling of a partition fails a per-edge-type check ("etype values exceed the number of
fanouts")."""


def default_sampler(graph) -> Callable:
    """``sample(nodes, etype) -> (src, dst)``: one uniform out-neighbour per entry of ``nodes``
    (duplicates sampled independently), from a ``DistGraph`` or a local ``DGLGraph``."""
    import dgl

    distributed = isinstance(graph, dgl.distributed.DistGraph)
    etypes = list(graph.canonical_etypes)

    def sample(nodes: torch.Tensor, etype) -> Tuple[torch.Tensor, torch.Tensor]:
        src_type = etype[0]
        fanout = {e: (1 if e == etype else 0) for e in etypes}
        if distributed:
            # etype_sorted=False: a partition's out-edge CSR (built from its CSC) is not sorted by
            # edge type, and DGL 2.1 assumes it is unless told otherwise
            sub = dgl.distributed.sample_etype_neighbors(graph, {src_type: nodes}, fanout, edge_dir=EDGE_DIR,
                                                         replace=True, etype_sorted=False)
        else:
            sub = dgl.sampling.sample_neighbors(graph, {src_type: nodes}, fanout, edge_dir="out", replace=True)
        src, dst = sub.edges(etype=etype)
        return (dst, src) if distributed and EDGE_DIR == "in" else (src, dst)

    return sample


def metapath_walk_ends(sample: Callable, starts: torch.Tensor, metapath: MetaPath) -> torch.Tensor:
    """End point of one walk from each entry of ``starts`` along ``metapath`` (``-1`` where a
    walk reaches a node without an out-edge of the next hop), drawn with ``sample``."""
    cur = starts.to(torch.int64).clone()
    for rel in metapath.relations:
        alive = torch.nonzero(cur >= 0).flatten()
        if alive.numel() == 0:
            break
        nodes = cur[alive]
        order = torch.argsort(nodes, stable=True)  # walks grouped by the node they stand on
        nodes, alive = nodes[order], alive[order]
        src, dst = sample(nodes, _etype(rel))
        src, dst = src.to(torch.int64), dst.to(torch.int64)
        picked = torch.argsort(src, stable=True)
        src, dst = src[picked], dst[picked]
        # every occurrence of a node with an out-edge gets exactly one pick, in sorted order
        uniq, want = torch.unique_consecutive(nodes, return_counts=True)
        got_nodes, got = torch.unique_consecutive(src, return_counts=True)
        has = torch.isin(uniq, got_nodes)
        if not torch.equal(uniq[has], got_nodes) or not torch.equal(want[has], got):
            raise RuntimeError("the sampler did not return one pick per walk; this DGL version samples "
                               "duplicate seeds differently")
        step = torch.full_like(nodes, -1)
        keep = torch.isin(nodes, got_nodes)
        step[keep] = dst
        cur[alive] = step
    return cur


WALK_CHUNK = 4096
"""Items whose walks are taken together by :func:`sample_metapath_neighbors`: a trainer walking
its whole share at once held the walks of every item in flight (measured at 20,000 items, 16
walks, 3 meta-paths: +330 MiB resident for the walks, against +25-84 MiB at 5,000 items)."""


def sample_metapath_neighbors(graph, items: torch.Tensor, metapath: MetaPath, k: int,
                              num_walks: Optional[int] = None, sample: Optional[Callable] = None,
                              tie_seed: int = 0, chunk: int = WALK_CHUNK) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` most visited end points of ``num_walks`` walks from each of ``items``: ``(row,
    neighbour, share of walks)``, rows indexing ``items``; the single-machine ``walk`` table's
    rows for those items, drawn afresh (the same distribution, other draws).

    Args:
        graph: a ``DistGraph`` or a ``DGLGraph`` in this package's schema (ids as the graph's).
        items: [B] node ids.
        metapath: the meta-path (side hops allowed where the graph has those edge types).
        k: neighbours kept per item.
        num_walks: walks per item (default ``2 k``, at least 16, as the single-machine tables).
        sample: the sampling call (default: :func:`default_sampler` of ``graph``).
        tie_seed: breaks ties in visit counts.
        chunk: items walked together (each row depends on its own walks only, so the rows are
            those of one pass over all items; the memory in flight is bounded by the chunk).
    """
    walks = num_walks or max(2 * k, 16)
    sample = sample or default_sampler(graph)
    items = items.to(torch.int64)
    parts = []
    for start in range(0, max(items.numel(), 1), max(int(chunk), 1)):
        some = items[start: start + chunk]
        ends = metapath_walk_ends(sample, some.repeat_interleave(walks), metapath)
        rows, cols, visits = top_visited(ends.view(some.numel(), walks), k, tie_seed)
        parts.append((rows + start, cols, visits.to(torch.float32) / walks))
    return tuple(torch.cat([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


__all__ = ["WALK_CHUNK", "default_sampler", "metapath_walk_ends", "sample_metapath_neighbors"]
