"""Nearest items in content space, as an edge list: the graph through which an item without
edges reaches the behaviour graphs (MMSC's ``content_paths``, :class:`~mmsc_dgl.nn.PathEvidence`).
Exact in plain torch, blocked so that memory stays bounded whatever the catalog size; above
:data:`EXACT_SEARCH_UP_TO` similarities an inverted-file index (FAISS ``IndexIVFFlat``) where
``faiss-cpu`` is installed."""
from __future__ import annotations

import importlib.util
import logging
import math
import time
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

SIMILARITIES_PER_BLOCK = 1 << 26
"""Most similarities (sources x candidates, float32: 256 MiB) held at once."""

EXACT_SEARCH_UP_TO = 10**10
"""Most similarities (queries x candidates) searched exactly: 100,000 items with every item a
query and a candidate, or 10,000 queries against a million candidates.  Above it the search is
approximate (an IVF index, :data:`IVF_NPROBE` lists probed) where ``faiss`` imports, and exact
with a warning where it does not (a million items: hours).  Where it lies: against a million
candidates of 256 dimensions on 2 cores, the exact search answers about 160 queries a second,
while the index takes about 65 s to build and then answers about 3,300 a second
(docs/benchmarks.md).  The real datasets (at most 12,101 items) are searched exactly, far
below it."""


def approximate(queries: int, candidates: int, what: str) -> bool:
    """Whether a search of ``queries`` x ``candidates`` similarities goes through an IVF index:
    above :data:`EXACT_SEARCH_UP_TO`, where ``faiss`` imports (a warning naming ``what`` where it
    does not)."""
    if queries * candidates <= EXACT_SEARCH_UP_TO:
        return False
    if importlib.util.find_spec("faiss") is None:  # optional: mmsc_dgl[faiss]
        logger.warning("%s: exact search over %s x %s items (hours at a million); "
                       "pip install mmsc_dgl[faiss] for the approximate one", what, f"{queries:,}",
                       f"{candidates:,}")
        return False
    return True

IVF_NPROBE = 16
"""Inverted lists an approximate search visits per source (of about ``4 sqrt(C)``)."""


@torch.no_grad()
def content_neighbours(content: torch.Tensor, k: int, candidates: Optional[torch.Tensor] = None,
                       sources: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """For every source item, its ``k`` nearest ``candidates`` by cosine similarity of
    ``content`` [N, D] (never itself), as edges ``(src [E], dst [E])``.

    Args:
        content: one row per item; an all-zero row is an item without content (never a source,
            never a candidate).
        k: neighbours per source (fewer where there are fewer candidates).
        candidates: bool mask [N] of the items that may be a neighbour (default: all with content).
        sources: bool mask [N] of the items that get neighbours (default: all with content).

    Cost: ``N x C x D`` multiply-adds for ``C`` candidates (exact search), in blocks of
    :data:`SIMILARITIES_PER_BLOCK` similarities.  Above :data:`EXACT_SEARCH_UP_TO` similarities
    the neighbours come from a FAISS IVF index (``pip install mmsc_dgl[faiss]``): about
    ``N x (4 sqrt(C) + 16 x C / (4 sqrt(C))) x D`` multiply-adds (5.1e11 instead of 6.4e13 at a
    million items and 64 dimensions), and most but not all of each source's ``k`` nearest
    (tests/test_content_paths.py: over 80% with 4 lists probed, on clustered content).

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> src, dst = content_neighbours(x, 1)
        >>> list(zip(src.tolist(), dst.tolist()))
        [(0, 1), (1, 0), (2, 1)]
    """
    has = content.abs().sum(1) > 0
    cand = has if candidates is None else (candidates.to(has.device) & has)
    src_mask = has if sources is None else (sources.to(has.device) & has)
    pool = torch.nonzero(cand).flatten()
    starts = torch.nonzero(src_mask).flatten()
    take = min(int(k), int(pool.numel()) - 1 if pool.numel() else 0)
    empty = torch.zeros(0, dtype=torch.int64, device=content.device)
    if take <= 0 or starts.numel() == 0:
        return empty, empty.clone()
    unit = F.normalize(content.float(), dim=1)
    if approximate(int(starts.numel()), int(pool.numel()), "content neighbours"):
        return _ivf_neighbours(unit.cpu(), pool.cpu(), starts.cpu(), take)
    pool_t = unit[pool].t().contiguous()
    rows = max(1, SIMILARITIES_PER_BLOCK // max(int(pool.numel()), 1))
    out_src, out_dst = [], []
    began = last = time.monotonic()
    for done, block in enumerate(starts.split(rows)):
        if time.monotonic() - last > 10:  # long work shows progress: a line every 10 s
            last = time.monotonic()
            logger.info("content neighbours: %s of %s items | %.0f s", f"{done * rows:,}", f"{starts.numel():,}",
                        last - began)
        sim = unit[block] @ pool_t
        sim[pool.unsqueeze(0) == block.unsqueeze(1)] = float("-inf")  # never itself
        top = sim.topk(take, dim=1).indices
        out_src.append(block.repeat_interleave(take))
        out_dst.append(pool[top].flatten())
    return torch.cat(out_src), torch.cat(out_dst)


def ivf_index(rows: torch.Tensor, nlist: Optional[int] = None, nprobe: int = IVF_NPROBE):
    """A FAISS ``IndexIVFFlat`` (inner product) holding ``rows`` [N, D]: ``nlist`` lists (default
    ``4 sqrt(N)``, at most ``N / 39``, FAISS's least training points per list) trained on about
    50 rows each (FAISS's k-means, its fixed seed), ``nprobe`` searched per query.  Needs
    ``faiss-cpu`` (``pip install mmsc_dgl[faiss]``); raises ``ImportError`` without it."""
    import faiss
    x = rows.detach().float().cpu().contiguous().numpy()
    n, dim = x.shape
    nlist = nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(x[:: max(1, n // (50 * nlist))])
    index.add(x)
    index.nprobe = min(nprobe, nlist)
    return index


def ivf_nearest(rows: torch.Tensor, queries: torch.Tensor, k: int, what: str = "nearest rows",
                query_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The positions in ``rows`` [C, D] of each query's [Q, D] ``k`` largest inner products,
    through an :func:`ivf_index` (:data:`IVF_NPROBE` lists probed): [Q, k], best first, ``-1``
    in a slot that the probed lists could not fill.  ``query_ids``: search the rows
    ``queries[query_ids]`` instead, gathered a block at a time.  Queries go in blocks, with a
    progress line every 10 s naming ``what``."""
    began = last = time.monotonic()
    index = ivf_index(rows, nprobe=IVF_NPROBE)
    queries = queries.detach().float().cpu()
    count = queries.shape[0] if query_ids is None else int(query_ids.numel())
    out = []
    block = 1 << 16
    for start in range(0, count, block):
        if time.monotonic() - last > 10:
            last = time.monotonic()
            logger.info("%s (IVF, %d lists): %s of %s queries | %.0f s", what, index.nlist, f"{start:,}",
                        f"{count:,}", last - began)
        part = (queries[start: start + block] if query_ids is None
                else queries[query_ids[start: start + block].cpu()])
        _, found = index.search(part.contiguous().numpy(), k)
        out.append(torch.from_numpy(found).to(torch.int64))
    logger.info("%s (IVF, %d lists, %d probed): %s queries in %.0f s", what, index.nlist, index.nprobe,
                f"{count:,}", time.monotonic() - began)
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.int64)


def _ivf_neighbours(unit: torch.Tensor, pool: torch.Tensor, starts: torch.Tensor,
                    take: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`content_neighbours` through :func:`ivf_nearest` over the candidates' unit rows
    (inner product = cosine).  A source's own row and unfilled slots are dropped, so a source
    may get fewer than ``take`` neighbours where its lists hold fewer."""
    pos = ivf_nearest(unit[pool], unit, take + 1, "content neighbours", query_ids=starts)
    ids = torch.where(pos >= 0, pool[pos.clamp(min=0)], torch.full_like(pos, -1))
    ok = (pos >= 0) & (ids != starts.unsqueeze(1))
    order = torch.argsort((~ok).to(torch.int8), dim=1, stable=True)[:, :take]
    ids, ok = ids.gather(1, order), ok.gather(1, order)
    return starts.unsqueeze(1).expand_as(ids)[ok], ids[ok]
