"""Ranking metrics against sampled negatives: HR@K, MRR@K, NDCG@K."""
from __future__ import annotations

from typing import Dict, Iterable

import torch


def ranks(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """1-based rank of each positive among itself and its negatives ([Q] and [Q, M]).

    Ties count against the positive (a negative with an equal score ranks above it), so a model
    that scores everything the same gets the worst rank, not a lucky one; so does NaN (a NaN
    positive ranks last, a NaN negative above the positive: every comparison with NaN is False,
    which would otherwise rank a diverged model first).

    Example:
        >>> ranks(torch.tensor([0.5, float("nan")]), torch.tensor([[0.1, float("nan")], [0.1, 0.2]])).tolist()
        [2, 3]
    """
    if neg_scores.dim() != 2 or pos_scores.shape[0] != neg_scores.shape[0]:
        raise ValueError(f"pos_scores [Q] and neg_scores [Q, M] expected, got {tuple(pos_scores.shape)} "
                         f"and {tuple(neg_scores.shape)}")
    return 1 + (worst_if_nan(neg_scores, against=True) >= worst_if_nan(pos_scores, against=False).unsqueeze(1)).sum(1)


def worst_if_nan(scores: torch.Tensor, against: bool) -> torch.Tensor:
    """``scores`` with NaN replaced by what ranks a target worst: ``+inf`` for competitors
    (``against``), ``-inf`` for the target itself."""
    return torch.nan_to_num(scores, nan=float("inf") if against else float("-inf"), posinf=float("inf"),
                            neginf=float("-inf"))


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
