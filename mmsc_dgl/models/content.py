"""Content cosine: rank by the cosine of frozen content features, with no training.

The baseline every learned model must beat on cold items, and the floor for warm ones.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from mmsc_dgl.features.base import ItemFeatures
from mmsc_dgl.models.base import NothingToLearn, Recommender


class ContentCosine(nn.Module, Recommender):
    """``score(i, j) = cos(x̄_i, x̄_j)`` where :math:`\\bar x_i` is the mean of item ``i``'s content
    tokens; the same embedding serves both relations.

    Args:
        features: frozen content tokens (required: there is nothing else to rank by).
    """

    trainable = False
    content_only = True

    def __init__(self, features: Optional[ItemFeatures]):
        super().__init__()
        if features is None:
            raise ValueError("the content baseline needs content features; set features to 'hashed', "
                             "'auto' or a feature cache, not 'none'")
        self.register_buffer("pooled", features.pooled().float(), persistent=False)

    @property
    def num_items(self) -> int:
        return self.pooled.shape[0]

    def loss(self, batch: dict) -> Dict[str, torch.Tensor]:
        raise NothingToLearn("ContentCosine has no parameters to train")

    def score(self, src: torch.Tensor, dst: torch.Tensor, relation: str) -> torch.Tensor:
        return (self.pooled[src] * self.pooled[dst]).sum(-1)

    def embed(self, relation: str) -> torch.Tensor:
        return self.pooled

    def __repr__(self) -> str:
        return f"ContentCosine(items={self.num_items:,}, dim={self.pooled.shape[1]})"
