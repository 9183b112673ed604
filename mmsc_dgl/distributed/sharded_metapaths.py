"""Meta-path tables sharded over DistDGL's graph servers (``mmsc-dgl train --distributed
--shard-embeddings``; docs/distributed.md, "Sharded meta-path tables").

Without sharding every trainer walks its own items and then gathers every other trainer's rows
(:func:`~mmsc_dgl.distributed.training.gathered_tables`): each holds the whole tables, about
``N x paths x k x 12`` bytes (1.3 GB at a million items, 14 meta-paths and ``k = 8``; 134 GB at
100M items), whatever the number of machines.  With it:

- each meta-path's table is two ``DistTensor`` s partitioned as the items are (the server that
  owns an item holds its row): ``[N, k]`` neighbours (the dataset's item ids, sorted, ``-1`` past
  the row's end) and ``[N, k]`` shares of walks;
- each trainer walks its own items through the servers, as without sharding, and writes their rows
  there instead of gathering everyone's; it keeps a copy of its own rows in
  ``shards/metapaths-rank-R.pt``, so that a resumed job reads back the tables it began with;
- in the model, each table is a :class:`ShardedNeighbours`: a step reads the rows of the items its
  batch encodes (:meth:`ShardedNeighbours.select_rows`), and the graph-dropout views of the
  self-supervised term drop edges of those rows only (:class:`DroppedRows`);
- after training, process 0 pulls the tables back whole (:meth:`ShardedMetaPaths.whole`) and writes
  them into the run as ``metapaths.pt``: ``evaluate`` and ``recommend`` read an ordinary run.

The tables stay a precomputed transform, walked once before training (as on one machine), not
neighbourhoods drawn afresh in each step: the model a distributed job trains is the model one
machine trains.  One difference, random only: a view drops each pulled edge with its own draw,
where one machine draws over the whole table, so the same seed draws other views.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple, cast

import torch

from mmsc_dgl.errors import DataError
from mmsc_dgl.ops.csr import CSR, DroppedEdges

logger = logging.getLogger(__name__)

FILE = "metapaths-rank-{rank}.pt"
"""This trainer's rows of every meta-path table, in the run's ``shards/``."""


def padded_rows(rows: torch.Tensor, cols: torch.Tensor, share: torch.Tensor, num_rows: int,
                width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pairs ``(rows[i], cols[i])`` with weights ``share[i]`` (at most ``width`` per row) as padded
    rows ``(neighbours [num_rows, width], shares [num_rows, width])``: each row's neighbours sorted,
    as :func:`~mmsc_dgl.metapath.build.table_from_coo` keeps them, ``-1`` and ``0`` past its end."""
    rows, cols = rows.to(torch.int64), cols.to(torch.int64)
    order = torch.argsort(rows * (int(cols.max()) + 1 if cols.numel() else 1) + cols)
    rows, cols, share = rows[order], cols[order], share[order].to(torch.float32)
    degree = torch.bincount(rows, minlength=num_rows)
    if degree.numel() and int(degree.max()) > width:
        raise ValueError(f"a row has {int(degree.max())} neighbours, more than the width {width}")
    starts = torch.cumsum(degree, 0) - degree
    slot = torch.arange(rows.numel()) - starts[rows]
    neighbours = torch.full((num_rows, width), -1, dtype=torch.int64)
    shares = torch.zeros((num_rows, width), dtype=torch.float32)
    neighbours[rows, slot] = cols
    shares[rows, slot] = share
    return neighbours, shares


def _csr_of(neighbours: torch.Tensor, num_src: int, keep: Optional[torch.Tensor] = None) -> CSR:
    """The adjacency of padded rows (``keep``: which of the present edges stay)."""
    mask = neighbours >= 0
    if keep is not None:
        mask &= keep
    indptr = torch.zeros(neighbours.shape[0] + 1, dtype=torch.int64, device=neighbours.device)
    indptr[1:] = torch.cumsum(mask.sum(1), 0)
    return CSR(indptr, neighbours[mask], num_src, validate=False)  # row-major: each row's order kept


class ShardedNeighbours:
    """In MMSC, in the place of a meta-path table's :class:`~mmsc_dgl.ops.csr.CSR` (it reads
    tables through :meth:`select_rows`, :meth:`padded` and :meth:`drop_edges` only): the rows of
    the items a step asks for, pulled from a ``DistTensor`` of padded neighbour lists.

    Args:
        neighbours: the ``DistTensor`` [num_items, width] (DistDGL's ids), the dataset's item ids
            of each item's neighbours, sorted, ``-1`` past the row's end.
        new_ids: [num_items] DistDGL's id of each dataset item.
        width: the table's ``k``.
    """

    def __init__(self, neighbours, new_ids: torch.Tensor, width: int):
        self.neighbours, self.new_ids, self.width = neighbours, new_ids, int(width)
        self.num_rows = self.num_src = int(new_ids.numel())

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def rows(self, nodes: torch.Tensor) -> torch.Tensor:
        """The padded neighbour lists of ``nodes`` (the dataset's ids) [B, width], where asked."""
        return self.neighbours[self.new_ids[nodes.reshape(-1).cpu().to(torch.int64)]].to(nodes.device)

    def select_rows(self, nodes: torch.Tensor) -> CSR:
        """The sub-adjacency of ``nodes``: :meth:`CSR.select_rows <mmsc_dgl.ops.csr.CSR.select_rows>`
        of the whole table, from the rows pulled for them."""
        return _csr_of(self.rows(nodes), self.num_src)

    def max_degree(self) -> int:
        return self.width

    def padded(self, nodes: torch.Tensor, width: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`CSR.padded <mmsc_dgl.ops.csr.CSR.padded>` (the first ``width`` neighbours)."""
        pulled = self.rows(nodes)[:, : self.width if width is None else int(width)]
        mask = pulled >= 0
        return pulled.masked_fill(~mask, 0), mask

    def drop_edges(self, p: float, generator: Optional[torch.Generator] = None):
        """A graph-dropout view: the rows pulled through it lose each edge with probability ``p``."""
        return self if p <= 0 else DroppedRows(self, p, generator)

    def to(self, *args, **kwargs) -> "ShardedNeighbours":
        """Rows are pulled to where they are asked for; nothing moves."""
        return self

    def __repr__(self) -> str:
        return f"ShardedNeighbours(rows={self.num_rows:,}, width={self.width}, on DistDGL's servers)"


class DroppedRows(DroppedEdges):
    """:class:`ShardedNeighbours` with each edge of the rows pulled through it dropped with
    probability ``p`` (the graph-dropout view that :meth:`CSR.drop_edges
    <mmsc_dgl.ops.csr.CSR.drop_edges>` makes of a whole table, drawn for the pulled rows only):
    :class:`~mmsc_dgl.ops.csr.DroppedEdges`' padded lists and draw, read as a sub-adjacency too."""

    def __init__(self, table: ShardedNeighbours, p: float, generator: Optional[torch.Generator] = None):
        super().__init__(cast(CSR, table), p, generator)  # it reads rows through padded() only
        self.table = table

    def select_rows(self, nodes: torch.Tensor) -> CSR:
        pulled = self.table.rows(nodes)
        return _csr_of(pulled, self.table.num_src, self.keep(pulled.shape, pulled.device))


class ShardedMetaPaths:
    """The run's meta-path tables on DistDGL's servers: made by :func:`shard_metapath_tables`.

    Attributes:
        tables: ``{meta-path name: ShardedNeighbours}``, what the model is built with.
        paths: the meta-paths, in the tables' order.
    """

    def __init__(self, tables: Dict[str, ShardedNeighbours], shares: Dict[str, object], paths: List,
                 mine: torch.Tensor, rank: int, world: int, own: Optional[dict], info: dict):
        self.tables, self.shares, self.paths = tables, shares, paths
        self.mine, self.rank, self.world = mine, rank, world
        self._own = own  # this trainer's rows until they are saved (None: read from its file)
        self.info = info

    def save_shard(self, run_dir: Path) -> None:
        """This trainer's rows into ``shards/`` (once, at the start of a fresh job; a resumed job
        read them from there)."""
        if self._own is None:
            return
        from mmsc_dgl.distributed.sharded import SHARDS
        from mmsc_dgl.train.checkpoint import save_checkpoint
        folder = Path(run_dir) / SHARDS
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(folder / FILE.format(rank=self.rank),
                        {"world": self.world, "ids": self.mine.clone(), "tables": self._own})
        self._own = None

    def whole(self):
        """Every table, pulled back whole: the :class:`~mmsc_dgl.metapath.table.MetaPathTables`
        one machine would hold (the same pairs and shares as the gathered tables)."""
        from mmsc_dgl.distributed.sharded import pull_all
        from mmsc_dgl.metapath.build import table_from_coo
        from mmsc_dgl.metapath.table import MetaPathTables
        out = []
        for path in self.paths:
            table = self.tables[path.name]
            shape = (table.num_rows, table.width)
            neighbours = pull_all(table.neighbours, table.new_ids, shape, torch.int64)
            shares = pull_all(self.shares[path.name], table.new_ids, shape, torch.float32)
            mask = neighbours >= 0
            rows = torch.arange(shape[0]).unsqueeze(1).expand(shape)[mask]
            out.append(table_from_coo(rows.numpy(), neighbours[mask].numpy(), shares[mask].numpy(), shape[0], path,
                                      "walk", table.width))
        return MetaPathTables(out, dict(self.info))


def shard_metapath_tables(graph, orig: torch.Tensor, mine: torch.Tensor, paths, config, run_dir: Path,
                          rank: int, world: int, resume: bool, info: dict) -> ShardedMetaPaths:
    """The meta-path tables as ``DistTensor`` s, each trainer writing its own items' rows: walked
    through the servers (the law of the single-machine ``walk`` tables), or, resuming, read back
    from its ``shards/metapaths-rank-R.pt``.

    Args:
        graph: the :class:`dgl.distributed.DistGraph`.
        orig: [num_items] the dataset's id of each DistDGL id.
        mine: this trainer's share of DistDGL's ids.
        paths: the meta-paths (item hops only).
        config: the :class:`~mmsc_dgl.config.TrainConfig` (``max_neighbors``, ``num_walks``, ``seed``).
        run_dir, rank, world, resume: the job's.
        info: what the tables record of how they were made (``metapaths.pt``'s ``info``).
    """
    from mmsc_dgl.distributed.sampling import default_sampler, sample_metapath_neighbors
    from mmsc_dgl.distributed.sharded import (SHARDS, barrier, check_shard_owner, dataset_to_dist_ids, dist_tensor,
                                              write_rows)
    from mmsc_dgl.schema import NODE_TYPE
    policy = graph.get_node_partition_policy(NODE_TYPE)
    num_items, k = int(orig.numel()), int(config.max_neighbors)
    new_ids = dataset_to_dist_ids(orig)
    mine = mine.to(torch.int64)
    saved = None
    path_file = Path(run_dir) / SHARDS / FILE.format(rank=rank)
    if resume and path_file.exists():
        from mmsc_dgl.train.checkpoint import load_checkpoint
        saved = load_checkpoint(path_file)
        check_shard_owner(saved, path_file, rank, world, mine)
        missing = [p.name for p in paths if p.name not in saved["tables"]]
        if missing:
            raise DataError(f"this trainer's meta-path rows lack {', '.join(missing)}.", path=path_file,
                            fix="resume with the run's own --metapaths, or train again with --overwrite.")
    sample = default_sampler(graph)
    tables: Dict[str, ShardedNeighbours] = {}
    shares: Dict[str, object] = {}
    own: Dict[str, dict] = {}
    pairs = 0
    for i, path in enumerate(paths):
        if saved is not None:
            neighbours, share = saved["tables"][path.name]["neighbours"], saved["tables"][path.name]["share"]
        else:
            rows, cols, share = sample_metapath_neighbors(graph, mine, path, k, config.num_walks, sample=sample,
                                                          tie_seed=config.seed)
            neighbours, share = padded_rows(rows, orig[cols], share, mine.numel(), k)
            own[path.name] = {"neighbours": neighbours, "share": share}
        dist_neighbours = dist_tensor(graph, policy, f"mmsc_metapath_{i}_neighbours", (num_items, k), rank,
                                       torch.int64)
        dist_share = dist_tensor(graph, policy, f"mmsc_metapath_{i}_share", (num_items, k), rank, torch.float32)
        write_rows(dist_neighbours, mine, neighbours)
        write_rows(dist_share, mine, share)
        tables[path.name] = ShardedNeighbours(dist_neighbours, new_ids, k)
        shares[path.name] = dist_share
        present = int((neighbours >= 0).sum())
        pairs += present
        logger.info("meta-path %s: %s neighbour pairs over this trainer's items", path.name, f"{present:,}")
    barrier()  # every trainer's rows written before any reads one
    from mmsc_dgl.progress import report
    report("rank %d: %d meta-path tables sharded over the graph servers (%s pairs over its %s items, %s)", rank,
           len(paths), f"{pairs:,}", f"{mine.numel():,}",
           "read back from its shard" if saved is not None else "walked by the graph servers")
    return ShardedMetaPaths(tables, shares, list(paths), mine, rank, world, own or None, info)


__all__ = ["DroppedRows", "ShardedMetaPaths", "ShardedNeighbours", "padded_rows", "shard_metapath_tables"]
