"""The warm-up curve: how well a model ranks for a new item once its first few edges are known.

A day after launch a product has a title, an image and a handful of co-views or co-purchases.
For the held-out cold items of a split, this reveals ``k`` of each item's held-out edges (both
relations, in a seeded order; the reveals are nested, the first ``k`` of the same order) and
ranks the item's *other* held-out edges against their sampled negatives, as the cold-start
evaluation does.  Every ``k`` is asked about the same items and the same targets: the items
with more than ``max(ks)`` held-out edges, and their edges after the first ``max(ks)``.  ``k = 0``
is the cold-start placement on that subset.

What a model does with the revealed edges is the same as :meth:`ItemModel.add_items
<mmsc_dgl.runs.item_model.ItemModel.add_items>` does with a new item's edges: its rows move to
its partners' (:meth:`ColdStart.with_edges <mmsc_dgl.eval.cold_start.ColdStart.with_edges>`), and
a model with a pair term (MMSC's path evidence) counts paths and links through them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.eval.cold_start import ColdStart
from mmsc_dgl.eval.evaluate import QueryShare, rank_queries
from mmsc_dgl.eval.ranking import ranking_metrics

WARM_UP_KS = (1, 2, 5)
"""Edges revealed per cold item (``k = 0``, none, is always reported as well)."""


@dataclass
class WarmUpPlan:
    """Which held-out edges of the cold items are revealed at each ``k``, and which are ranked.

    Attributes:
        ks: the reveal counts, ascending (``0`` first).
        items: the cold items asked about (more than ``max(ks)`` held-out edges).
        order: per held-out edge of those items, ``(relation, row in splits.cold[relation],
            position in its item's seeded order)``.
        targets: per relation, the rows of ``splits.cold[relation]`` that are ranked (position
            ``>= max(ks)``: never revealed).
    """

    ks: Tuple[int, ...]
    items: np.ndarray
    relation: np.ndarray
    row: np.ndarray
    position: np.ndarray
    targets: Dict[str, np.ndarray]

    def revealed(self, splits, k: int) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
        """Per relation, the revealed edges ``(cold item, partner)`` at ``k``."""
        out = {}
        for code, r in enumerate(RELATIONS):
            pick = self.row[(self.relation == code) & (self.position < k)]
            edges = splits.cold[r]
            out[r] = (torch.from_numpy(edges.src[pick].astype(np.int64)),
                      torch.from_numpy(edges.dst[pick].astype(np.int64)))
        return out


def warm_up_plan(splits, seed: int, ks: Sequence[int] = WARM_UP_KS, max_items: Optional[int] = None) -> WarmUpPlan:
    """The reveals and targets of :mod:`this module <mmsc_dgl.eval.warm_up>` for ``splits``
    (seeded: the same seed gives the same plan); with ``max_items``, a seeded subset of that many
    items (the run's ``test_queries``: the curve ranks every plan item's targets at every ``k``).

    Example:
        >>> from types import SimpleNamespace as S
        >>> cold = {"substitute": S(src=np.array([5, 5, 5]), dst=np.array([1, 2, 3])),
        ...         "complement": S(src=np.array([5]), dst=np.array([4]))}
        >>> plan = warm_up_plan(S(cold=cold, cold_items=np.array([5])), seed=0, ks=(1, 2))
        >>> plan.items.tolist(), sum(len(t) for t in plan.targets.values())
        ([5], 2)
    """
    ks = tuple(sorted({0, *(int(k) for k in ks)}))
    top = ks[-1]
    cold = np.asarray(splits.cold_items, dtype=np.int64)
    src = np.concatenate([np.asarray(splits.cold[r].src, dtype=np.int64) for r in RELATIONS])
    relation = np.concatenate([np.full(len(splits.cold[r].src), c, dtype=np.int64) for c, r in enumerate(RELATIONS)])
    row = np.concatenate([np.arange(len(splits.cold[r].src), dtype=np.int64) for r in RELATIONS])
    keep = np.isin(src, cold)
    src, relation, row = src[keep], relation[keep], row[keep]
    shuffle = np.random.default_rng([seed, 23]).permutation(len(src))
    src, relation, row = src[shuffle], relation[shuffle], row[shuffle]
    by_item = np.argsort(src, kind="stable")
    src, relation, row = src[by_item], relation[by_item], row[by_item]
    starts = np.searchsorted(src, src, side="left")
    position = np.arange(len(src)) - starts
    count = np.bincount(src, minlength=int(src.max()) + 1 if len(src) else 0)
    asked = count[src] > top
    src, relation, row, position = src[asked], relation[asked], row[asked], position[asked]
    items = np.unique(src)
    if max_items is not None and len(items) > max_items:
        items = np.sort(np.random.default_rng([seed, 29]).choice(items, size=max_items, replace=False))
        chosen = np.isin(src, items)
        src, relation, row, position = src[chosen], relation[chosen], row[chosen], position[chosen]
    targets = {r: np.sort(row[(relation == c) & (position >= top)]) for c, r in enumerate(RELATIONS)}
    return WarmUpPlan(ks, items, relation, row, position, targets)


@torch.no_grad()
def warm_up_curve(model, plan: WarmUpPlan, splits, sampler, queries: Mapping[str, torch.Tensor],
                  candidates: Optional[Mapping[str, torch.Tensor]] = None,
                  relation_states: Optional[Mapping[str, dict]] = None, metric_ks: Sequence[int] = (10,),
                  device: Optional[torch.device] = None, share: Optional[QueryShare] = None) -> dict:
    """Ranking metrics of the plan's targets per relation and ``k`` (``{r: {str(k): metrics}}``)
    for an embedding model whose cold items are placed by ``queries`` (query rows) and
    ``candidates`` (candidate rows; default: the same), each ``k``'s revealed edges moving the
    rows (:meth:`ColdStart.with_edges`) and joining the training graphs of the pair term.
    ``share``: this process ranks its part of the targets, and the metrics are those of every
    target (:class:`~mmsc_dgl.eval.evaluate.QueryShare`)."""
    out: Dict[str, Any] = {"ks": list(plan.ks), "items": int(len(plan.items))}
    for r in RELATIONS:
        out[r] = {}
        if relation_states:
            model.load_state_dict(relation_states[r])
        rows = queries[r]
        cand = rows if candidates is None else candidates[r]
        for k in plan.ks:
            revealed = plan.revealed(splits, k)
            items, partners = revealed[r]
            if k:
                q = ColdStart.with_edges(rows, model.targets(r, cand), items, partners)
                c = ColdStart.with_edges(cand, model.targets(r, cand), items, partners)
                extra = {x: (a.to(rows.device), b.to(rows.device)) for x, (a, b) in revealed.items()}
            else:
                q, c, extra = rows, cand, None
            scorer = model.ranking_scorer(r, q, None if c is q else c, extra_edges=extra)
            targets = plan.targets[r]
            mine = targets if share is None else share.part(targets)
            ranked = rank_queries(scorer, splits.cold[r], mine, sampler, r, "cold", device=device)
            if share is not None:
                ranked = share.whole(ranked, len(targets))
            out[r][str(k)] = {**ranking_metrics(ranked, metric_ks), "queries": int(len(targets))}
    return out
