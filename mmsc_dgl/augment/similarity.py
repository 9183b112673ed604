"""The offline default judge: content similarity and category structure, calibrated on the
training split only.

For each relation a logistic regression (scikit-learn) separates the relation's *training* edges
from random item pairs using four pair features:

* the cosine of the items' content features;
* whether they share the top-level category, and whether they share the leaf category;
* the pointwise mutual information of their leaf categories among the relation's training edges
  (how much more often the two leaves are joined than chance: phone -> case for complements).

A substitute then needs to be close in content space; a complement needs related leaves that
are not interchangeable.  Validation and test edges are never read.
"""
from __future__ import annotations

import logging
from typing import Dict

import numpy as np
import pyarrow as pa
from sklearn.linear_model import LogisticRegression

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.augment.judge import EdgeJudge
from mmsc_dgl.data.edges import RelationEdges
from mmsc_dgl.features.base import ItemFeatures

logger = logging.getLogger(__name__)


def _category_codes(items: pa.Table):
    cats = items.column("category").to_pylist() if "category" in items.column_names else [None] * items.num_rows
    top = [c[0] if c else "" for c in cats]
    leaf = [c[-1] if c else "" for c in cats]
    top_codes = {v: i for i, v in enumerate(sorted(set(top)))}
    leaf_codes = {v: i for i, v in enumerate(sorted(set(leaf)))}
    return (np.array([top_codes[t] for t in top]), np.array([leaf_codes[x] for x in leaf]),
            np.array([bool(c) for c in cats]))


class SimilarityJudge(EdgeJudge):
    """Args:
        features: content features (any backend, pooled).
        items: the catalog table (for categories).
        train_edges: per relation, the *training* edges; the only edges calibration reads.
        seed: for the random pairs of the calibration.
        negatives_per_edge: random pairs per training edge in the calibration.
    """

    name = "similarity"

    def __init__(self, features: ItemFeatures, items: pa.Table, train_edges: Dict[str, RelationEdges],
                 seed: int = 0, negatives_per_edge: int = 1, max_calibration_edges: int = 200_000):
        self.pooled = features.pooled().numpy()
        self.top, self.leaf, self.has_category = _category_codes(items)
        self.num_items = self.pooled.shape[0]
        self.seed = seed
        self.features_source = features.source
        self._pmi: Dict[str, np.ndarray] = {}
        self._models: Dict[str, LogisticRegression] = {}
        rng = np.random.default_rng([seed, 23])
        for r in RELATIONS:
            edges = train_edges[r]
            if len(edges) > max_calibration_edges:
                pick = np.sort(rng.choice(len(edges), max_calibration_edges, replace=False))
                edges = edges.select(pick)
            self._pmi[r] = self._leaf_pmi(edges)
            m = len(edges) * negatives_per_edge
            neg_src = rng.integers(0, self.num_items, m)
            neg_dst = rng.integers(0, self.num_items, m)
            x = np.vstack([self._pair_features(edges.src, edges.dst, r), self._pair_features(neg_src, neg_dst, r)])
            y = np.r_[np.ones(len(edges)), np.zeros(m)]
            self._models[r] = LogisticRegression(max_iter=1000).fit(x, y)
            logger.info("similarity judge %s: calibrated on %d training edges (coef %s)", r, len(edges),
                        np.round(self._models[r].coef_[0], 3).tolist())

    def _leaf_pmi(self, edges: RelationEdges) -> np.ndarray:
        k = int(self.leaf.max()) + 1
        joint = np.ones((k, k))  # add-one smoothing
        np.add.at(joint, (self.leaf[edges.src], self.leaf[edges.dst]), 1.0)
        joint = joint / joint.sum()
        marginal = np.bincount(self.leaf, minlength=k) / len(self.leaf)
        return np.log(joint / np.maximum(np.outer(marginal, marginal), 1e-12))

    def _pair_features(self, src: np.ndarray, dst: np.ndarray, relation: str) -> np.ndarray:
        cos = np.einsum("ij,ij->i", self.pooled[src], self.pooled[dst])
        known = self.has_category[src] & self.has_category[dst]
        same_top = (self.top[src] == self.top[dst]) & known
        same_leaf = (self.leaf[src] == self.leaf[dst]) & known
        pmi = self._pmi[relation][self.leaf[src], self.leaf[dst]] * known
        return np.column_stack([cos, same_top, same_leaf, pmi]).astype(np.float64)

    def score(self, src: np.ndarray, dst: np.ndarray, relation: str) -> np.ndarray:
        x = self._pair_features(np.asarray(src), np.asarray(dst), relation)
        return self._models[relation].predict_proba(x)[:, 1]

    def describe(self) -> dict:
        return {"judge": self.name, "features": self.features_source, "seed": self.seed}
