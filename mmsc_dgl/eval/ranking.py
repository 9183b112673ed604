"""Ranking metrics against sampled negatives: HR@K, MRR@K, NDCG@K."""
from __future__ import annotations

from typing import Dict, Iterable

import torch


def ranks(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """1-based rank of each positive among itself and its negatives ([Q] and [Q, M]).

    Ties count against the positive (a negative with an equal score ranks above it), so a model
    that scores everything the same gets the worst rank, not a lucky one.
    """
    if neg_scores.dim() != 2 or pos_scores.shape[0] != neg_scores.shape[0]:
        raise ValueError(f"pos_scores [Q] and neg_scores [Q, M] expected, got {tuple(pos_scores.shape)} "
                         f"and {tuple(neg_scores.shape)}")
    return 1 + (neg_scores >= pos_scores.unsqueeze(1)).sum(1)


def ranking_metrics(rank: torch.Tensor, ks: Iterable[int] = (10,)) -> Dict[str, float]:
    """``HR@K`` (rank <= K), ``MRR@K`` (1/rank within K, else 0), ``NDCG@K`` (1/log2(rank + 1)
    within K, else 0; one relevant item per query), averaged over queries."""
    rank = rank.double()
    out: Dict[str, float] = {}
    for k in ks:
        hit = rank <= k
        out[f"HR@{k}"] = float(hit.double().mean()) if rank.numel() else float("nan")
        out[f"MRR@{k}"] = float(torch.where(hit, 1.0 / rank, torch.zeros_like(rank)).mean()) if rank.numel() else float("nan")
        out[f"NDCG@{k}"] = float(torch.where(hit, 1.0 / torch.log2(rank + 1), torch.zeros_like(rank)).mean()) \
            if rank.numel() else float("nan")
    return out
