"""Id embeddings sharded over DistDGL's graph servers (``mmsc-dgl train --distributed
--shard-embeddings``; docs/distributed.md, "Sharded id embeddings").

Without it every trainer holds every item-sized table of the model (the id embeddings, the graph
branch's shared and per-relation rows), its gradient and Adam's two moments: five copies of
``N x hidden`` floats per table, whatever the number of machines.  With it:

- each such table is a :class:`dgl.distributed.DistEmbedding`, partitioned as the items are (the
  server that owns an item holds its row), starting from the rows the model was built with (the
  same seed's rows as on one machine; each trainer writes its share);
- a step reads only the rows its batch touches (:class:`ShardedEmbedding`, in the model in the
  place of the ``nn.Embedding``), and DGL's distributed :class:`SparseAdam
  <dgl.distributed.optim.SparseAdam>` exchanges their gradients between the trainers and updates
  those rows (and their moments) where they live; the dense weights keep torch's Adam and the
  all-reduce of :class:`~mmsc_dgl.distributed.training.GradientSync`;
- the rows of each relation's best epoch are copied on the servers (:meth:`ShardedTables.keep_best`),
  each trainer its own share of the items;
- a checkpoint is the ordinary ``checkpoint.pt`` (dense weights, written by process 0) plus one
  shard file per trainer (``shards/epoch-E-rank-R.pt``: its share's rows, best rows and optimiser
  moments), written before the checkpoint names the epoch; resuming reads them back exactly;
- after training the rows are pulled into ordinary tables (:meth:`ShardedTables.unshard`): the
  calibration, the evaluation and the run process 0 writes are those of a single machine.

The graph branch's capped table (``graph_branch_cap``: each item's columns and weights of the
propagation) is moved onto the servers too (:class:`ShardedRows`): a step pulls its items' rows.

The meta-path tables are sharded by :mod:`mmsc_dgl.distributed.sharded_metapaths`, the path
evidence's graphs by :mod:`mmsc_dgl.distributed.sharded_evidence`.  What this does not shard yet:
the evaluation after training (it holds whole tables, as it holds whole embeddings of the
catalog).
Two differences from a single machine, both DGL's optimiser's: rows a step does not touch keep
their moments (lazy Adam; torch's dense Adam moves every row), and a row's gradients from several
lookups in one step are averaged, not summed.  The equivalence on loopback is in docs/distributed.md.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn

from mmsc_dgl.errors import DataError
from mmsc_dgl.schema import RELATIONS

logger = logging.getLogger(__name__)

SHARDS = "shards"
"""The run's directory of per-trainer shard files."""

CHUNK = 1 << 16
"""Rows read or written on the servers at once."""


def _zeros(shape, dtype):
    """The servers' ``init_func`` of every tensor (the rows are then written by the trainers)."""
    return torch.zeros(shape, dtype=dtype)


def _serve_on_every_partition(graph, policy, name: str, shape: Tuple[int, ...], rank: int,
                              dtype: torch.dtype = torch.float32) -> None:
    """Have every partition's servers make their part of the tensor ``name`` before a
    ``DistTensor`` of that name is made.  DGL asks only the servers of the creating trainer's own
    machine (each machine of a cluster has trainers, so together they reach every partition); on
    one host every trainer counts as machine 0 (mmsc_dgl.distributed.launch), so the other
    partitions' servers would never hold their rows.  Process 0 sends them DGL's own request;
    a server ignores one for a tensor it has already made, so on a cluster this changes nothing."""
    from dgl import backend as F
    from dgl.distributed import rpc
    from dgl.distributed.kvstore import INIT_MSG, InitDataRequest, get_kvstore
    from dgl.distributed.rpc import get_group_id

    from mmsc_dgl.schema import NODE_TYPE
    book = graph.get_partition_book()
    if os.environ.get("DGL_DIST_MODE", "standalone") == "distributed" and book.num_partitions() > 1 and rank == 0:
        group = get_kvstore()._group_count  # servers per partition
        data_name = str(policy.get_data_name(f"{name}_{get_group_id()}"))  # as DistTensor names it
        for part in range(book.num_partitions()):
            if part == policy.part_id:
                continue  # the DistTensor asks these itself
            rows = int(book.partid2nids(part, NODE_TYPE).numel())
            request = InitDataRequest(data_name, (rows, *shape[1:]), F.reverse_data_type_dict[dtype],
                                      policy.policy_str, _zeros)
            for n in range(group):
                rpc.send_request(part * group + n, request)
            for _ in range(group):
                assert rpc.recv_response().msg == INIT_MSG
    barrier()


def dist_tensor(graph, policy, name: str, shape: Tuple[int, ...], rank: int, dtype: torch.dtype = torch.float32):
    """A ``DistTensor`` of zeros named ``name``, partitioned as the items are, whose part every
    partition's servers hold (:func:`_serve_on_every_partition` first)."""
    from dgl.distributed import DistTensor
    _serve_on_every_partition(graph, policy, name, shape, rank, dtype)
    return DistTensor(shape, dtype, name, init_func=_zeros, part_policy=policy)


class ShardedEmbedding(nn.Module):
    """In a model, in the place of an ``nn.Embedding(num_items, dim)``: ``self(nodes)`` returns
    the rows of ``nodes`` (the dataset's item ids) from a :class:`dgl.distributed.DistEmbedding`,
    tracked for DGL's sparse optimiser while autograd records.  It has no parameters and no
    ``state_dict`` entries: its rows live on the servers.

    Args:
        name: the DistEmbedding's name (one per table of the job).
        num_embeddings, embedding_dim: the table's shape.
        new_ids: [num_items] DistDGL's id of each dataset item (the partition reshuffles them).
        part_policy: the item node type's partition policy.
    """

    def __init__(self, name: str, num_embeddings: int, embedding_dim: int, new_ids: torch.Tensor, part_policy):
        super().__init__()
        from dgl.distributed import DistEmbedding  # its partitions made first (_serve_on_every_partition)
        self.name = name
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.new_ids = new_ids  # a plain attribute: stays on the CPU, never in a state_dict
        self.table = DistEmbedding(num_embeddings, embedding_dim, name=name, init_func=_zeros,
                                   part_policy=part_policy)

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.table(self.new_ids[nodes.cpu()], device=nodes.device)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings:,}, {self.embedding_dim}, name={self.name!r}, sharded over DistDGL's servers"


class ShardedRows:
    """In a model's graph state, in the place of an item-indexed tensor ``[num_items, ...]`` that
    a step reads by rows only (the graph branch's capped table, :attr:`GraphBranch._columns
    <mmsc_dgl.models.graph_branch.GraphBranch>`): ``self[nodes]`` pulls the rows of ``nodes``
    (the dataset's item ids) from a :class:`dgl.distributed.DistTensor` partitioned as the items
    are.  Nothing to learn; written once, by each trainer for its share.

    Args:
        tensor: the DistTensor (DistDGL's ids).
        new_ids: [num_items] DistDGL's id of each dataset item.
    """

    def __init__(self, tensor, new_ids: torch.Tensor):
        self.tensor, self.new_ids = tensor, new_ids
        self.device = torch.device("cpu")

    def __getitem__(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.tensor[self.new_ids[nodes.cpu()]].to(nodes.device)

    def to(self, device) -> "ShardedRows":
        """Rows are pulled to where they are asked for (``__getitem__``); nothing moves."""
        return self

    def whole(self) -> torch.Tensor:
        """Every row, in the dataset's item order."""
        return pull_all(self.tensor, self.new_ids, tuple(self.tensor.shape), self.tensor.dtype)


def _table_slots(model: nn.Module) -> List[Tuple[str, nn.Module, str]]:
    """``(state_dict prefix, parent module, attribute)`` of every item-sized table of an MMSC model."""
    slots: List[Tuple[str, nn.Module, str]] = []
    inputs = getattr(model, "input", None)
    if inputs is not None and getattr(inputs, "item_embedding", None) is not None:
        slots.append(("input.item_embedding", inputs, "item_embedding"))
    branch = getattr(model, "graph_branch", None)
    if branch is not None:
        slots.append(("graph_branch.shared", branch, "shared"))
        for r in branch.relation:
            slots.append((f"graph_branch.relation.{r}", branch.relation, r))
    return slots


def check_shardable(config) -> None:
    """Refuse, before any work, a model whose tables a step reads whole."""
    model = config.model
    if getattr(model, "graph_branch", 0) and not getattr(model, "graph_branch_cap", 0):
        raise DataError("--shard-embeddings reads the rows a batch touches, and the graph branch without a cap "
                        "propagates over every row in each step.",
                        fix="set model.graph_branch_cap (e.g. 32: docs/training.md), or model.graph_branch: 0.")
    if getattr(model, "propagate_ids", 0):
        raise DataError("--shard-embeddings reads the rows a batch touches, and propagate_ids smooths the whole "
                        "id table in each step.", fix="set model.propagate_ids: 0.")


def dataset_to_dist_ids(orig: torch.Tensor) -> torch.Tensor:
    """[num_items] DistDGL's id of each dataset item: the inverse of ``orig`` (``mapping.pt``'s
    dataset id of each DistDGL id)."""
    new_ids = torch.empty_like(orig)
    new_ids[orig] = torch.arange(orig.numel(), dtype=orig.dtype)
    return new_ids


def check_shard_owner(state: dict, path: Path, rank: int, world: int, mine: torch.Tensor) -> None:
    """Refuse a shard file (``state``, read from ``path``) that trainer ``rank`` of ``world`` did
    not write for its items ``mine``: a job resumed with another number of trainers."""
    if int(state["world"]) != world or not torch.equal(state["ids"], mine):
        raise DataError(f"this shard was written by trainer {rank} of {state['world']}, for other items.",
                        path=path, fix=f"resume with the same number of trainers ({state['world']}).")


class ShardedTables:
    """The model's item-sized tables moved onto DistDGL's servers, and what the
    :class:`~mmsc_dgl.train.trainer.Trainer` asks of them (its ``sharded`` argument).

    Args:
        model: an MMSC model built on this trainer (its tables are replaced in place).
        graph: the :class:`dgl.distributed.DistGraph`.
        orig: [num_items] the dataset's id of each DistDGL id (``mapping.pt``).
        mine: this trainer's share of DistDGL's ids (it checkpoints and snapshots those rows).
        lr: the sparse optimiser's learning rate (the run's).
        run_dir: where ``shards/`` is written (by every trainer: shared storage on a cluster).
        rank, world: this trainer in the ``torch.distributed`` group.
    """

    def __init__(self, model: nn.Module, graph, orig: torch.Tensor, mine: torch.Tensor, lr: float,
                 run_dir: Path, rank: int, world: int):
        from dgl.distributed.optim import SparseAdam

        from mmsc_dgl.schema import NODE_TYPE
        self.model, self.rank, self.world = model, rank, world
        self.mine = mine.to(torch.int64)
        self.dir = Path(run_dir) / SHARDS
        policy = graph.get_node_partition_policy(NODE_TYPE)
        new_ids = dataset_to_dist_ids(orig)
        self.slots: Dict[str, Tuple[nn.Module, str]] = {}
        self.tables: Dict[str, ShardedEmbedding] = {}
        self.best: Dict[str, dict] = {}
        for prefix, parent, attr in _table_slots(model):
            dense = getattr(parent, attr)
            name = "mmsc_" + prefix.replace(".", "_")
            shape = (dense.num_embeddings, dense.embedding_dim)
            made = [(name, shape), (f"{name}_step", shape[:1]),  # SparseAdam's names for its moments
                    (f"{name}_mem", shape), (f"{name}_power", shape)]
            for tensor_name, tensor_shape in made:
                _serve_on_every_partition(graph, policy, tensor_name, tensor_shape, rank)
            table = ShardedEmbedding(name, dense.num_embeddings, dense.embedding_dim, new_ids, policy)
            with torch.no_grad():  # start where one machine starts: the same seed's rows, each trainer its share
                write_rows(table.table.weight, self.mine, dense.weight.detach()[orig[self.mine].long()])
            setattr(parent, attr, table)  # the dense rows are freed with the module
            self.slots[prefix] = (parent, attr)
            self.tables[prefix] = table
            self.best[prefix] = {r: dist_tensor(graph, policy, f"{name}_best_{r}", shape, rank) for r in RELATIONS}
        self.rows = self._shard_capped_table(graph, policy, orig, new_ids)
        if not self.tables:
            raise DataError("--shard-embeddings found no item-sized table in this model.",
                            fix="drop --shard-embeddings (the model keeps no id embeddings).")
        barrier()  # every share written before any trainer reads a row
        self.kept = {r: False for r in RELATIONS}
        self.optimizer = SparseAdam([t.table for t in self.tables.values()], lr=lr)
        logger.info("rank %d: %d item tables sharded over the graph servers (%s)", rank, len(self.tables),
                    ", ".join(self.tables))

    def _shard_capped_table(self, graph, policy, orig: torch.Tensor,
                            new_ids: torch.Tensor) -> Dict[Tuple[str, str], ShardedRows]:
        """The graph branch's capped table (each item's ``cap`` propagation columns and weights,
        per relation) moved onto the servers as :class:`ShardedRows`: a step pulls the rows of
        its items, as it pulls their embeddings.  Each trainer writes its share of the table the
        model was built with (the same on every trainer)."""
        branch = getattr(self.model, "graph_branch", None)
        out: Dict[Tuple[str, str], ShardedRows] = {}
        if branch is None or not branch.cap:
            return out
        for kind in ("_columns", "_values"):
            tables = getattr(branch, kind)
            for r in list(tables):
                dense = tables[r]
                name = f"mmsc_graph_branch{kind}_{r}"
                tensor = dist_tensor(graph, policy, name, tuple(dense.shape), self.rank, dense.dtype)
                write_rows(tensor, self.mine, dense[orig[self.mine].long()])
                rows = ShardedRows(tensor, new_ids)
                tables[r] = rows  # the whole table is freed with the last reference
                out[(kind, r)] = rows
        logger.info("rank %d: the graph branch's capped table (%d relations) sharded over the graph servers",
                    self.rank, len(branch._columns))
        return out

    # -- the Trainer's hooks ---------------------------------------------------------------
    def step(self) -> None:
        """After the dense optimiser's step: the rows the batch touched, updated where they live
        (every trainer calls it every step: DGL's optimiser exchanges gradients between them)."""
        self.optimizer.zero_grad()  # DGL's: the traces of this step are dropped once applied
        self.optimizer.step()

    def keep_best(self, relation: str) -> None:
        """Copy this trainer's share of every table's rows into the relation's best copy."""
        for prefix, table in self.tables.items():
            for ids in self.mine.split(CHUNK):
                self.best[prefix][relation][ids] = table.table.weight[ids]
        self.kept[relation] = True
        barrier()

    def _moments(self, table: ShardedEmbedding):
        return self.optimizer._state[table.table.name]  # (step, first moment, second moment), DGL's

    def save(self, epoch: int) -> None:
        """This trainer's shard of the state after ``epoch``, written atomically; the file of the
        epoch before is kept (a checkpoint of that epoch may still be the last on disk)."""
        from mmsc_dgl.train.checkpoint import save_checkpoint
        state: dict = {"epoch": epoch, "world": self.world, "ids": self.mine.clone(), "kept": dict(self.kept),
                       "tables": {}}
        for prefix, table in self.tables.items():
            step, first, second = self._moments(table)
            state["tables"][prefix] = {
                "rows": read_rows(table.table.weight, self.mine),
                "best": {r: read_rows(self.best[prefix][r], self.mine) for r in RELATIONS if self.kept[r]},
                "moments": [read_rows(step, self.mine), read_rows(first, self.mine), read_rows(second, self.mine)]}
        self.dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self._file(epoch), state)
        for old in self.dir.glob(f"epoch-*-rank-{self.rank}.pt"):
            if old.name not in {self._file(epoch).name, self._file(epoch - 1).name}:
                old.unlink(missing_ok=True)
        barrier()

    def restore(self, epoch: int) -> None:
        """Put back the shard saved after ``epoch`` (every trainer its own, then all wait)."""
        path = self._file(epoch)
        if not path.exists():
            raise DataError(f"the checkpoint is of epoch {epoch} and trainer {self.rank}'s shard of it is missing.",
                            path=path, fix="resume with the run's shards directory on storage every trainer "
                                           "reads, or train again with --overwrite.")
        from mmsc_dgl.train.checkpoint import load_checkpoint
        state = load_checkpoint(path)
        check_shard_owner(state, path, self.rank, self.world, self.mine)
        for prefix, table in self.tables.items():
            saved = state["tables"][prefix]
            write_rows(table.table.weight, self.mine, saved["rows"])
            for r, rows in saved["best"].items():
                write_rows(self.best[prefix][r], self.mine, rows)
            for moment, rows in zip(self._moments(table), saved["moments"]):
                write_rows(moment, self.mine, rows)
        self.kept = {r: bool(state["kept"].get(r, False)) for r in RELATIONS}
        barrier()

    def _file(self, epoch: int) -> Path:
        return self.dir / f"epoch-{epoch:04d}-rank-{self.rank}.pt"

    # -- after training ----------------------------------------------------------------------
    def unshard(self, states: Dict[str, dict]) -> Dict[str, dict]:
        """Every table back in the model as an ordinary ``nn.Embedding`` (its rows as they are
        now), and each relation's state given its best rows (as they are now, for a relation that
        never improved): from here the model is a single machine's."""
        out = {r: dict(s) for r, s in states.items()}
        branch = getattr(self.model, "graph_branch", None)
        for (kind, r), pulled in self.rows.items():
            getattr(branch, kind)[r] = pulled.whole()
        for prefix, table in self.tables.items():
            parent, attr = self.slots[prefix]
            dense = nn.Embedding(table.num_embeddings, table.embedding_dim)
            with torch.no_grad():
                dense.weight.copy_(self._whole(table.table.weight, table))
            setattr(parent, attr, dense)
            for r in out:
                rows = self._whole(self.best[prefix][r], table) if self.kept.get(r) else dense.weight.detach().clone()
                out[r][f"{prefix}.weight"] = rows
        return out

    @staticmethod
    def _whole(tensor, table: ShardedEmbedding) -> torch.Tensor:
        """A table's every row, in the dataset's item order."""
        return pull_all(tensor, table.new_ids, (table.num_embeddings, table.embedding_dim), torch.float32)


def pull_all(tensor, new_ids: torch.Tensor, shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Every row of an item-indexed ``DistTensor`` (DistDGL's ids), in the dataset's item order
    (``new_ids``: DistDGL's id of each dataset item), pulled :data:`CHUNK` rows at a time."""
    out = torch.empty(shape, dtype=dtype)
    for items in torch.arange(shape[0]).split(CHUNK):
        out[items] = tensor[new_ids[items]]
    return out


def read_rows(tensor, ids: torch.Tensor) -> torch.Tensor:
    """The rows ``ids`` (DistDGL's ids) of a ``DistTensor``, read :data:`CHUNK` at a time."""
    return torch.cat([tensor[chunk] for chunk in ids.split(CHUNK)]) if ids.numel() else tensor[ids]


def write_rows(tensor, ids: torch.Tensor, rows: torch.Tensor) -> None:
    """Write ``rows`` into the rows ``ids`` (DistDGL's ids) of a ``DistTensor``, :data:`CHUNK` at a time."""
    for chunk, values in zip(ids.split(CHUNK), rows.split(CHUNK)):
        tensor[chunk] = values


def barrier() -> None:
    """Wait for every trainer of the ``torch.distributed`` group (nothing in a group of one)."""
    import torch.distributed as dist
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def shard_files(run_dir: os.PathLike | str) -> List[Path]:
    """The shard files a run holds (none without ``--shard-embeddings``)."""
    return sorted((Path(run_dir) / SHARDS).glob("epoch-*-rank-*.pt"))


__all__ = ["ShardedEmbedding", "ShardedRows", "ShardedTables", "barrier", "check_shard_owner", "check_shardable",
           "dataset_to_dist_ids", "dist_tensor", "pull_all", "read_rows", "shard_files", "write_rows"]
