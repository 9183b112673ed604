"""Why an item was recommended: the meta-paths that join the pair, and each part's share of the
score.

For a model with path evidence (MMSC's default) the score of a pair is

.. math::
    s(i, j) = \\underbrace{\\langle z_i, z_j \\rangle}_{\\text{embedding}}
            + \\underbrace{g(c_{ss}, c_{sc}, c_{cs}, c_{cc}, a_s, a_c)}_{\\text{structure}}

The structural term is split over its features (the four meta-paths' counts and, by default,
whether the pair is a training edge of the other relation: ``linked[...]``) by exact Shapley
values against "no path and no edge at all" (:math:`g(0)`, the same for every pair, reported as
``structure_base``): with six features that is 64 evaluations of a small MLP per pair, and the
shares add up to :math:`g(c) - g(0)` exactly.  Each meta-path also gets its raw path count and
one concrete intermediate item (the most specific one: the middle item of lowest degree).
"""
from __future__ import annotations

from itertools import combinations
from math import factorial
from typing import Dict, List, Optional, Sequence

import torch


def shapley_shares(g, counts: torch.Tensor) -> torch.Tensor:
    """Exact Shapley values [P, M] of ``g`` (a function of counts [..., M]) at ``counts`` [P, M]
    against the all-zero baseline."""
    m = counts.shape[-1]
    out = torch.zeros_like(counts)
    players = range(m)
    for i in players:
        others = [p for p in players if p != i]
        for size in range(m):
            weight = factorial(size) * factorial(m - size - 1) / factorial(m)
            for subset in combinations(others, size):
                mask = torch.zeros(m, dtype=counts.dtype, device=counts.device)
                mask[list(subset)] = 1
                without = g(counts * mask)
                mask[i] = 1
                out[:, i] += weight * (g(counts * mask) - without)
    return out


def middle_item(counter, first: str, second: str, src: int, dst: int) -> Optional[int]:
    """One item ``k`` with ``src -first- k -second- dst``: the one of lowest degree, or None."""
    a = counter.graphs[first]
    b = counter.graphs[second]
    left = a.indices[a.indptr[src]: a.indptr[src + 1]]
    right = b.indices[b.indptr[dst]: b.indptr[dst + 1]]
    common = left[torch.isin(left, right)]
    common = common[(common != src) & (common != dst)]
    if common.numel() == 0:
        return None
    return int(common[torch.argmax(counter.weight[common])])


@torch.no_grad()
def explain_pairs(model, embedding: torch.Tensor, relation: str, src: int, dst: Sequence[int],
                  ids: Sequence[str], titles: Sequence[Optional[str]]) -> List[Dict]:
    """For the picks ``dst`` of item ``src``: the embedding term, the structural term split per
    meta-path, and per meta-path the number of paths and one intermediate item (id and title).
    A model without path evidence gets its embedding term only (its whole score)."""
    dst_t = torch.as_tensor(list(dst), dtype=torch.long, device=embedding.device)
    src_t = torch.full_like(dst_t, int(src))
    dot = (embedding[src_t] * embedding[dst_t]).sum(-1)
    rows = [{"embedding": float(d)} for d in dot.tolist()]
    evidence = getattr(model, "evidence", None)
    if evidence is None:
        return rows
    counts = evidence.counts(src_t, dst_t)
    g = lambda c: evidence(c, relation)  # noqa: E731
    shares = shapley_shares(g, counts)
    base = float(g(torch.zeros(1, counts.shape[-1], device=counts.device))[0])
    weighted = evidence.counter
    plain = weighted.unweighted()
    paths = len(evidence.metapaths)
    for n, row in enumerate(rows):
        row["structure_base"] = base
        for m, (x, y) in enumerate(evidence.metapaths):
            name = f"{x}-{y}"
            row[f"structure[{name}]"] = float(shares[n, m])
            row[f"paths[{name}]"] = int(plain.pairs(x, y, src_t[n: n + 1], dst_t[n: n + 1])[0])
            k = middle_item(weighted, x, y, int(src), int(dst_t[n]))
            row[f"via[{name}]"] = ids[k] if k is not None else None
            row[f"via_title[{name}]"] = titles[k] if k is not None else None
        for m, x in enumerate(evidence.links):
            if x == relation:  # never a feature of its own relation (its share is always 0)
                continue
            row[f"structure[{x}]"] = float(shares[n, paths + m])
            row[f"linked[{x}]"] = bool(counts[n, paths + m] > 0)
    return rows
