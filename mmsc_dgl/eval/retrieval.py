"""Top-k retrieval for every item: blocked matrix products and a two-stage exact top-k, never
N x N."""
from __future__ import annotations

import time
from typing import Callable, Optional, Tuple

import torch

from mmsc_dgl.ops.neighbours import ivf_index
from mmsc_dgl.progress import duration, eta, report

PROGRESS_EVERY = 10.0
"""Seconds between the progress lines of a long ranking (one line per block at most)."""

Search = Callable[[torch.Tensor, int], torch.Tensor]
"""``f(vectors [B, D], k) -> item ids [B, k]``: the items of highest inner product with each
vector, best first (``-1`` where there are fewer): a nearest-neighbour index over the catalog's
embeddings, exact (:func:`exact_search`) or approximate (:func:`faiss_search`)."""

SparseTerm = Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
"""``f(queries [B]) -> (row [P], col [P], term [P], base [])``: a pairwise score term given
sparsely, for the pairs ``(queries[row], col)``; every other pair's term is ``base`` (MMSC's
path evidence: ``model.pair_term(relation).sparse``)."""


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
             progress: bool = False, pair_term: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
             targets: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
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
        targets: the rows queries are scored against (default ``embedding``; a model with a
            signature: ``model.targets(relation, embedding)``).

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
    against = table if targets is None else (targets.to(dtype) if dtype is not None else targets)
    table_t = against.t().contiguous()
    out_scores = torch.empty(queries.numel(), k, dtype=torch.float32)
    out_index = torch.empty(queries.numel(), k, dtype=torch.long)
    parts = queries.split(block_size)
    if progress:
        from tqdm.auto import tqdm
        parts = tqdm(parts, desc="top-k", unit="block")
    started = last = time.perf_counter()
    start = 0
    for done, part in enumerate(parts, 1):
        scores = table[part] @ table_t  # selection runs in this dtype: no full-width conversion
        if pair_term is not None:
            scores = scores + pair_term(part).to(scores.dtype)
        if exclude_self:
            scores[torch.arange(part.numel(), device=scores.device), part] = float("-inf")
        values, index = grouped_topk(scores, k, group)
        out_scores[start: start + part.numel()] = values.float().cpu()
        out_index[start: start + part.numel()] = index.cpu()
        start += part.numel()
        now = time.perf_counter()
        if now - last >= PROGRESS_EVERY or (done == len(parts) and now - started >= PROGRESS_EVERY):
            last = now
            report("top-k: %s of %s queries | %s | ETA %s", f"{start:,}", f"{queries.numel():,}",
                   duration(now - started), eta(start, queries.numel(), now - started))
    return out_scores, out_index


def exact_search(embedding: torch.Tensor, block_size: int = 2048) -> Search:
    """:data:`Search` by blocked matrix products: the exact answer (what an ANN index approximates)."""
    table_t = embedding.t().contiguous()

    def search(vectors: torch.Tensor, k: int) -> torch.Tensor:
        k = min(k, embedding.shape[0])
        return torch.cat([torch.topk(v @ table_t, k, dim=1).indices for v in vectors.split(block_size)])
    return search


def faiss_search(embedding: torch.Tensor, nlist: Optional[int] = None, nprobe: int = 16,
                 flat_below: int = 50_000) -> Search:
    """:data:`Search` by a FAISS inverted-file index (``IndexIVFFlat``, inner product) over
    ``embedding`` (:func:`~mmsc_dgl.ops.neighbours.ivf_index`: ``nlist`` clusters, default
    ``4 sqrt(N)``), ``nprobe`` of them searched per query.  Below
    ``flat_below`` items the index is a flat (exact) one.  Needs ``faiss-cpu``
    (``pip install mmsc_dgl[faiss]``); raises ``ImportError`` without it."""
    n = embedding.shape[0]
    if n < flat_below:
        import faiss
        index = faiss.IndexFlatIP(embedding.shape[1])
        index.add(embedding.detach().float().cpu().contiguous().numpy())
    else:
        index = ivf_index(embedding, nlist=nlist, nprobe=nprobe)

    def search(vectors: torch.Tensor, k: int) -> torch.Tensor:
        _, found = index.search(vectors.detach().float().cpu().contiguous().numpy(), min(k, n))
        return torch.from_numpy(found).to(vectors.device)
    return search


@torch.no_grad()
def topk_searched(embedding: torch.Tensor, k: int, search: Search, queries: Optional[torch.Tensor] = None,
                  sparse_term: Optional[SparseTerm] = None, exclude_self: bool = True, block_size: int = 1024,
                  slack: int = 32, targets: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`topk_all` with a candidate stage: each query's candidates are the hits of
    ``search`` plus every item ``sparse_term`` lists for it, re-ranked by the exact score (dot
    product plus the term).  No ``B x N`` product: the cost is the index search and the listed
    pairs.

    Every item ``sparse_term`` does not list scores ``dot + base``, so the best of them are the
    best by dot product alone: ``search`` is asked for ``k + slack`` hits, and again with twice
    as many for a query whose hits hold fewer than ``k`` unlisted items (until the index has no
    more to give: an IVF index returns only what its probed clusters hold).  With an exact
    ``search`` the result is :func:`topk_all`'s with the dense term; with an ANN index, only the
    unlisted items can be missed, as the index misses them.

    ``targets``: the rows queries are scored against (default ``embedding``); ``search``
    must index them (``faiss_search(targets)``).

    Returns:
        ``(scores [Q, k], indices [Q, k])``, best first.
    """
    n = embedding.shape[0]
    targets = embedding if targets is None else targets
    queries = torch.arange(n, device=embedding.device) if queries is None else queries.to(embedding.device)
    k = min(k, n - 1 if exclude_self else n)
    out_scores = torch.full((queries.numel(), max(k, 0)), float("-inf"))
    out_index = torch.full((queries.numel(), max(k, 0)), -1, dtype=torch.long)
    if k <= 0:
        return out_scores, out_index
    start = 0
    for part in queries.split(block_size):
        b = part.numel()
        if sparse_term is not None:
            row, col, term, base = sparse_term(part)
        else:
            row, col = part.new_zeros(0), part.new_zeros(0)
            term, base = embedding.new_zeros(0), embedding.new_zeros(())
        listed, order = torch.sort(row * n + col)  # `order` puts `term` in the order of `listed`
        hits_row, hits_col = [], []
        pending, width = torch.arange(b, device=part.device), k + int(exclude_self) + slack
        while pending.numel():
            found = search(embedding[part[pending]], min(width, n))
            r = pending.unsqueeze(1).expand_as(found)
            key = r * n + found
            valid = found >= 0
            free = valid & ~_contains(listed, key)[0] & ~(exclude_self & (found == part[pending].unsqueeze(1)))
            # enough unlisted hits, or nothing more to ask for: every item, or all the index holds
            done = (free.sum(1) >= k) | (width >= n) | ~valid.all(1)
            hits_row.append(r[done][valid[done]])
            hits_col.append(found[done][valid[done]])
            pending, width = pending[~done], width * 2
        keys = torch.unique(torch.cat([row * n + col] + [r * n + c for r, c in zip(hits_row, hits_col)]))
        r, c = keys // n, keys % n
        is_listed, at = _contains(listed, keys)
        extra = torch.full(keys.shape, float(base), dtype=embedding.dtype, device=keys.device)
        extra[is_listed] = term[order][at[is_listed]].to(embedding.dtype)
        score = _pair_dots(embedding, part, r, c, targets) + extra
        if exclude_self:
            score = score.masked_fill(part[r] == c, float("-inf"))
        # best first within each query: by score, then (stably) by query
        by_score = torch.argsort(score, descending=True, stable=True)
        by_row = by_score[torch.argsort(r[by_score], stable=True)]
        counts = torch.bincount(r, minlength=b)
        rank = torch.arange(keys.numel(), device=keys.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts,
                                                                                      counts)
        keep = rank < k
        out_scores[start + r[by_row][keep].cpu(), rank[keep].cpu()] = score[by_row][keep].float().cpu()
        out_index[start + r[by_row][keep].cpu(), rank[keep].cpu()] = c[by_row][keep].cpu()
        start += b
    return out_scores, out_index


def _contains(sorted_keys: torch.Tensor, keys: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Whether each of ``keys`` is in ``sorted_keys``, and where (valid where it is)."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool), torch.zeros_like(keys)
    at = torch.searchsorted(sorted_keys, keys).clamp(max=sorted_keys.numel() - 1)
    return sorted_keys[at] == keys, at


def _pair_dots(embedding: torch.Tensor, part: torch.Tensor, r: torch.Tensor, c: torch.Tensor,
               targets: torch.Tensor, cells: int = 1 << 24) -> torch.Tensor:
    """``embedding[part[r]] . targets[c]`` for every pair: one matrix product against the
    columns the pairs use where that is at most ``cells`` scores (a product beats gathering two
    rows per pair), else in chunks of pairs."""
    columns, local = torch.unique(c, return_inverse=True)
    if part.numel() * columns.numel() <= cells:
        return (embedding[part] @ targets[columns].t())[r, local]
    chunk = max(1, cells // embedding.shape[1])
    return torch.cat([(embedding[part[a]] * targets[b]).sum(-1) for a, b in zip(r.split(chunk), c.split(chunk))])


def recall_at_k(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean share of each row of ``exact`` [Q, k] that ``found`` [Q, k'] also holds."""
    if exact.numel() == 0:
        return float("nan")
    hits = (found.unsqueeze(2) == exact.unsqueeze(1)).any(1).float()
    return float(hits.mean())
