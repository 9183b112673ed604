"""Reproducible link-prediction and cold-start splits (numpy only, no DGL).

Protocol, per relation:

1. Cold start: a share of items is held out with all their edges.  Their edges (from the cold
   item's side) form the ``cold`` evaluation set; no edge touching a cold item is trained on.
2. Link prediction: among the remaining edges, every item with at least ``min_degree`` edges of
   the relation gives one edge (chosen at random) to ``test`` and another to ``val``.
3. A held-out pair leaves training in both directions, so a symmetric graph cannot leak it.
   A validation edge is never the reverse of a test edge.
4. A labelled pair file's positive pairs also leave training.

Negatives are not stored: :class:`~mmsc_dgl.data.negatives.NegativeSampler` regenerates them
from the seed.  The same seed gives the same split, bit for bit.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.config import SplitConfig
from mmsc_dgl.data.edges import RelationEdges, edges_from_table, edges_to_table
from mmsc_dgl.errors import DataError
from mmsc_dgl.data.negatives import NegativeSampler, max_negatives
from mmsc_dgl.io import atomic_write_json, atomic_write_parquet

logger = logging.getLogger(__name__)

DEFAULT_COLD_FRACTION = 0.05
SPLIT_NAMES = ("train", "val", "test", "cold")


@dataclass
class Splits:
    """Edges per split and relation, the cold items, an optional labelled pair table, and what
    is needed to regenerate negatives."""

    num_items: int
    train: Dict[str, RelationEdges]
    val: Dict[str, RelationEdges]
    test: Dict[str, RelationEdges]
    cold: Dict[str, RelationEdges]
    cold_items: np.ndarray
    config: SplitConfig
    num_negatives: int
    pairs: Optional[pa.Table] = None
    stats: Dict[str, dict] = field(default_factory=dict)
    val_pairs: Optional[pa.Table] = None
    """Labelled validation pairs (given splits with a labelled ``--valid``): where F1's threshold
    is chosen."""

    def edges(self, split: str) -> Dict[str, RelationEdges]:
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}; use one of {SPLIT_NAMES}")
        return getattr(self, split)

    def negative_sampler(self, full_edges: Mapping[str, RelationEdges]) -> NegativeSampler:
        """The sampler for this split's negatives; ``full_edges`` is every edge of the graph."""
        return NegativeSampler(self.num_items, _exclusion(full_edges, self.num_items),
                               seed=self.config.seed, num_negatives=self.num_negatives)

    def save(self, directory: os.PathLike | str) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for split in SPLIT_NAMES:
            atomic_write_parquet(directory / f"{split}.parquet", edges_to_table(self.edges(split)))
        atomic_write_parquet(directory / "cold_items.parquet",
                             pa.table({"node": pa.array(self.cold_items, pa.int64())}))
        if self.pairs is not None:
            atomic_write_parquet(directory / "pairs.parquet", self.pairs)
        if self.val_pairs is not None:
            atomic_write_parquet(directory / "val_pairs.parquet", self.val_pairs)
        atomic_write_json(directory / "meta.json", {
            "config": self.config.model_dump(),
            "num_items": self.num_items,
            "num_negatives": self.num_negatives,
            "negatives": "regenerated from the seed by mmsc_dgl.data.negatives.NegativeSampler",
            "stats": self.stats,
        })

    @classmethod
    def load(cls, directory: os.PathLike | str) -> "Splits":
        directory = Path(directory)
        meta_path = directory / "meta.json"
        if not meta_path.exists():
            raise DataError("the dataset has no split metadata.", path=meta_path,
                            fix="re-run mmsc-dgl prepare to write the splits.")
        meta = json.loads(meta_path.read_text())
        parts = {}
        for split in SPLIT_NAMES:
            path = directory / f"{split}.parquet"
            if not path.exists():
                raise DataError("a split file is missing.", path=path,
                                fix="re-run mmsc-dgl prepare to write the splits.")
            parts[split] = edges_from_table(pq.read_table(path))
        cold_items = pq.read_table(directory / "cold_items.parquet").column("node").to_numpy()
        pairs_path = directory / "pairs.parquet"
        pairs = pq.read_table(pairs_path) if pairs_path.exists() else None
        val_pairs_path = directory / "val_pairs.parquet"
        val_pairs = pq.read_table(val_pairs_path) if val_pairs_path.exists() else None
        return cls(num_items=meta["num_items"], cold_items=cold_items,
                   config=SplitConfig(**meta["config"]), num_negatives=meta["num_negatives"],
                   pairs=pairs, stats=meta.get("stats", {}), val_pairs=val_pairs, **parts)


def _exclusion(edges: Mapping[str, RelationEdges], num_items: int) -> Dict[str, tuple]:
    """Per relation, the CSR of true neighbours in either direction."""
    out = {}
    for name, rel in edges.items():
        codes = np.unique(_pair_codes(rel.src, rel.dst, num_items))
        rows, cols = codes // num_items, codes % num_items
        indptr = np.zeros(num_items + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=num_items), out=indptr[1:])
        out[name] = (indptr, cols)
    return out


def _pick_first(src: np.ndarray, key: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Index of the eligible edge with the smallest key, per source item."""
    idx = np.flatnonzero(eligible)
    if len(idx) == 0:
        return idx
    order = idx[np.lexsort((key[idx], src[idx]))]
    _, first = np.unique(src[order], return_index=True)
    return order[first]


def _pair_codes(src: np.ndarray, dst: np.ndarray, num_items: int) -> np.ndarray:
    """Codes of both directions of each pair."""
    n = np.int64(num_items)
    return np.concatenate([src * n + dst, dst * n + src])


def make_splits(edges: Mapping[str, RelationEdges], num_items: int, config: Optional[SplitConfig] = None,
                cold_mask: Optional[np.ndarray] = None, pairs: Optional[pa.Table] = None) -> Splits:
    """Split every relation's edges as the module docstring describes.

    Args:
        edges: all edges per relation (canonical: sorted, no duplicates).
        num_items: number of items.
        config: the split settings (seed, negatives, minimum degree, cold share).
        cold_mask: items the catalog marks as cold start; used when ``config.cold_fraction``
            is ``None``.
        pairs: a labelled pair table (``relation``, ``src``, ``dst`` as node ids, ``label``).

    Example:
        >>> splits = make_splits(dataset.edges, dataset.num_items, SplitConfig(seed=1))  # doctest: +SKIP
        >>> splits.test["complement"].src[:5]                                          # doctest: +SKIP

    """
    config = config or SplitConfig()
    n = np.int64(num_items)
    rng_cold = np.random.default_rng([config.seed, 0])
    has_edge = np.zeros(num_items, dtype=bool)
    for rel in edges.values():
        has_edge[rel.src] = True
        has_edge[rel.dst] = True
    if config.cold_fraction is None and cold_mask is not None:
        is_cold = np.asarray(cold_mask, dtype=bool) & has_edge
        cold_source = "catalog column is_cold_start"
    else:
        fraction = DEFAULT_COLD_FRACTION if config.cold_fraction is None else config.cold_fraction
        candidates = np.flatnonzero(has_edge)
        k = int(round(fraction * len(candidates)))
        is_cold = np.zeros(num_items, dtype=bool)
        is_cold[rng_cold.choice(candidates, size=k, replace=False)] = True
        cold_source = f"random {fraction:g} of items with edges"
    cold_items = np.flatnonzero(is_cold)

    pair_block: Dict[str, np.ndarray] = {}
    if pairs is not None and pairs.num_rows:
        positive = pairs.filter(pc.equal(pairs.column("label"), 1))
        relation = positive.column("relation").cast(pa.string())
        for name in RELATIONS:
            part = positive.filter(pc.equal(relation, name))
            pair_block[name] = np.unique(_pair_codes(part.column("src").to_numpy(),
                                                     part.column("dst").to_numpy(), num_items))

    train, val, test, cold = {}, {}, {}, {}
    stats: Dict[str, Any] = {}
    for r_index, name in enumerate(RELATIONS):
        rel = edges.get(name) or RelationEdges(np.zeros(0), np.zeros(0))
        rng = np.random.default_rng([config.seed, 1, r_index])
        touches_cold = is_cold[rel.src] | is_cold[rel.dst]
        cold[name] = rel.select(is_cold[rel.src])
        warm = rel.select(~touches_cold)
        codes = warm.codes(num_items)
        key = rng.random(len(warm))
        degree = warm.degrees(num_items)
        eligible = degree[warm.src] >= config.min_degree
        test_idx = _pick_first(warm.src, key, eligible)
        test_reverse = np.isin(codes, warm.dst[test_idx] * n + warm.src[test_idx])
        is_test = np.zeros(len(warm), dtype=bool)
        is_test[test_idx] = True
        val_idx = _pick_first(warm.src, key, eligible & ~is_test & ~test_reverse)
        held = np.concatenate([test_idx, val_idx])
        blocked = np.isin(codes, _pair_codes(warm.src[held], warm.dst[held], num_items))
        in_pairs = np.isin(codes, pair_block[name]) if name in pair_block else np.zeros(len(warm), bool)
        train[name] = warm.select(~blocked & ~in_pairs)
        test[name] = warm.select(np.sort(test_idx))
        val[name] = warm.select(np.sort(val_idx))
        train_degree = train[name].degrees(num_items)
        stats[name] = {
            "edges": len(rel), "train": len(train[name]), "val": len(val[name]),
            "test": len(test[name]), "cold": len(cold[name]),
            "removed_as_reverse_of_held_out": int((blocked & ~is_test).sum() - len(val_idx)),
            "removed_as_labelled_pairs": int((in_pairs & ~blocked).sum()),
            "held_out_items_left_without_train_edges": int(
                (train_degree[np.unique(warm.src[held])] == 0).sum()) if len(held) else 0,
        }

    num_negatives = _negatives(edges, num_items, config, val, test, cold, pairs)
    stats["cold_items"] = {"count": int(len(cold_items)), "source": cold_source}
    stats["negatives"] = {"requested": config.num_negatives, "used": num_negatives}
    return Splits(num_items=num_items, train=train, val=val, test=test, cold=cold,
                  cold_items=cold_items, config=config, num_negatives=num_negatives,
                  pairs=pairs, stats=stats)


def _negatives(edges, num_items: int, config: SplitConfig, val, test, cold, pairs) -> int:
    """Negatives per held-out edge: as asked, or fewer when a query item has fewer non-neighbours."""
    degrees = {name: _exclusion_degree(edges.get(name), num_items) for name in RELATIONS}
    query_items = {name: [val[name].src, test[name].src, cold[name].src] for name in RELATIONS}
    if pairs is not None and pairs.num_rows:
        relation = pairs.column("relation").cast(pa.string())
        for name in RELATIONS:
            query_items[name].append(pairs.filter(pc.equal(relation, name)).column("src").to_numpy())
    bound = max_negatives(num_items, degrees, query_items)
    num_negatives = min(config.num_negatives, bound)
    if num_negatives < 1:
        raise DataError(f"an item is related to every other item, so it has no negatives "
                        f"({num_items} items).", fix="use a larger catalog.")
    if num_negatives < config.num_negatives:
        logger.warning("num_negatives lowered from %d to %d: some held-out item has only %d "
                       "non-neighbours in a catalog of %d items", config.num_negatives,
                       num_negatives, bound, num_items)
    return num_negatives


def _positives(table: Optional[pa.Table], name: str, num_items: int) -> RelationEdges:
    """The positive (label 1) pairs of one relation in a held-out table, deduplicated, in file
    order of first appearance."""
    if table is None or table.num_rows == 0:
        return RelationEdges(np.zeros(0, np.int64), np.zeros(0, np.int64))
    part = table.filter(pc.and_(pc.equal(table.column("relation").cast(pa.string()), name),
                                pc.equal(table.column("label"), 1)))
    src = part.column("src").to_numpy().astype(np.int64)
    dst = part.column("dst").to_numpy().astype(np.int64)
    _, first = np.unique(src * np.int64(num_items) + dst, return_index=True)
    keep = np.sort(first)
    return RelationEdges(src[keep], dst[keep])


def make_given_splits(train_edges: Mapping[str, RelationEdges], num_items: int, val: pa.Table, test: pa.Table,
                      config: Optional[SplitConfig] = None, drop_overlap: bool = False,
                      pairs: Optional[pa.Table] = None) -> Tuple[Splits, Dict[str, RelationEdges]]:
    """Splits a benchmark ships: every given training edge trains; the positive pairs of ``val``
    and ``test`` (``relation``, ``src``, ``dst``, ``label`` as node ids) are the held-out edges;
    no cold-start split.  A held-out positive that is also a training edge (either direction)
    is counted in ``stats`` and kept in training as given, or removed with ``drop_overlap``.

    Returns the splits and every known edge per relation (training plus held-out positives: no
    negative is ever drawn from them).  ``pairs`` (default: ``test`` when it holds both labels)
    is the labelled pair table of ROC-AUC / PR-AUC / F1; a ``val`` with both labels is kept as
    ``val_pairs``, where F1's threshold is chosen."""
    config = config or SplitConfig()
    if pairs is None and test.num_rows and len(set(test.column("label").to_pylist())) == 2:
        pairs = test
    empty = RelationEdges(np.zeros(0, np.int64), np.zeros(0, np.int64))
    train, held_val, held_test, cold, every = {}, {}, {}, {}, {}
    stats: Dict[str, Any] = {}
    for name in RELATIONS:
        rel = train_edges.get(name) or empty
        held_val[name], held_test[name] = _positives(val, name, num_items), _positives(test, name, num_items)
        codes = rel.codes(num_items)
        overlap = {}
        for split, held in (("val", held_val[name]), ("test", held_test[name])):
            overlap[split] = np.isin(codes, _pair_codes(held.src, held.dst, num_items))
        in_held = overlap["val"] | overlap["test"]
        train[name] = rel.select(~in_held) if drop_overlap else rel
        cold[name] = empty
        stats[name] = {
            "edges": len(rel), "train": len(train[name]), "val": len(held_val[name]), "test": len(held_test[name]),
            "cold": 0,
            "training_edges_that_are_val_pairs": int(overlap["val"].sum()),
            "training_edges_that_are_test_pairs": int(overlap["test"].sum()),
            "overlap": "removed from training (--drop-overlap)" if drop_overlap else "kept in training, as given",
        }
        known = np.unique(np.concatenate([codes, held_val[name].codes(num_items), held_test[name].codes(num_items)]))
        every[name] = RelationEdges(known // num_items, known % num_items)
    num_negatives = _negatives(every, num_items, config, held_val, held_test, cold, pairs)
    stats["cold_items"] = {"count": 0, "source": "none (given splits)"}
    stats["negatives"] = {"requested": config.num_negatives, "used": num_negatives}
    stats["protocol"] = "given"
    labelled_val = val if val.num_rows and len(set(val.column("label").to_pylist())) == 2 else None
    splits = Splits(num_items=num_items, train=train, val=held_val, test=held_test, cold=cold,
                    cold_items=np.zeros(0, np.int64), config=config, num_negatives=num_negatives,
                    pairs=pairs, stats=stats, val_pairs=labelled_val)
    return splits, every


def _exclusion_degree(rel: Optional[RelationEdges], num_items: int) -> np.ndarray:
    if rel is None or len(rel) == 0:
        return np.zeros(num_items, dtype=np.int64)
    codes = np.unique(_pair_codes(rel.src, rel.dst, num_items))
    return np.bincount(codes // num_items, minlength=num_items)
