"""Top-k retrieval for every item: blocked matrix products and a two-stage exact top-k, never
N x N."""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch


def grouped_topk(scores: torch.Tensor, k: int, group: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact row-wise top-k of ``scores`` [B, N], faster than ``torch.topk`` over N.

    Rows are cut into groups of ``group`` columns.  Every element of the true top-k lies in a
    group whose maximum is at least the k-th largest value, and at most k groups qualify, so the
    k groups with the largest maxima hold the answer: a cheap max-reduction over N, a top-k over
    N / group maxima, and a top-k over k * group gathered values.  Values equal the exact top-k;
    among exactly tied scores the chosen indices may differ from ``torch.topk``'s.
    """
    b, n = scores.shape
    groups = n // group
    if groups <= k or n <= 4 * group:
        return torch.topk(scores, k, dim=1)
    full = groups * group
    blocks = scores[:, :full].unfold(1, group, group)                                   # [B, G, group], a view
    best_groups = torch.topk(blocks.amax(dim=2), k, dim=1).indices                     # [B, k]
    candidates = torch.gather(blocks, 1, best_groups.unsqueeze(2).expand(b, k, group))  # [B, k, group]
    column = (best_groups.unsqueeze(2) * group + torch.arange(group, device=scores.device)).reshape(b, k * group)
    values = candidates.reshape(b, k * group)
    if full < n:  # the last, partial group joins the candidates as it is
        values = torch.cat([values, scores[:, full:]], dim=1)
        column = torch.cat([column, torch.arange(full, n, device=scores.device).expand(b, n - full)], dim=1)
    top = torch.topk(values, k, dim=1)
    return top.values, column.gather(1, top.indices)


@torch.no_grad()
def topk_all(embedding: torch.Tensor, k: int = 10, block_size: int = 2048, exclude_self: bool = True,
             queries: Optional[torch.Tensor] = None, dtype: Optional[torch.dtype] = None, group: int = 64,
             progress: bool = False, pair_term: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest dot-product items for each query item (every item by default).

    Scores ``block_size`` queries against the whole catalog at a time, so memory is
    ``block_size x num_items`` floats whatever the catalog size; the selection is exact
    (see :func:`grouped_topk`).

    Args:
        embedding: [N, D] item embeddings.
        k: results per query (at most N - 1 with ``exclude_self``).
        block_size: queries per matrix product.
        exclude_self: an item is never its own result.
        queries: node ids to answer for (default: all N).
        dtype: compute the products in this dtype (``torch.bfloat16`` halves the arithmetic on
            CPUs with AVX-512 BF16; scores then carry about 3 significant digits).
        group: columns per group of the two-stage selection.
        pair_term: ``f(queries [B]) -> [B, N]`` added to the dot products before selection (a
            model's pairwise term, such as MMSC's path evidence); exact, at the cost of scoring
            every pair of a block.

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
    table = embedding.to(dtype) if dtype is not None else embedding
    table_t = table.t().contiguous()
    out_scores = torch.empty(queries.numel(), k, dtype=torch.float32)
    out_index = torch.empty(queries.numel(), k, dtype=torch.long)
    parts = queries.split(block_size)
    if progress:
        from tqdm.auto import tqdm
        parts = tqdm(parts, desc="top-k", unit="block")
    start = 0
    for part in parts:
        scores = table[part] @ table_t  # selection runs in this dtype: no full-width conversion
        if pair_term is not None:
            scores = scores + pair_term(part).to(scores.dtype)
        if exclude_self:
            scores[torch.arange(part.numel(), device=scores.device), part] = float("-inf")
        values, index = grouped_topk(scores, k, group)
        out_scores[start: start + part.numel()] = values.float().cpu()
        out_index[start: start + part.numel()] = index.cpu()
        start += part.numel()
    return out_scores, out_index


def recall_at_k(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean share of each row of ``exact`` [Q, k] that ``found`` [Q, k'] also holds."""
    if exact.numel() == 0:
        return float("nan")
    hits = (found.unsqueeze(2) == exact.unsqueeze(1)).any(1).float()
    return float(hits.mean())
