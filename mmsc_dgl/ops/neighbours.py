"""Nearest items in content space, as an edge list: the graph through which an item without
edges reaches the behaviour graphs (MMSC's ``content_paths``, :class:`~mmsc_dgl.nn.PathEvidence`).
Plain torch, blocked so that memory stays bounded whatever the catalog size."""
from __future__ import annotations

import logging
import time
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

SIMILARITIES_PER_BLOCK = 1 << 26
"""Most similarities (sources x candidates, float32: 256 MiB) held at once."""


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
    :data:`SIMILARITIES_PER_BLOCK` similarities.

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
