"""The parts of MMSC's objective: a ranking loss (sampled softmax, or the paper's triplet loss)
and InfoNCE between two graph views."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def triplet_loss(pos: torch.Tensor, neg: torch.Tensor, margin: float) -> torch.Tensor:
    """``mean(max(0, margin - s(u, v+) + s(u, v-)))`` over positives [B] and negatives [B, M]."""
    return F.relu(margin - pos.unsqueeze(1) + neg).mean()


def sampled_softmax_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each positive [B] against its sampled negatives [B, M]: the positive
    should win a softmax over ``[pos, neg_1..M]`` (what ranking against many negatives rewards,
    where a triplet margin stops pushing once it is met)."""
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
    return F.cross_entropy(logits, torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device))


def info_nce(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row ``i`` of one view should match row ``i`` of the other and no other
    row.  Inputs [B, D] are L2-normalised here."""
    a = F.normalize(view1, dim=1)
    b = F.normalize(view2, dim=1)
    logits = a @ b.t() / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
