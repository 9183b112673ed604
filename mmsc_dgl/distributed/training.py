"""Data-parallel training on a DistDGL cluster (``mmsc-dgl train PART_DIR --distributed``, started
on every trainer process by ``mmsc-dgl launch`` or by one command per host).

Every trainer process:

1. joins the graph servers (``dgl.distributed.initialize``) and the ``torch.distributed`` group
   (gloo on CPU, nccl on GPUs); process 0's check of ``--out`` is shared, so all refuse alike;
2. takes its share of the items (:func:`share_of_items`: an even, contiguous share of DistDGL's
   ids, which number each partition's items together);
3. draws the meta-path neighbours of its items from the partitioned graph
   (:func:`~mmsc_dgl.distributed.sampling.sample_metapath_neighbors`: the single-machine ``walk``
   table's law, walked by the servers) and gathers every process's rows, so that all hold the same
   tables (process 0 keeps them in the run as ``metapaths.pt``; a resumed run reuses them); with
   ``shard_embeddings`` it writes its rows on the servers instead, and a step reads those of its
   batch (:mod:`~mmsc_dgl.distributed.sharded_metapaths`);
4. builds the *same* model (:func:`~mmsc_dgl.train.build.build_run`, same seed: same initial
   weights, checked by a broadcast from process 0) and hands it to the *same*
   :class:`~mmsc_dgl.train.trainer.Trainer`, over the training edges whose source item it owns,
   in batches of ``batch_size / processes`` edges per relation (together one single-machine
   batch), each epoch as many steps as the process with the fewest has;
5. after every ``backward``, averages the gradients over the group (one flat all-reduce: what
   ``DistributedDataParallel`` does, here without its wrapper, since the model is trained through
   ``loss`` rather than ``forward``);
6. validates after every epoch by embedding its own items and gathering the others' (all
   processes then rank alike; process 0's metrics are taken by all, so early stopping and
   per-relation selection agree);
7. logs one line per epoch; process 0 alone writes the run directory (checkpoint every epoch,
   ``model.pt``, metrics): the result is an ordinary run, which ``evaluate`` and ``recommend``
   read on one machine.

Without ``mmsc-dgl launch`` (no ``DGL_DIST_MODE=distributed``) it runs in DistDGL's standalone
mode on a one-partition directory, as a group of one: the fast path to try a partition and to
test this code.

What this does not distribute yet (docs/distributed.md, "What is whole on every trainer"):
every process reads the dataset (validation and test edges, negatives) and its content features,
and builds the model from the whole training graph (the path evidence's graphs and the graph
branch's table; with ``shard_embeddings`` both then move onto the servers, and a step fetches what
its batch needs), and, without ``shard_embeddings``, holds the gathered tables.  At 100k items that is
about 1.1 GB per trainer beyond its 0.5 GB of imports (measured phase by phase); at 100M items
those must become per-batch.  Walks drawn by the servers are not seeded by the trainers, so a
distributed run is reproducible in distribution only.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from mmsc_dgl.schema import NODE_TYPE, RELATIONS
from mmsc_dgl.config import TrainConfig
from mmsc_dgl.errors import DataError, flag

logger = logging.getLogger(__name__)


def share_of_items(num_items: int, rank: int, world: int) -> torch.Tensor:
    """Process ``rank``'s items, in DistDGL's ids: the ``rank``-th of ``world`` contiguous, even
    chunks.  DistDGL numbers each partition's items contiguously, partition by partition, so with
    one trainer per partition (or ``T`` per partition, started in partition order) a trainer's
    share is (almost) its own partition's items.  ``dgl.distributed.node_split`` is not used: it
    splits by the machine a trainer finds itself on, and on one host every trainer is on machine
    0 (measured: both trainers of a 2-partition loopback job got the same 1,000 of 2,000 items)."""
    return torch.tensor_split(torch.arange(num_items, dtype=torch.int64), world)[rank]


class MemoryPhases:
    """This trainer's resident memory after each phase of the job (``/proc/self/status``: the
    resident size now, and its high-water mark so far), for one log line at the end: where a
    trainer's memory goes, measured (``bench dist --train`` reads it).  Empty where ``/proc``
    is not there."""

    def __init__(self):
        self.marks: List[Tuple[str, float, float, float]] = []

    def mark(self, phase: str) -> None:
        from mmsc_dgl.distributed.launch import proc_memory_mib
        fields = proc_memory_mib("self", ("VmRSS", "VmHWM", "RssShmem"))
        if "VmRSS" in fields and "VmHWM" in fields:
            self.marks.append((phase, fields["VmRSS"], fields["VmHWM"], fields.get("RssShmem", 0.0)))

    def line(self) -> str:
        """``phase now/peak/shared, ...`` in MiB (shared: pages of shared memory this process has
        touched, such as a local partition's graph that the servers publish in ``/dev/shm``;
        counted in the resident size, not this process's own)."""
        return ", ".join(f"{phase} {now:.0f}/{peak:.0f}/{shared:.0f}" for phase, now, peak, shared in self.marks)


class GradientSync:
    """The :class:`~mmsc_dgl.train.trainer.Trainer`'s ``sync`` for data-parallel training over a
    ``torch.distributed`` group: gradients averaged after every ``backward``, validation metrics
    taken from process 0."""

    def __init__(self, world: int):
        self.world = world

    def gradients(self, model: torch.nn.Module) -> None:
        import torch.distributed as dist
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            return
        # A parameter no process used this step keeps grad None (Adam then leaves it alone, as
        # on one machine); one that some process used gets the average, zeros counted for the rest.
        device = params[0].device  # gloo reduces CPU tensors, nccl CUDA ones: where the model is
        used = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                          for p in params])
        dist.all_reduce(used)
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, was_used in zip(params, used.tolist()):
            n = p.numel()
            if was_used:
                p.grad = flat[offset: offset + n].view_as(p).to(device=p.device, dtype=p.dtype)
            offset += n

    def agree(self, metrics: dict) -> dict:
        return broadcast_object(metrics)


def broadcast_object(value, src: int = 0):
    """Process ``src``'s ``value`` on every process of the group."""
    import torch.distributed as dist
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_rows(nodes: torch.Tensor, rows: torch.Tensor, num_items: int) -> torch.Tensor:
    """Every process's ``rows`` [n_p, d] of its ``nodes`` [n_p], assembled into [num_items, d]
    on every process (padded ``all_gather``: the shares may differ by a few items)."""
    import torch.distributed as dist
    world = dist.get_world_size()
    device = rows.device  # gloo gathers CPU tensors, nccl CUDA ones: where the rows are
    count = torch.tensor([nodes.numel()], device=device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    width = int(max(c.item() for c in counts))
    pad_nodes = torch.full((width,), -1, dtype=torch.int64, device=device)
    pad_nodes[: nodes.numel()] = nodes.to(device)
    pad_rows = torch.zeros((width, rows.shape[1]), dtype=rows.dtype, device=device)
    pad_rows[: rows.shape[0]] = rows
    all_nodes = [torch.empty_like(pad_nodes) for _ in range(world)]
    all_rows = [torch.empty_like(pad_rows) for _ in range(world)]
    dist.all_gather(all_nodes, pad_nodes)
    dist.all_gather(all_rows, pad_rows)
    out = torch.zeros((num_items, rows.shape[1]), dtype=rows.dtype, device=device)
    seen = torch.zeros(num_items, dtype=torch.bool, device=device)
    for n, r, c in zip(all_nodes, all_rows, counts):
        k = int(c.item())
        out[n[:k]] = r[:k]
        seen[n[:k]] = True
    if not bool(seen.all()):
        raise RuntimeError(f"{int((~seen).sum())} items are embedded by no process (their shares left them out)")
    return out


class ShareEmbedder:
    """The :class:`~mmsc_dgl.eval.evaluator.Evaluator`'s ``embed``: each process computes the
    scoring rows of its own items (``model(nodes)``) and gathers everyone else's."""

    def __init__(self, mine: torch.Tensor, num_items: int, chunk: int = 16384):
        self.mine, self.num_items, self.chunk = mine, num_items, chunk

    @torch.no_grad()
    def __call__(self, model) -> Dict[str, torch.Tensor]:
        device = next(model.parameters()).device
        parts: Dict[str, List[torch.Tensor]] = {r: [] for r in RELATIONS}
        for nodes in self.mine.to(device).split(self.chunk):
            rows = model(nodes)
            for r in RELATIONS:
                parts[r].append(rows[r])
        return {r: gather_rows(self.mine, torch.cat(parts[r]), self.num_items) for r in RELATIONS}


class ShareQueries:
    """The :class:`~mmsc_dgl.eval.evaluator.Evaluator`'s ``share``
    (:class:`~mmsc_dgl.eval.evaluate.QueryShare`): process ``rank`` of ``world`` ranks every
    ``world``-th query of a split, from its ``rank``-th on, and the ranks are gathered back in
    the split's order, so every process holds every query's rank, each computed once.  Without
    it every trainer ranked every query, and with ``--shard-embeddings`` fetched every query's
    neighbourhood from the servers.

    Args:
        rank, world: this process in the ``torch.distributed`` group.
        gather: ``gather(ranks) -> [every process's ranks, by rank]`` (default:
            ``torch.distributed.all_gather_object``; every process calls it in the same order).
    """

    def __init__(self, rank: int, world: int, gather: Optional[Callable[[torch.Tensor], List[torch.Tensor]]] = None):
        self.rank, self.world = rank, world
        self.gather = gather or _all_gather

    def part(self, query: np.ndarray) -> np.ndarray:
        return query[self.rank::self.world]

    def whole(self, ranks: torch.Tensor, count: int) -> torch.Tensor:
        parts = self.gather(ranks.cpu())
        out = torch.zeros((count, *ranks.shape[1:]), dtype=next((p.dtype for p in parts if p.numel()), ranks.dtype))
        for rank, got in enumerate(parts):
            out[rank::self.world] = got
        return out.to(ranks.device)


def _all_gather(value: Any) -> List[Any]:
    """Every process's ``value``, by rank (``torch.distributed.all_gather_object``)."""
    import torch.distributed as dist
    parts: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, value)
    return parts


class RankBatches:
    """One process's epoch source: its own training edges, its batches drawn from a generator
    derived from the trainer's ``(seed, epoch)`` one and the process's rank; ``len`` is the
    group's agreed number of steps."""

    def __init__(self, batches, rank: int, steps: int):
        self.batches, self.rank, self.steps = batches, rank, steps

    def __len__(self) -> int:
        return self.steps

    def __call__(self, generator: torch.Generator):
        seed = int(torch.randint(0, 2 ** 40, (1,), generator=generator))
        return self.batches(torch.Generator().manual_seed(seed * 1009 + self.rank))


def gathered_tables(graph, mine: torch.Tensor, orig: torch.Tensor, paths, config: TrainConfig, num_items: int):
    """The meta-path tables of every item, each process walking its own items on the
    partitioned graph and all processes gathering the rows (identical tables everywhere)."""
    from mmsc_dgl.distributed.sampling import default_sampler, sample_metapath_neighbors
    from mmsc_dgl.metapath.build import table_from_coo
    from mmsc_dgl.metapath.table import MetaPathTables
    sample = default_sampler(graph)
    k = config.max_neighbors
    tables = []
    for path in paths:
        rows, cols, share = sample_metapath_neighbors(graph, mine, path, k, config.num_walks, sample=sample,
                                                      tie_seed=config.seed)
        local = (orig[mine[rows]], orig[cols], share)  # in the dataset's node ids
        everyone = [e for e in _all_gather(local) if e is not None]  # every rank sends its part
        src = torch.cat([e[0] for e in everyone])
        dst = torch.cat([e[1] for e in everyone])
        weight = torch.cat([e[2] for e in everyone])
        order = torch.argsort(src * num_items + dst)  # table_from_coo takes pairs sorted by (row, neighbour)
        tables.append(table_from_coo(src[order].numpy(), dst[order].numpy(), weight[order].numpy(), num_items,
                                     path, "walk", k))
        logger.info("meta-path %s: %s neighbour pairs over %s items (walked by the graph servers)", path.name,
                    f"{tables[-1].num_pairs:,}", f"{int(tables[-1].nonempty.sum()):,}")
    return MetaPathTables(tables)


def train_distributed(part_dir: os.PathLike | str, out: os.PathLike | str, config: Optional[TrainConfig] = None,
                      ip_config: Optional[os.PathLike | str] = None, resume: bool = False, overwrite: bool = False,
                      progress: bool = False, stop_after: Optional[int] = None, shard_embeddings: bool = False):
    """Train MMSC data-parallel on the DistDGL cluster serving ``part_dir``; run on every trainer
    process (``mmsc-dgl launch PART_DIR -- mmsc-dgl train PART_DIR --distributed --out RUN``).

    Args:
        part_dir: written by ``mmsc-dgl partition``; the dataset it was cut from must be
            readable by every trainer.
        out: the run directory, written by process 0 (``--resume`` also reads its checkpoint on
            every process: put it on storage all trainers share).
        config: :class:`~mmsc_dgl.config.TrainConfig` (MMSC; the partition's features).
        ip_config: DistDGL's ip_config file (default: ``DGL_IP_CONFIG``, which ``launch`` sets).
        resume: continue the run in ``out``.
        overwrite: replace the mmsc_dgl run in ``out``.
        stop_after: end after this many epochs of this call (to test interrupted runs).
        shard_embeddings: keep the item-sized tables on the graph servers, each trainer reading
            and updating the rows its batches touch (:mod:`mmsc_dgl.distributed.sharded`).

    Returns:
        a :class:`~mmsc_dgl.train.trainer.TrainResult` on every process (metrics included; only
        process 0 wrote them).

    Example:
        >>> # on each trainer process, as started by: mmsc-dgl launch parts --trainers 2 -- ...
        >>> result = train_distributed("parts", "runs/dist", TrainConfig(epochs=5))  # doctest: +SKIP
    """
    import dgl
    import torch.distributed as dist

    from mmsc_dgl.data.dataset import load_dataset
    from mmsc_dgl.distributed.client import leave_on_error
    from mmsc_dgl.distributed.partition import MAPPING_FILE, load_partition_record, partition_dataset_dir
    from mmsc_dgl.metapath.spec import parse_metapaths

    config = config or TrainConfig()
    part_dir = Path(part_dir)
    run_dir = Path(out)
    phases = MemoryPhases()
    phases.mark("started")
    if resume and overwrite:
        raise DataError(f"{flag('--resume', 'resume=True')} and {flag('--overwrite', 'overwrite=True')} were both given.", fix="continue the run or replace it, not both.")
    record = load_partition_record(part_dir)
    if config.architecture != "mmsc":
        raise DataError(f"--distributed trains MMSC; {config.architecture} is trained on one machine.",
                        fix="drop --architecture, or train the baseline without --distributed.")
    if config.train_noise or config.train_edges is not None:
        raise DataError("--distributed trains on the partition's training graph as it is (no --train-noise, "
                        "no --train-edges).", fix="drop those options, or partition a dataset prepared that way.")
    if config.features != record["features"]:
        raise DataError(f"the partition's servers hold the features {record['features']!r}, not "
                        f"{config.features!r}.", path=part_dir,
                        fix=f"train with --features {record['features']}, or partition again with these features.")
    standalone = os.environ.get("DGL_DIST_MODE", "standalone") == "standalone"
    ip_config = ip_config or os.environ.get("DGL_IP_CONFIG")
    if standalone and int(record["num_parts"]) != 1:
        raise DataError(f"without graph servers (DistDGL's standalone mode) one partition is read, and this "
                        f"directory has {record['num_parts']}.", path=part_dir,
                        fix="start the job with mmsc-dgl launch PART_DIR --trainers N -- mmsc-dgl train ..., "
                            "or partition into --parts 1.")
    if not ip_config and not standalone:
        raise DataError("--distributed needs DistDGL's ip_config.",
                        fix="pass --ip-config FILE, or start the trainers with mmsc-dgl launch (which sets it).")
    if shard_embeddings:
        from mmsc_dgl.distributed.sharded import check_shardable
        check_shardable(config)
    dataset_dir = partition_dataset_dir(part_dir, record)
    paths = parse_metapaths(config.metapaths)
    if any(p.side_hops for p in paths):
        raise DataError("--distributed walks the item graph only; meta-paths through other node types are "
                        "trained on one machine.", fix="pass --metapaths over s and c only.")

    from mmsc_dgl.train.build import resolve_device
    device = resolve_device(config.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        if device.index is None:  # one GPU per trainer of this host
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        config = config.model_copy(update={"device": str(device)})
        torch.cuda.set_device(device)
    with tempfile.TemporaryDirectory(prefix="mmsc-standalone-") as scratch:
        if standalone and not ip_config:  # DistDGL reads the file even when it connects to no server
            ip_config = Path(scratch) / "ip_config.txt"
            ip_config.write_text("127.0.0.1\n")
        dgl.distributed.initialize(str(ip_config))  # before torch.distributed, as DGL asks
    # A trainer failing alone exits with its error instead of waiting in DGL's exit barrier
    # for trainers that wait for it (the launcher then ends the job).
    with leave_on_error():
        if not dist.is_initialized():
            if "MASTER_ADDR" in os.environ:  # set by mmsc-dgl launch (or torchrun)
                dist.init_process_group(backend)
            else:  # standalone: a group of one
                # (an in-process store: no port to pick, none another process can take first)
                dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        rank, world = dist.get_rank(), dist.get_world_size()
        writer = rank == 0

        # Process 0 checks --out; every process refuses with its verdict, before any work.
        verdict = None
        if writer:
            try:
                from mmsc_dgl.ownership import check_dir_parent, check_output_dir
                from mmsc_dgl.runs.record import check_resume
                check_dir_parent(run_dir)
                marker = check_output_dir(run_dir, "run", overwrite=overwrite, resume=resume,
                                          inputs=[part_dir, dataset_dir])
                if resume:
                    check_resume(run_dir, marker, config)
                    _check_sharding(run_dir, shard_embeddings)
            except DataError as err:
                verdict = (err.reason, err.path, err.fix)
        verdict = broadcast_object(verdict)
        if verdict is not None:
            raise DataError(verdict[0], path=verdict[1], fix=verdict[2])

        graph = dgl.distributed.DistGraph(record["graph_name"], part_config=str(part_dir / record["config"]))
        orig = torch.load(part_dir / MAPPING_FILE, weights_only=True)["orig_nids"][NODE_TYPE]
        mine_new = share_of_items(graph.num_nodes(NODE_TYPE), rank, world)
        mine = orig[mine_new]  # this process's items, in the dataset's ids
        phases.mark("joined")
        dataset = load_dataset(dataset_dir)
        phases.mark("dataset")
        logger.info("rank %d/%d: %s of %s items", rank, world, f"{mine.numel():,}", f"{dataset.num_items:,}")
        return _train(graph, dataset, dataset_dir, part_dir, record, config, paths, mine, mine_new, orig, run_dir,
                      rank, world, resume, overwrite, progress, stop_after, shard_embeddings, phases)


def _model_state_mib(model, optimizer, states: Dict[str, dict]) -> Tuple[float, float]:
    """The MiB this trainer holds for its model: weights, gradients, the dense optimiser's state and
    each relation's best copy (each tensor once), and the model's precomputed tables held here: its
    buffers, the graph branch's capped table and the meta-path tables (the last two on the servers
    once sharded), and the first-hop graphs of ``full_first_hop``."""
    seen: set = set()

    def size(tensors) -> int:
        return _tensor_bytes(tensors, seen)
    params = list(model.parameters())
    state = size(params) + size(p.grad for p in params)
    if optimizer is not None:
        state += size(v for s in optimizer.state.values() for v in s.values())
    state += size(v for s in states.values() for v in s.values())
    branch = getattr(model, "graph_branch", None)
    capped = [] if branch is None else [t for kind in ("_columns", "_values") for t in getattr(branch, kind, {}).values()]
    tables = [t for name in ("_csr", "_full") for csr in getattr(model, name, {}).values()
              if isinstance(csr, torch.nn.Module) for t in csr.buffers()]
    return state / 2**20, (size(model.buffers()) + size(capped) + size(tables)) / 2**20


def _evidence_mib(model) -> float:
    """The MiB of the path evidence's state this trainer holds: each training graph's adjacency
    (and its cached row ids), the sorted edge keys, the Adamic-Adar weights and the pair table."""
    evidence = getattr(model, "evidence", None)
    if evidence is None:
        return 0.0
    from mmsc_dgl.distributed.sharded_evidence import FetchedPathCounter
    counter = evidence.counter
    if isinstance(counter, FetchedPathCounter):  # its graphs are on the servers, fetched per call
        return 0.0
    tensors = [t for g in counter.graphs.values() for t in g.buffers()] + [*counter._keys.values(), counter.weight]
    table = getattr(evidence, "_table", None)
    if table is not None:
        tensors += [table.keys, table.values]
    return _tensor_bytes(tensors, set()) / 2**20


def _tensor_bytes(tensors, seen: set) -> int:
    """The bytes of ``tensors``, each storage once (``seen``: the data pointers counted already,
    shared between calls that must not count a tensor twice)."""
    total = 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.numel() and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def _check_sharding(run_dir: Path, shard_embeddings: bool) -> None:
    """A resumed run keeps the way its tables were held (its shards, or its checkpoint's rows)."""
    record = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    was = bool(record.get("distributed", {}).get("shard_embeddings", False))
    if was != shard_embeddings:
        raise DataError(f"this run was trained {'with' if was else 'without'} --shard-embeddings.", path=run_dir,
                        fix=f"resume it {'with' if was else 'without'} --shard-embeddings.")


def _table_info(config, paths) -> dict:
    """What the run's meta-path tables record of how they were made."""
    return {"strategy": "walk", "max_neighbors": config.max_neighbors, "num_walks": config.num_walks,
            "seed": config.seed, "metapaths": [p.name for p in paths], "train_noise": config.train_noise,
            "drawn_by": "DistDGL graph servers"}


def _tables(graph, mine_new, orig, paths, config, num_items: int, run_dir: Path, resume: bool, writer: bool):
    """Resumed: process 0's saved tables, shared; fresh: walked and gathered."""
    from mmsc_dgl.metapath.table import MetaPathTables
    from mmsc_dgl.train.build import TABLES
    tables = None
    if resume:
        saved = None
        if writer and (run_dir / TABLES).exists():
            saved = MetaPathTables.load(run_dir / TABLES)
        tables = broadcast_object(saved)
    if tables is None:
        tables = gathered_tables(graph, mine_new, orig, paths, config, num_items)
    tables.info.update(_table_info(config, paths))
    return tables


def _train(graph, dataset, dataset_dir, part_dir, record, config, paths, mine, mine_new, orig, run_dir, rank, world,
           resume, overwrite, progress, stop_after, shard_embeddings=False, phases=None):
    import contextlib

    import torch.distributed as dist

    from mmsc_dgl.eval.evaluator import Evaluator
    from mmsc_dgl.features.load import load_features
    from mmsc_dgl.io import atomic_write_text, resolve_path
    from mmsc_dgl.lock import writer_lock
    from mmsc_dgl.ownership import clear_directory, read_marker, write_marker
    from mmsc_dgl.train.batches import EdgeBatches
    from mmsc_dgl.train.build import TABLES, build_run, load_train_edges
    from mmsc_dgl.train.trainer import Trainer, TrainResult
    from mmsc_dgl.runs.finishing import finish
    from mmsc_dgl.runs.record import CHECKPOINT, feature_file_of, write_run_record

    writer = rank == 0
    phases = phases or MemoryPhases()
    features = load_features(config.features, dataset, config.feature_dim)
    phases.mark("features")
    sharded_paths = None
    if shard_embeddings:  # each trainer writes its items' rows on the servers; a step pulls its batch's
        from mmsc_dgl.distributed.sharded_metapaths import shard_metapath_tables
        sharded_paths = shard_metapath_tables(graph, orig, mine_new, paths, config, run_dir, rank, world, resume,
                                              _table_info(config, paths))
        tables = sharded_paths.tables
    else:
        tables = _tables(graph, mine_new, orig, paths, config, dataset.num_items, run_dir, resume, writer)
    phases.mark("metapaths")
    train_edges = load_train_edges(dataset, None)
    parts = build_run(dataset, config, None, tables=tables, features=features, train_edges=train_edges,
                      progress=False)
    model = parts.model
    phases.mark("model")
    sharded = sharded_evidence = None
    if shard_embeddings:  # before the broadcast: the tables' rows are the servers' from here
        from mmsc_dgl.distributed.sharded import ShardedTables
        sharded = ShardedTables(model, graph, orig, mine_new, config.lr, run_dir, rank, world)
        from mmsc_dgl.distributed.sharded_evidence import shard_path_evidence
        sharded_evidence = shard_path_evidence(model, graph, orig, mine_new, rank)
        phases.mark("sharded")
    with torch.no_grad():  # the same seed built the same weights; process 0's are taken all the same
        for p in model.parameters():
            dist.broadcast(p.data, src=0)

    # This process's training edges: those whose source item it owns.
    owned = torch.zeros(dataset.num_items, dtype=torch.bool)
    owned[mine] = True
    local = {}
    for r in RELATIONS:
        src, dst = torch.from_numpy(train_edges[r].src), torch.from_numpy(train_edges[r].dst)
        keep = owned[src]
        local[r] = (src[keep], dst[keep])
    per_process = max(2, math.ceil(config.batch_size / world))
    own = EdgeBatches(local, dataset.num_items, per_process, config.model.negatives, config.steps_per_epoch,
                      parts.device)
    steps = torch.tensor([len(own)], device=parts.device)
    dist.all_reduce(steps, op=dist.ReduceOp.MIN)
    own.steps_per_epoch = int(steps)
    batches = RankBatches(own, rank, int(steps))  # each rank its own permutations, negatives and views
    logger.info("rank %d: %s substitute and %s complement training edges, %d steps of %d edges per relation per "
                "epoch", rank, f"{local['substitute'][0].numel():,}", f"{local['complement'][0].numel():,}",
                int(steps), per_process)
    evaluator = Evaluator(dataset, config, features, parts.device, embed=ShareEmbedder(mine, dataset.num_items),
                          share=ShareQueries(rank, world))

    lock = writer_lock(run_dir, "this run") if writer else contextlib.nullcontext()
    with lock:
        if writer:
            if overwrite and read_marker(run_dir) is not None:
                clear_directory(run_dir, "run")
            run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                write_marker(run_dir, "run")
                write_run_record(run_dir, resolve_path(dataset_dir), config, feature_file_of(config),
                                 extra={"distributed": {"partition": str(resolve_path(part_dir)),
                                                        "partition_relative": os.path.relpath(
                                                            resolve_path(part_dir), run_dir.resolve()),
                                                        "parts": int(record["num_parts"]), "trainers": world,
                                                        "shard_embeddings": bool(shard_embeddings)}})
                if sharded_paths is None:
                    tables.save(run_dir / TABLES)
        dist.barrier()  # the run directory exists before any process looks for a checkpoint in it
        if sharded_paths is not None:
            sharded_paths.save_shard(run_dir)  # this trainer's rows, for a resumed job
        trainer = Trainer(model, config, checkpoint=run_dir / CHECKPOINT, progress=progress and writer,
                          identity=json.dumps(config.resume_identity(), sort_keys=True),
                          sync=GradientSync(world), writes_checkpoints=writer, sharded=sharded)
        if resume:
            trainer.resume_checkpoint()  # refuses a damaged or foreign checkpoint before config.json changes
        if writer:
            atomic_write_text(run_dir / "config.json", config.model_dump_json(indent=2))
        fit = trainer.fit(batches, evaluator.validate, resume=resume, stop_after=stop_after)
        if not fit.finished:
            return TrainResult(run_dir, {}, fit.history, fit.best_epoch, dataset)
        import resource
        from mmsc_dgl.progress import report
        state, buffers = _model_state_mib(model, trainer.optimizer, fit.relation_states)
        evidence = _evidence_mib(model)
        phases.mark("trained")
        report("rank %d: training done, peak resident memory %.0f MiB; model state here %.1f MiB (weights, "
               "gradients, Adam, best copies; id tables %s), buffers %.2f MiB", rank,
               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, state,
               "on the graph servers" if sharded is not None else "in this trainer", buffers)
        report("rank %d: path evidence here %.2f MiB (%s)", rank, evidence,
               "the training graphs, their edge keys and the pair table: whole on every trainer"
               if sharded_evidence is None else "none whole: each step fetches its pairs' neighbour lists")
        if phases.marks:
            report("rank %d: resident memory after each phase, now/peak/shared MiB: %s", rank, phases.line())
        if sharded is not None:  # each relation's best rows pulled back: a single machine's model from here
            fit.relation_states = sharded.unshard(fit.relation_states)
        if sharded_evidence is not None:  # the whole counter back, for the calibration and evaluation
            sharded_evidence.unshard()
        if sharded_paths is not None and writer:  # the run's tables, for evaluate and recommend on one machine
            sharded_paths.whole().save(run_dir / TABLES)
        phases.mark("unsharded")

        def agree() -> None:
            here = float(sum(p.detach().double().sum() for p in model.parameters()))
            checksum = broadcast_object(here)
            if here != checksum:
                raise RuntimeError(f"rank {rank}: weights differ from rank 0's ({here} vs {checksum})")

        _, metrics = finish(model, fit, evaluator, config, run_dir, writer=writer, tower=False, agree=agree,
                            mark=phases.mark)
        if phases.marks:  # the line again, with the phases of the final evaluation (bench dist reads the last)
            report("rank %d: resident memory after each phase, now/peak/shared MiB: %s", rank, phases.line())
        dist.barrier()
    return TrainResult(run_dir, metrics, fit.history, fit.best_epoch, dataset)


__all__ = ["GradientSync", "ShareEmbedder", "ShareQueries", "gather_rows", "share_of_items", "train_distributed"]
