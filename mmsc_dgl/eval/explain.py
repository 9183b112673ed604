"""Why an item was recommended: the meta-paths that join the pair, and each part's share of the
score.

For a model with path evidence (MMSC's default) the score of a pair is

.. math::
    s(i, j) = \\underbrace{\\langle z_i, z_j \\rangle}_{\\text{embedding}}
            + \\underbrace{g(c_{ss}, c_{sc}, c_{cs}, c_{cc}, a_s, a_c)}_{\\text{structure}}

The structural term is split over its features (the meta-paths' counts and, by default,
whether the pair is a training edge of another graph: ``linked[...]``) by exact Shapley
values against "no path and no edge at all" (:math:`g(0)`, the same for every pair, reported as
``structure_base``): :math:`2^L` evaluations of a small MLP per pair for the :math:`L` features
that are non-zero in some pair of the batch (with MMSC's content paths there are twelve
features: nine meta-paths over the substitute, complement and ``similar`` graphs, and three
links), and the shares add up to :math:`g(c) - g(0)` exactly.  :math:`g` is the whole term, the calibration's
link bonus and path weight included (:mod:`mmsc_dgl.models.calibration`).  Each meta-path also gets its raw path count and
one concrete intermediate item (the most specific one: the middle item of lowest degree).
"""
from __future__ import annotations

from math import factorial
from typing import Any, Dict, List, Optional, Sequence, Union

import torch


def shapley_shares(g, counts: torch.Tensor, block: int = 1 << 22) -> torch.Tensor:
    """Exact Shapley values [P, M] of ``g`` (a function of counts [..., M]) at ``counts`` [P, M]
    against the all-zero baseline.

    A feature that is zero in every pair is a null player (adding it to a coalition changes no
    input), so it gets 0 and the others are the Shapley values of the game without it: with
    ``L`` live features ``g`` is evaluated once on each of the ``2^L`` coalitions of each pair,
    in blocks of at most ``block`` numbers."""
    p, m = counts.shape
    out = torch.zeros_like(counts)
    live = torch.nonzero((counts != 0).any(0)).flatten().tolist()
    k = len(live)
    if k == 0 or p == 0:
        return out
    codes = torch.arange(1 << k, device=counts.device)
    bits = ((codes.unsqueeze(1) >> torch.arange(k, device=counts.device)) & 1).to(counts.dtype)
    masks = torch.zeros(1 << k, m, dtype=counts.dtype, device=counts.device)
    masks[:, live] = bits
    rows = max(1, block // ((1 << k) * m))
    size = bits.sum(1).long()
    weight = torch.tensor([factorial(s) * factorial(k - s - 1) / factorial(k) if s < k else 0.0
                           for s in range(k + 1)], device=counts.device)
    halves = [(codes[((codes >> j) & 1) == 0], j) for j in range(k)]
    for start in range(0, p, rows):  # pairs in blocks: [rows, 2^k] values at a time
        values = g(counts[start: start + rows].unsqueeze(1) * masks)
        for (without, j), i in zip(halves, live):
            out[start: start + rows, i] = ((values[:, without | (1 << j)] - values[:, without])
                                           * weight[size[without]].to(values.dtype)).sum(1).to(out.dtype)
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


def middle_items(counter, first: str, second: str, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """:func:`middle_item` for many pairs at once: ``[P]`` node ids, ``-1`` where no path
    ``src -first- k -second- dst`` exists.  Among equally specific middles, the first in ``src``'s
    adjacency order (as :func:`middle_item`)."""
    src, dst = src.reshape(-1).to(torch.int64), dst.reshape(-1).to(torch.int64)
    out = torch.full(src.shape, -1, dtype=torch.int64, device=src.device)
    row, k = counter.neighbours(first, src)          # k: a neighbour of src[row], in adjacency order
    ok = counter.linked(second, dst[row], k).bool() & (k != src[row]) & (k != dst[row])
    row, k, at = row[ok], k[ok], torch.arange(int(ok.sum()), device=src.device)
    if row.numel() == 0:
        return out
    weight = counter.weight[k].to(torch.float64)
    best = torch.full(src.shape, float("-inf"), dtype=torch.float64, device=src.device)
    best = best.scatter_reduce(0, row, weight, reduce="amax")
    top = weight == best[row]
    first_at = torch.full(src.shape, at.numel(), dtype=torch.int64, device=src.device)
    first_at = first_at.scatter_reduce(0, row[top], at[top], reduce="amin")
    has = first_at < at.numel()
    out[has] = k[first_at[has]]
    return out


@torch.no_grad()
def explain_columns(model, embedding: torch.Tensor, relation: str, src: Union[int, Sequence[int], torch.Tensor],
                    dst: Union[Sequence[int], torch.Tensor], ids: Sequence[str], titles: Sequence[Optional[str]],
                    evidence: Any = "model", targets: Optional[torch.Tensor] = None) -> Dict[str, list]:
    """:func:`explain_pairs` as columns (one list per key, a value per pair), for many pairs at
    once: ``src`` is one item for every ``dst``, or one item per ``dst``.  The work is done on
    whole tensors (the Shapley shares, path counts and intermediate items of every pair
    together), so ``recommend --all --explain`` costs about what the ranking does.  ``evidence``
    and ``targets`` (every item's candidate rows) replace the model's own where the catalog grew
    after training (:meth:`ItemModel.evidence <mmsc_dgl.runs.item_model.ItemModel.evidence>`)."""
    dst_t = torch.as_tensor(list(dst) if not torch.is_tensor(dst) else dst, dtype=torch.long,
                            device=embedding.device).reshape(-1)
    if isinstance(src, int):
        src_t = torch.full_like(dst_t, src)
    else:
        src_t = torch.as_tensor(list(src) if not torch.is_tensor(src) else src, dtype=torch.long,
                                device=embedding.device).reshape(-1)
    if src_t.shape != dst_t.shape:
        raise ValueError(f"{src_t.numel()} query items for {dst_t.numel()} picks")
    # the picks' target rows only (the signature is per dimension): not the whole catalog per block
    picked = model.targets(relation, embedding[dst_t]) if targets is None else targets[dst_t]
    columns: Dict[str, list] = {"embedding": (embedding[src_t] * picked).sum(-1).tolist()}
    if isinstance(evidence, str):
        evidence = getattr(model, "evidence", None)
    if evidence is None:
        return columns
    counts = evidence.counts(src_t, dst_t)
    g = lambda c: evidence(c, relation)  # noqa: E731
    shares = shapley_shares(g, counts)
    base = float(g(torch.zeros(1, counts.shape[-1], device=counts.device))[0])
    weighted = evidence.counter
    plain = weighted.unweighted()
    paths = len(evidence.metapaths)
    columns["structure_base"] = [base] * dst_t.numel()
    for m, (x, y) in enumerate(evidence.metapaths):
        name = f"{x}-{y}"
        columns[f"structure[{name}]"] = shares[:, m].tolist()
        columns[f"paths[{name}]"] = plain.pairs(x, y, src_t, dst_t).round().to(torch.int64).tolist()
        via = middle_items(weighted, x, y, src_t, dst_t).tolist()
        columns[f"via[{name}]"] = [ids[k] if k >= 0 else None for k in via]
        columns[f"via_title[{name}]"] = [titles[k] if k >= 0 else None for k in via]
    for m, x in enumerate(evidence.links):
        if x == relation:  # never a feature of its own relation (its share is always 0)
            continue
        columns[f"structure[{x}]"] = shares[:, paths + m].tolist()
        columns[f"linked[{x}]"] = (counts[:, paths + m] > 0).tolist()
    return columns


def explain_pairs(model, embedding: torch.Tensor, relation: str, src: Union[int, Sequence[int], torch.Tensor],
                  dst: Sequence[int], ids: Sequence[str], titles: Sequence[Optional[str]],
                  evidence: Any = "model", targets: Optional[torch.Tensor] = None) -> List[Dict]:
    """For the picks ``dst`` of item ``src`` (one item, or one per pick): the embedding term, the
    structural term split per meta-path, and per meta-path the number of paths and one
    intermediate item (id and title).  A model without path evidence gets its embedding term only
    (its whole score).  A dict per pick; :func:`explain_columns` gives the same as columns."""
    columns = explain_columns(model, embedding, relation, src, dst, ids, titles, evidence, targets)
    keys = list(columns)
    return [dict(zip(keys, values)) for values in zip(*(columns[k] for k in keys))]
