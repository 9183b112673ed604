"""Random false edges injected into the training graph, for noise-robustness experiments.

The evaluation splits are untouched: only what a model learns from gets noisier.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Dict

import numpy as np

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.data.edges import RelationEdges

if TYPE_CHECKING:
    from mmsc_dgl.data.dataset import Dataset

logger = logging.getLogger(__name__)


def inject_training_noise(dataset: "Dataset", rate: float, seed: int = 0) -> "Dataset":
    """A copy of ``dataset`` whose training edges gain ``rate * len(train)`` random false edges
    per relation (``rate=0.1``: 10% more edges, all of them noise).

    A false edge joins two uniformly drawn warm items (never a cold item, which must stay
    edgeless) and is none of the relation's known edges in any split, so no held-out pair leaks
    into training.  When the training edges are symmetric, each false pair is added in both
    directions and counts as two edges.  The same ``seed`` gives the same edges.

    Example:
        >>> noisy = inject_training_noise(mmsc_dgl.load_dataset("runs/magazine"), 0.2, seed=0)  # doctest: +SKIP
        >>> noisy.info["train_noise"]                                                          # doctest: +SKIP

    """
    if rate < 0:
        raise ValueError(f"noise rate {rate} must be >= 0")
    if rate == 0:
        return dataset
    n = dataset.num_items
    cold = np.zeros(n, dtype=bool)
    cold[np.asarray(dataset.splits.cold_items, dtype=np.int64)] = True
    warm = np.flatnonzero(~cold)
    rng = np.random.default_rng([seed, 7919])
    train: Dict[str, RelationEdges] = {}
    for relation in RELATIONS:
        edges = dataset.splits.train[relation]
        known = np.unique(dataset.edges[relation].codes(n))
        codes = edges.codes(n)
        symmetric = len(codes) > 0 and np.isin(edges.dst.astype(np.int64) * n + edges.src, codes).all()
        want = int(round(rate * len(edges) / (2 if symmetric else 1)))
        chosen = np.zeros(0, dtype=np.int64)
        for _ in range(20):  # rejection sampling; a sparse graph accepts nearly every draw
            if len(chosen) >= want:
                break
            src = warm[rng.integers(0, len(warm), 2 * want + 16)]
            dst = warm[rng.integers(0, len(warm), 2 * want + 16)]
            code = src.astype(np.int64) * n + dst
            ok = (src != dst) & ~np.isin(code, known) & ~np.isin(dst.astype(np.int64) * n + src, known)
            new = np.unique(np.minimum(code[ok], (dst.astype(np.int64) * n + src)[ok]) if symmetric else code[ok])
            chosen = np.unique(np.concatenate([chosen, new]))
        chosen = rng.permutation(chosen)[:want]
        src, dst = chosen // n, chosen % n
        if symmetric:
            src, dst = np.r_[src, dst], np.r_[dst, src]
        all_src, all_dst = np.r_[edges.src, src], np.r_[edges.dst, dst]
        order = np.argsort(all_src * np.int64(n) + all_dst, kind="stable")  # RelationEdges stay sorted
        train[relation] = RelationEdges(all_src[order], all_dst[order])
        logger.info("noise: %s training edges %d -> %d (+%d false)", relation, len(edges), len(train[relation]), len(src))
    splits = dataclasses.replace(dataset.splits, train=train)
    noisy = dataclasses.replace(dataset, splits=splits, _graph=None)
    noisy.info = {**dataset.info, "train_noise": {"rate": rate, "seed": seed}}
    return noisy
