"""Non-learned baselines evaluated with the same negatives and metrics as the models."""
from __future__ import annotations

from typing import Dict, Iterable

from mmsc_dgl import RELATIONS
from mmsc_dgl.eval.evaluate import evaluate_embeddings
from mmsc_dgl.features.base import ContentFeatures


def content_cosine(dataset, features: ContentFeatures, split: str = "test", ks: Iterable[int] = (10,)) -> Dict:
    """Rank by cosine similarity of the frozen content features (one embedding for both relations)."""
    pooled = features.pooled()
    return evaluate_embeddings({r: pooled for r in RELATIONS}, dataset.splits.edges(split),
                               dataset.negative_sampler(), split, ks=ks)
