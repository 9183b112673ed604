"""A content two-tower baseline: the cold-start model that uses content and nothing else.

Each relation has a tower (:class:`~mmsc_dgl.nn.ContentTower`) from an item's pooled frozen
content to a unit row; the score of two items is the product of their rows (for complements
with MMSC's pseudo-Euclidean signature, so that an item need not be its own best complement),
trained on the warm training edges with a softmax over the batch's other positives and its
sampled negatives.  There are no id embeddings and no graph: a new item is placed exactly as a
warm item is, which is what makes it the honest content baseline for cold start (issue 31.2;
the content tower of :mod:`mmsc_dgl.train.cold_start` is instead fit to another model's rows).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn
from torch.nn import functional as F

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.features.base import ItemFeatures
from mmsc_dgl.models.base import Recommender
from mmsc_dgl.nn.content_tower import ContentTower


class ContentTwoTower(nn.Module, Recommender):
    """Rows ``normalize(tower_r(content))``; ``score_r(i, j) = <row_i, row_j * signature_r> / T``.

    Args:
        features: content (required): frozen features' pooled rows, or category tokens as
            multi-hot rows (``features: categories``); items without content get zero rows.
        config: :class:`~mmsc_dgl.config.TwoTowerConfig` (``hidden``, ``tower_hidden``,
            ``dropout``, ``temperature``, ``complement_signature``).
    """

    content_only = True

    def __init__(self, features: Optional[ItemFeatures], config):
        super().__init__()
        if features is None:
            raise ValueError("the two-tower baseline needs content features; set features to 'hashed', 'auto', "
                             "'categories' or a feature file, not 'none'")
        self.config = config
        self.register_buffer("pooled", features.pooled().float(), persistent=False)
        self.towers = nn.ModuleDict({r: ContentTower(self.pooled.shape[1], config.hidden, hidden=config.tower_hidden,
                                                     dropout=config.dropout) for r in RELATIONS})

    @property
    def num_items(self) -> int:
        return self.pooled.shape[0]

    def reset_parameters(self) -> None:
        for tower in self.towers.values():
            tower.reset_parameters()

    def content_rows(self, relation: str, content: torch.Tensor) -> torch.Tensor:
        has = (content.abs().sum(1, keepdim=True) > 0).to(content.dtype)
        return F.normalize(self.towers[relation](content), dim=1) * has / self.config.temperature ** 0.5

    def _rows(self, relation: str, nodes: torch.Tensor) -> torch.Tensor:
        return self.content_rows(relation, self.pooled[nodes])

    def signature(self, relation: str) -> Optional[torch.Tensor]:
        share = self.config.complement_signature
        if relation != "complement" or share <= 0:
            return None
        sign = torch.ones(self.config.hidden, device=self.pooled.device)
        sign[self.config.hidden - max(1, round(share * self.config.hidden)):] = -1.0
        return sign

    def loss(self, batch: dict) -> Dict[str, torch.Tensor]:
        total = torch.zeros((), device=self.pooled.device)
        parts: Dict[str, torch.Tensor] = {}
        for r in RELATIONS:
            if r not in batch:
                continue
            src, pos, neg = batch[r]
            q = self._rows(r, src)
            candidates = torch.cat([pos, neg.flatten()])
            t = self.targets(r, self._rows(r, candidates))
            logits = q @ t.T  # the batch's other positives are negatives too
            same = src.unsqueeze(1) == candidates.unsqueeze(0)
            other_pos = pos.unsqueeze(1) == candidates.unsqueeze(0)
            other_pos[torch.arange(len(src)), torch.arange(len(src))] = False
            logits = logits.masked_fill(same | other_pos, float("-inf"))  # never itself, nor a duplicate positive
            parts[f"softmax_{r}"] = F.cross_entropy(logits, torch.arange(len(src), device=src.device))
            total = total + parts[f"softmax_{r}"]
        return {**parts, "total": total}

    def score(self, src: torch.Tensor, dst: torch.Tensor, relation: str) -> torch.Tensor:
        return (self._rows(relation, src) * self.targets(relation, self._rows(relation, dst))).sum(-1)

    @torch.no_grad()
    def embed(self, relation: str) -> torch.Tensor:
        return torch.cat([self._rows(relation, nodes) for nodes in
                          torch.arange(self.num_items, device=self.pooled.device).split(65536)])

    def __repr__(self) -> str:
        return (f"ContentTwoTower(items={self.num_items:,}, content={self.pooled.shape[1]}, "
                f"hidden={self.config.hidden}, towers={self.config.tower_hidden})")
