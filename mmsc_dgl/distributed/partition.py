"""Partitioning a prepared dataset for DistDGL (``mmsc-dgl partition``).

``dgl.distributed.partition_graph`` runs over the *training* graph (only edges a model may
learn from) with the content features as node data, so that graph servers hold what trainers
sample and read.  What the trainers need besides, and DistDGL does not carry, is written next to
the partitions:

* ``partition.json``: the dataset it came from (absolute and relative path, fingerprint), the
  feature source, the method, and per partition its inner nodes, halo nodes and inner edges,
  plus the edge cut;
* ``mapping.pt``: ``orig_nids`` / ``orig_eids`` per type, DistDGL's new ids -> the dataset's
  node ids and training-graph edge ids (validation and test edges, and their sampled
  negatives, stay in the dataset's node ids and are mapped through it).

The directory is written under a temporary name and renamed into place; an existing target is
refused, or replaced with ``overwrite`` only when it is a partition directory mmsc_dgl wrote.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from mmsc_dgl.schema import NODE_TYPE, RELATIONS
from mmsc_dgl.errors import DataError, flag

logger = logging.getLogger(__name__)

METHODS = ("metis", "random")
GRAPH_NAME = "mmsc"
PARTITION_FILE = "partition.json"
MAPPING_FILE = "mapping.pt"
FORMAT_VERSION = 1


@dataclass
class PartitionInfo:
    """What ``partition_dataset`` wrote, and the sizes it measured.

    Attributes:
        out: the partition directory; ``config`` is DistDGL's ``mmsc.json`` inside it.
        parts: per partition ``{"part", "inner_nodes", "halo_nodes", "inner_edges", "edges"}``
            (``edges``: every edge the partition stores, halo edges included).
        edge_cut: training edges whose two items are in different partitions.
        num_edges: training edges in all.
    """

    out: Path
    method: str
    parts: List[dict]
    edge_cut: int
    num_edges: int
    num_nodes: int
    seconds: float
    record: dict = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.out / f"{GRAPH_NAME}.json"

    def format(self) -> List[str]:
        lines = [f"{'part':>4}{'inner nodes':>13}{'halo nodes':>12}{'inner edges':>13}{'stored edges':>14}"]
        for p in self.parts:
            lines.append(f"{p['part']:>4}{p['inner_nodes']:>13,}{p['halo_nodes']:>12,}{p['inner_edges']:>13,}"
                         f"{p['edges']:>14,}")
        share = self.edge_cut / self.num_edges if self.num_edges else 0.0
        lines.append(f"edge cut: {self.edge_cut:,} of {self.num_edges:,} training edges ({share:.1%}) join items "
                     f"of different partitions ({self.method}, {len(self.parts)} parts, {self.seconds:.1f} s)")
        return lines


def _feature_data(features, num_items: int) -> Dict[str, torch.Tensor]:
    """Node data for the servers: the frozen features (``tokens`` [N, T, D], ``mask`` [N, T]) or
    the learnable ones' token ids (``token_ids`` [N, T], ``mask``); nothing for id embeddings."""
    if features is None:
        return {}
    if getattr(features, "learnable", False):
        data = {"token_ids": features.ids, "mask": features.mask}
    else:
        data = {"tokens": features.tokens, "mask": features.mask}
    for key, value in data.items():
        if value.shape[0] != num_items:
            raise DataError(f"the features have {value.shape[0]} rows ({key}) for {num_items} items.",
                            fix="compute them for this dataset.")
    return data


def partition_dataset(dataset_dir: os.PathLike | str, parts: int, out: os.PathLike | str,
                      method: str = "metis", features: str = "auto", feature_dim: int = 256, seed: int = 0,
                      overwrite: bool = False) -> PartitionInfo:
    """Partition a prepared dataset's training graph for DistDGL.

    Args:
        dataset_dir: a directory written by ``mmsc-dgl prepare``.
        parts: number of partitions (one per machine).
        out: the partition directory to write (must not exist, or be one of ours with
            ``overwrite``).
        method: ``"metis"`` (fewer cut edges) or ``"random"``.
        features: the content features the servers hold (as ``TrainConfig.features``:
            ``auto``, ``hashed``, ``categories``, ``none`` or a feature file).
        feature_dim: width of hashed features.
        seed: the random assignment of ``method="random"`` (METIS takes none).
        overwrite: replace a partition directory mmsc_dgl wrote before.

    Example:
        >>> info = partition_dataset("runs/beauty", 2, "runs/beauty-2parts")  # doctest: +SKIP
        >>> print("\\n".join(info.format()))                                  # doctest: +SKIP
    """
    import dgl

    from mmsc_dgl.data.dataset import dataset_files, dataset_fingerprint, load_dataset
    from mmsc_dgl.features.load import load_features
    from mmsc_dgl.io import atomic_directory, atomic_write_json, resolve_path
    from mmsc_dgl.ownership import check_output_dir, write_marker

    if method not in METHODS:
        raise DataError(f"unknown partition method {method!r}.",
                        fix=f"use {flag('--method ', 'method=')}{' or '.join(METHODS)}.")
    if parts < 1:
        raise DataError(f"{flag('--parts ', 'parts=')}{parts}: at least one partition.",
                        fix=f"pass {flag('--parts ', 'parts=')}2 or more.")
    out = Path(out)
    # Everything that can refuse is checked before any work: the target, then the inputs.
    check_output_dir(out, "partition", overwrite=overwrite, inputs=dataset_files(dataset_dir))
    dataset = load_dataset(dataset_dir)
    if parts > dataset.num_items:
        raise DataError(f"{flag('--parts ', 'parts=')}{parts} for {dataset.num_items} items.", fix="use fewer partitions.")
    feats = load_features(features, dataset, feature_dim)
    # Stored reversed: DistDGL 2.1 samples a partition's in-edges reliably but not its out-edges
    # (a per-edge-type check fails), so in-edges of i in the stored graph are i's out-edges in the
    # dataset, which is what a meta-path walk from i follows (identical for symmetric relations).
    graph = dgl.reverse(dataset.train_graph())
    node_data = _feature_data(feats, dataset.num_items)
    for key, value in node_data.items():
        graph.nodes[NODE_TYPE].data[key] = value
    started = time.perf_counter()
    with atomic_directory(out, overwrite=overwrite) as tmp:
        if method == "random":
            dgl.seed(seed)
            np.random.seed(seed)
        chatter = io.StringIO()  # DistDGL prints its progress; it goes to the debug log instead
        with contextlib.redirect_stdout(chatter):
            orig_nids, orig_eids = dgl.distributed.partition_graph(
                graph, GRAPH_NAME, parts, str(tmp), part_method=method, return_mapping=True)
        for line in chatter.getvalue().splitlines():
            logger.debug("partition_graph: %s", line)
        if not isinstance(orig_nids, dict):  # one node type: DGL returns bare tensors
            orig_nids = {NODE_TYPE: orig_nids}
        if not isinstance(orig_eids, dict):
            orig_eids = {etype: orig_eids for etype in graph.canonical_etypes}
        torch.save({"orig_nids": {k: v for k, v in orig_nids.items()},
                    "orig_eids": {":".join(k) if isinstance(k, tuple) else k: v for k, v in orig_eids.items()}},
                   tmp / MAPPING_FILE)
        sizes = _partition_sizes(tmp / f"{GRAPH_NAME}.json", parts)
        cut = _edge_cut(graph, orig_nids[NODE_TYPE], tmp / f"{GRAPH_NAME}.json")
        seconds = time.perf_counter() - started
        dataset_path = resolve_path(dataset_dir)
        record = {
            "format_version": FORMAT_VERSION, "graph_name": GRAPH_NAME, "config": f"{GRAPH_NAME}.json",
            "dataset": str(dataset_path), "dataset_relative": os.path.relpath(dataset_path, resolve_path(out)),
            "dataset_fingerprint": dataset_fingerprint(dataset_path),
            "features": features if isinstance(features, str) else "memory",
            "feature_keys": sorted(node_data), "method": method,
            "seed": seed if method == "random" else None, "num_parts": parts,
            "orientation": "reversed: in-edges of item i are its out-edges in the dataset",
            "num_nodes": dataset.num_items, "num_edges": int(graph.num_edges()),
            "edges": {r: int(graph.num_edges(r)) for r in RELATIONS},
            "parts": sizes, "edge_cut": cut, "seconds": round(seconds, 3)}
        atomic_write_json(tmp / PARTITION_FILE, record)
        write_marker(tmp, "partition")
    info = PartitionInfo(out, method, sizes, cut, int(graph.num_edges()), dataset.num_items, seconds, record)
    for line in info.format():
        logger.info("%s", line)
    return info


def _partition_sizes(config: Path, parts: int) -> List[dict]:
    import dgl
    out = []
    for part in range(parts):
        local, *_ = dgl.distributed.load_partition(str(config), part, load_feats=False)
        inner = int(local.ndata["inner_node"].sum())
        out.append({"part": part, "inner_nodes": inner, "halo_nodes": int(local.num_nodes()) - inner,
                    "inner_edges": int(local.edata["inner_edge"].sum()), "edges": int(local.num_edges())})
    return out


def _edge_cut(graph, orig_nids: torch.Tensor, config: Path) -> int:
    """Training edges whose endpoints DistDGL put in different partitions."""
    ranges = json.loads(config.read_text())["node_map"][NODE_TYPE]
    part_of_new = torch.zeros(int(orig_nids.numel()), dtype=torch.int64)
    for part, (lo, hi) in enumerate(ranges):
        part_of_new[lo:hi] = part
    part_of = torch.empty_like(part_of_new)
    part_of[orig_nids] = part_of_new  # the dataset's node id -> its partition
    cut = 0
    for etype in graph.canonical_etypes:
        src, dst = graph.edges(etype=etype)
        cut += int((part_of[src] != part_of[dst]).sum())
    return cut


def load_partition_record(part_dir: os.PathLike | str) -> dict:
    """``partition.json`` of a partition directory, with a one-line error when it is not one."""
    path = Path(part_dir) / PARTITION_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("not a partition directory (no partition.json).", path=part_dir,
                        fix="write one with mmsc-dgl partition DATASET_DIR --parts N --out DIR.") from None
    except ValueError as err:
        raise DataError(f"partition.json is damaged ({err}).", path=path,
                        fix="partition again with --overwrite.") from None
    if record.get("format_version") != FORMAT_VERSION:
        raise DataError("a partition directory of another format.", path=part_dir,
                        fix="partition again with this version (--overwrite).")
    return record


def partition_dataset_dir(part_dir: os.PathLike | str, record: dict) -> Path:
    """The dataset a partition directory was cut from: relative to the partition first (the two
    moved together), then where it was; checked by fingerprint, since the trainers read its
    validation and test edges and negatives."""
    from mmsc_dgl.data.dataset import dataset_fingerprint
    candidates = [Path(part_dir) / record.get("dataset_relative", ""), Path(record["dataset"])]
    path = next((p.resolve() for p in candidates if (p / "dataset.json").exists()), None)
    if path is None:
        raise DataError(f"the dataset this partition was cut from is no longer at {record['dataset']}.",
                        path=part_dir, fix="put it back (or next to the partition, as it was), or partition again.")
    if dataset_fingerprint(path) != record["dataset_fingerprint"]:
        raise DataError(f"the dataset at {path} is not the one this partition was cut from.", path=part_dir,
                        fix="partition the dataset again (mmsc-dgl partition ... --overwrite).")
    return path


__all__ = ["METHODS", "PartitionInfo", "load_partition_record", "partition_dataset", "partition_dataset_dir"]
