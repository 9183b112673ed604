"""A trainer-side check job for a launched DistDGL cluster (``python -m
mmsc_dgl.distributed.worker``): every trainer joins the graph servers and the gloo process group,
takes its share of items (``node_split`` over the partition it sits on), reads their content
features from the servers and walks their meta-paths (:mod:`mmsc_dgl.distributed.sampling`),
and writes what it read, in the dataset's ids, to ``OUT/rank-R.pt``.

It is what ``mmsc-dgl launch`` runs until the distributed trainer exists, and what the tests run
to show that features cross partitions intact and that walks follow the single-machine law.
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
    args = parser.parse_args(argv)

    import dgl
    import torch
    import torch.distributed as dist

    from mmsc_dgl import NODE_TYPE
    from mmsc_dgl.distributed.partition import MAPPING_FILE, load_partition_record
    from mmsc_dgl.distributed.sampling import default_sampler, metapath_walk_ends
    from mmsc_dgl.metapath.spec import parse_metapaths

    record = load_partition_record(args.part_dir)
    dgl.distributed.initialize(os.environ["DGL_IP_CONFIG"])  # before torch.distributed, as DGL asks
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    graph = dgl.distributed.DistGraph(record["graph_name"], part_config=str(args.part_dir / record["config"]))
    if rank == args.fail_rank:
        print(f"rank {rank}: failing on purpose (--fail-rank)", file=sys.stderr, flush=True)
        os._exit(3)  # as a crash would: no clean disconnect from the servers
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
    walked = torch.tensor([len(mine) * args.walks])
    dist.all_reduce(walked)  # the process group works across trainers
    result["walks_all_ranks"] = int(walked)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(result, args.out / f"rank-{rank}.pt")
    dist.barrier()
    print(f"rank {rank}/{world}: {len(mine)} items, {int(walked):,} walks in all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
