"""Dot-product scores of each query's candidates: ``out[q, m] = <emb[src[q]], emb[cand[q, m]]>``.

The obvious way gathers a ``[B, K, dim]`` block of candidate rows and reduces it; with 1,000
sampled negatives per query that block is hundreds of MB and memory-bound.  When the catalog is
not much larger than the candidate list, multiplying the queries against every item (one BLAS
call, ``[B, num_items]``) and picking the candidates is several times faster: measured on 2 CPU
cores, batch 2048, 1,001 candidates, dim 64: 0.88 s against 0.07 s for 2,000 items, 0.91 s
against 0.20 s for 12,000, and about even at 100,000 (a loaded machine, 2026-12-03).
"""
from __future__ import annotations

from typing import Optional

import torch

FULL_PRODUCT_RATIO = 16
"""The full product is used while ``num_items <= FULL_PRODUCT_RATIO * K``."""

FULL_PRODUCT_CELLS = 1 << 24
"""Most query-by-item scores held at once by the full product (64 MB of float32)."""


def candidate_dot(embedding: torch.Tensor, src: torch.Tensor, cand: torch.Tensor,
                  targets: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``[B, K]`` dot products of ``embedding[src]`` with ``targets[cand]`` (``src [B]``,
    ``cand [B, K]``; ``targets`` defaults to ``embedding``: a model with a signature scores
    ``embedding`` rows against ``embedding * signature``), by the cheaper of the two ways; both
    give the same values up to float rounding (the reduction order differs)."""
    targets = embedding if targets is None else targets
    num_items, k = targets.shape[0], cand.shape[1] if cand.dim() == 2 else 0
    if k == 0 or num_items > FULL_PRODUCT_RATIO * k:
        return torch.einsum("qd,qmd->qm", embedding[src], targets[cand])
    rows = max(1, FULL_PRODUCT_CELLS // num_items)
    out = [(embedding[src[i: i + rows]] @ targets.T).gather(1, cand[i: i + rows])
           for i in range(0, len(src), rows)]
    return torch.cat(out) if out else cand.new_zeros(cand.shape, dtype=embedding.dtype)
