"""A trainer-side check job for a launched DistDGL cluster (``python -m
mmsc_dgl.distributed.worker``): every trainer joins the graph servers and the gloo process group,
takes its share of items (``node_split`` over the partition it sits on), reads their content
features from the servers and walks their meta-paths (:mod:`mmsc_dgl.distributed.sampling`),
and writes what it read, in the dataset's ids, to ``OUT/rank-R.pt``.

It is what the tests run to show that features cross partitions intact and that walks follow the
single-machine law, and what ``mmsc-dgl bench dist`` times (``--steps``); the trainer is
:mod:`mmsc_dgl.distributed.training`.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmsc_dgl.distributed.worker")
    parser.add_argument("part_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metapaths", default="s,s-c")
    parser.add_argument("--items", type=int, default=20, help="items per trainer")
    parser.add_argument("--walks", type=int, default=64)
    parser.add_argument("--fail-rank", type=int, default=-1, help="this rank dies after joining (tests)")
    parser.add_argument("--raise-rank", type=int, default=-1,
                        help="this rank raises an error after joining, while the others wait for it (tests)")
    parser.add_argument("--steps", type=int, default=0,
                        help="also time this many mini-batch steps of data access (mmsc-dgl bench dist)")
    parser.add_argument("--batch", type=int, default=1024, help="items per timed step")
    args = parser.parse_args(argv)

    import dgl
    import torch
    import torch.distributed as dist

    from mmsc_dgl.schema import NODE_TYPE
    from mmsc_dgl.distributed.client import leave_on_error
    from mmsc_dgl.distributed.partition import MAPPING_FILE, load_partition_record
    from mmsc_dgl.distributed.sampling import default_sampler, metapath_walk_ends
    from mmsc_dgl.metapath.spec import parse_metapaths

    record = load_partition_record(args.part_dir)
    dgl.distributed.initialize(os.environ["DGL_IP_CONFIG"])  # before torch.distributed, as DGL asks
    with leave_on_error():  # a trainer failing alone exits at once (mmsc_dgl.distributed.client)
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        graph = dgl.distributed.DistGraph(record["graph_name"], part_config=str(args.part_dir / record["config"]))
        if rank == args.fail_rank:
            print(f"rank {rank}: failing on purpose (--fail-rank)", file=sys.stderr, flush=True)
            os._exit(3)  # as a crash would: no clean disconnect from the servers
        if rank == args.raise_rank:
            raise RuntimeError(f"rank {rank}: raising on purpose (--raise-rank)")
        orig = torch.load(args.part_dir / MAPPING_FILE, weights_only=True)["orig_nids"][NODE_TYPE]
        mask = torch.ones(graph.num_nodes(NODE_TYPE), dtype=torch.bool)
        mine = dgl.distributed.node_split(mask, graph.get_partition_book(), ntype=NODE_TYPE, force_even=True)
        mine = mine[: args.items]
        result = {"rank": rank, "world": world, "items": orig[mine], "ends": {}}
        # features of the trainer's items, and of items spread over every partition (every 7th
        # dataset id): a server answering with another partition's memory shows up here
        new_of = torch.empty_like(orig)
        new_of[orig] = torch.arange(orig.numel())
        probe = torch.arange(0, orig.numel(), 7)
        result["probe_items"] = probe
        for key in record["feature_keys"]:
            result[key] = graph.nodes[NODE_TYPE].data[key][mine]
            result[f"probe_{key}"] = graph.nodes[NODE_TYPE].data[key][new_of[probe]]
        sample = default_sampler(graph)
        for path in parse_metapaths(args.metapaths):
            ends = metapath_walk_ends(sample, mine.repeat_interleave(args.walks), path).view(len(mine), args.walks)
            result["ends"][path.name] = torch.where(ends >= 0, orig[ends.clamp(min=0)], ends)
        if args.steps:
            result["bench"] = _timed_steps(graph, sample, parse_metapaths(args.metapaths), mask, args, rank)
        walked = torch.tensor([len(mine) * args.walks])
        dist.all_reduce(walked)  # the process group works across trainers
        result["walks_all_ranks"] = int(walked)
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save(result, args.out / f"rank-{rank}.pt")
        dist.barrier()
        print(f"rank {rank}/{world}: {len(mine)} items, {int(walked):,} walks in all", flush=True)
    return 0


def _timed_steps(graph, sample, paths, mask, args, rank: int) -> dict:
    """Per mini-batch of ``--batch`` of this trainer's items: the meta-path neighbourhoods
    (``--walks`` walks per item and meta-path) and the content features of the batch and of every
    neighbour drawn, as MMSC's encoder needs them.  Counts what crosses the network: requests to
    and answers from graph servers of other partitions (8 B per id asked, 24 B per sampled edge,
    the feature row per row fetched)."""
    import resource
    import time

    import dgl
    import torch

    from mmsc_dgl.schema import NODE_TYPE
    from mmsc_dgl.distributed.sampling import metapath_walk_ends

    book = graph.get_partition_book()
    here = book.partid
    owned = dgl.distributed.node_split(mask, book, ntype=NODE_TYPE, force_even=False)
    first_rows = [graph.nodes[NODE_TYPE].data[k][0:1] for k in graph.nodes[NODE_TYPE].data.keys()]  # one fetch each
    row_bytes = sum(row.numel() * row.element_size() for row in first_rows)
    traffic = {"bytes": 0, "messages": 0}

    def counted(nodes, etype):
        owner = book.nid2partid(nodes, NODE_TYPE)
        remote = owner != here
        src, dst = sample(nodes, etype)
        answered = book.nid2partid(src, NODE_TYPE) != here
        traffic["bytes"] += 8 * int(remote.sum()) + 24 * int(answered.sum())
        traffic["messages"] += 2 * len(set(owner[remote].tolist()))
        return src, dst

    gen = torch.Generator().manual_seed(rank)
    rows = []
    for step in range(args.steps):
        traffic["bytes"] = traffic["messages"] = 0
        batch = owned[torch.randint(0, owned.numel(), (args.batch,), generator=gen)]
        started = time.perf_counter()
        reached = [batch]
        for path in paths:
            ends = metapath_walk_ends(counted, batch.repeat_interleave(args.walks), path)
            reached.append(ends[ends >= 0])
        sampled = time.perf_counter()
        need = torch.unique(torch.cat(reached))
        owner = book.nid2partid(need, NODE_TYPE)
        remote = owner != here
        for key in graph.nodes[NODE_TYPE].data.keys():
            graph.nodes[NODE_TYPE].data[key][need]
        fetched = time.perf_counter()
        rows.append({"step": step, "sample_ms": 1000 * (sampled - started), "features_ms": 1000 * (fetched - sampled),
                     "sample_bytes": traffic["bytes"], "sample_messages": traffic["messages"],
                     "feature_rows": int(need.numel()), "remote_rows": int(remote.sum()),
                     "feature_bytes": int(remote.sum()) * (row_bytes + 8),
                     "feature_messages": 2 * len(set(owner[remote].tolist()))})
    return {"steps": rows, "owned_items": int(owned.numel()), "row_bytes": row_bytes,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


if __name__ == "__main__":
    sys.exit(main())
