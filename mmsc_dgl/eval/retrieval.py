"""Top-k retrieval for every item: blocked matrix products and ``torch.topk``, never N x N."""
from __future__ import annotations

from typing import Optional, Tuple

import torch


@torch.no_grad()
def topk_all(embedding: torch.Tensor, k: int = 10, block_size: int = 4096, exclude_self: bool = True,
             queries: Optional[torch.Tensor] = None, progress: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest dot-product items for each query item (every item by default).

    Scores ``block_size`` queries against the whole catalog at a time, so memory is
    ``block_size x num_items`` floats whatever the catalog size.

    Args:
        embedding: [N, D] item embeddings.
        k: results per query (at most N - 1 with ``exclude_self``).
        block_size: queries per matrix product.
        exclude_self: an item is never its own result.
        queries: node ids to answer for (default: all N).

    Returns:
        ``(scores [Q, k], indices [Q, k])``, best first.

    Example:
        >>> e = torch.eye(3)
        >>> scores, idx = topk_all(e + 0.1, k=1)
        >>> idx.flatten().tolist()
        [1, 0, 0]
    """
    n = embedding.shape[0]
    queries = torch.arange(n, device=embedding.device) if queries is None else queries.to(embedding.device)
    k = min(k, n - 1 if exclude_self else n)
    if k <= 0:
        empty = torch.zeros(queries.numel(), 0)
        return empty, empty.long()
    out_scores = torch.empty(queries.numel(), k, dtype=embedding.dtype)
    out_index = torch.empty(queries.numel(), k, dtype=torch.long)
    parts = queries.split(block_size)
    if progress:
        from tqdm.auto import tqdm
        parts = tqdm(parts, desc="top-k", unit="block")
    start = 0
    for part in parts:
        scores = embedding[part] @ embedding.t()
        if exclude_self:
            scores[torch.arange(part.numel(), device=scores.device), part] = float("-inf")
        top = torch.topk(scores, k, dim=1)
        out_scores[start: start + part.numel()] = top.values.cpu()
        out_index[start: start + part.numel()] = top.indices.cpu()
        start += part.numel()
    return out_scores, out_index


def recall_at_k(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean share of each row of ``exact`` [Q, k] that ``found`` [Q, k'] also holds."""
    if exact.numel() == 0:
        return float("nan")
    hits = (found.unsqueeze(2) == exact.unsqueeze(1)).any(1).float()
    return float(hits.mean())
