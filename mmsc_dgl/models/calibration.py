"""After training: three settings of MMSC's path-evidence term, chosen on validation.

The evidence MLP learns how much a link to the other relation and a two-hop path are worth from
the triplet loss, which stops pushing once a positive beats its four random negatives by the
margin; evaluation ranks it against a thousand, among which the few items joined to the query
by a path or an edge are the hard ones.  So, once training has ended, each relation's score
gains

.. math::
    \\beta_r \\sum_{x \\ne r} A_x(i, j) \\; + \\; \\alpha_r \\log\\big(1 + \\textstyle\\sum_{xy \\in P_r} C_{xy}(i, j)\\big)

with :math:`(\\beta_r, \\alpha_r)` from :data:`LINK_GRID` x :data:`PATH_GRID` and the set of
two-hop meta-paths :math:`P_r` among :func:`path_subsets`, chosen by validation NDCG@10 on the
weights that relation selected (ties: the smaller weights, then the more meta-paths).  Which
paths count matters: two items that share a substitute are look-alikes, so for complements the
substitute-substitute paths point at the wrong relation (on the synthetic quickstart catalog,
weighing all paths put one planted substitute in ten among the top-10 complements).  But the
best of some ninety settings is an optimistic estimate, and on real data a subset that won
validation by 1% lost test by as much; so a subset other than all paths is kept only where it
beats the best all-paths setting by more than :data:`SUBSET_Z` standard errors of the paired
per-query NDCG difference, and otherwise every path counts.  Both terms
are 0 for a pair with no path and no link, so the whole-catalog and candidate-stage routes stay
exact.  The scores and features of the validation candidates are computed once; each setting
only re-ranks them.
"""
from __future__ import annotations

import logging
from itertools import combinations, product
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.determinism import deterministic_algorithms
from mmsc_dgl.eval.evaluate import query_subset, rank_queries
from mmsc_dgl.eval.ranking import ranks
from mmsc_dgl.ops.candidates import candidate_dot

logger = logging.getLogger(__name__)

LINK_GRID: Tuple[float, ...] = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0)
"""Bonuses tried for a pair that is a training edge of the other relation (scores are of order 1)."""
PATH_GRID: Tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.8, 1.6)
"""Weights tried on log(1 + the pair's two-hop path counts, Adamic-Adar-weighted, over the chosen meta-paths)."""
SUBSETS_UP_TO = 4
"""With at most this many two-hop meta-paths every non-empty subset is tried (15 for substitute
and complement); with more, all of them and each leave-one-out (a schema with 3 relations has 9)."""
SUBSET_Z = 2.0
"""How many standard errors of the paired per-query NDCG@10 difference a subset of the meta-paths
must win by over the best setting that counts them all (the best of many settings on a finite
validation split wins by chance; see the module text)."""


def path_subsets(count: int) -> List[Tuple[int, ...]]:
    """The sets of meta-path indices (of ``count``) that the calibration tries, all of them first."""
    every = tuple(range(count))
    if count <= SUBSETS_UP_TO:
        subsets = [c for size in range(count, 0, -1) for c in combinations(every, size)]
    else:
        subsets = [every] + [tuple(i for i in every if i != j) for j in every]
    return subsets


@torch.no_grad()
def calibrate(model, relation_states: Dict[str, dict], evaluator, enabled: bool = True,
              link_grid: Sequence[float] = LINK_GRID, path_grid: Sequence[float] = PATH_GRID,
              subsets: Optional[Sequence[Tuple[int, ...]]] = None, subset_z: float = SUBSET_Z
              ) -> Tuple[Dict[str, dict], Dict[str, dict]]:
    """Choose each relation's ``link_bonus``, ``path_bonus`` and ``path_mask`` on validation and
    set them in its selected weights.

    Args:
        model: the trained model (left holding the last relation's weights).
        relation_states: per relation, the weights of its selected epoch (not modified).
        evaluator: the run's :class:`~mmsc_dgl.eval.evaluator.Evaluator` (its validation split,
            negatives, ``val_queries`` and seed).
        enabled: ``False`` leaves the states as they are (MMSC's ``calibrate: false``).
        link_grid, path_grid: the weights tried (the link bonus only where the evidence has
            link features).
        subsets: the sets of meta-path indices tried for the path weight (default
            :func:`path_subsets`; ``[tuple(range(M))]`` weighs every path, as before the choice).
        subset_z: the margin, in standard errors, by which a subset must beat all paths (0: the
            plain best).

    Returns:
        ``(states, report)``: the states with the settings in them (copies; the given states where
        the model has no path evidence), and per relation ``{"link_bonus", "path_bonus",
        "path_metapaths", "subset_z", "val_NDCG@10": {"uncalibrated", "calibrated"}}`` (``subset_z``:
        the margin of the best subset over all paths in standard errors, ``None`` where all won).
    """
    evidence = getattr(model, "evidence", None)  # MMSC's PathEvidence (None without path evidence)
    if evidence is None or not enabled or not relation_states:
        return relation_states, {}
    if not evidence.links:
        link_grid = (0.0,)
    names = evidence.path_names
    behaviour = getattr(evidence, "behaviour_paths", list(range(len(names))))  # content paths are the MLP's
    every = tuple(behaviour)
    subsets = [tuple(sub) for sub in ([tuple(behaviour[i] for i in sub) for sub in path_subsets(len(behaviour))]
                                      if subsets is None else subsets)]
    settings = [(link, path, sub) for link, path in product(link_grid, path_grid)
                for sub in (subsets if path else [every])]  # no path weight: the paths do not matter
    states, report = {}, {}
    for r in RELATIONS:
        keys = (f"evidence.link_bonus_{r}", f"evidence.path_bonus_{r}", f"evidence.path_mask_{r}")
        state = dict(relation_states[r])
        state.setdefault(keys[0], torch.zeros(()))  # weights saved before the calibration existed
        state.setdefault(keys[1], torch.zeros(()))
        state.setdefault(keys[2], torch.ones(len(names)))
        model.load_state_dict({**state, keys[0]: torch.zeros_like(state[keys[0]]),
                               keys[1]: torch.zeros_like(state[keys[1]])})
        with deterministic_algorithms(evaluator.config.deterministic):
            per_query = _validation_ndcg(model, evaluator, r, settings)
        tried = {w: float(v.mean()) if v.numel() else float("nan") for w, v in per_query.items()}
        best, z = _choose(per_query, every, subset_z)
        mask = torch.zeros(len(names), dtype=state[keys[2]].dtype, device=state[keys[2]].device)
        mask[list(best[2])] = 1
        state[keys[0]] = torch.tensor(float(best[0]), dtype=state[keys[0]].dtype, device=state[keys[0]].device)
        state[keys[1]] = torch.tensor(float(best[1]), dtype=state[keys[1]].dtype, device=state[keys[1]].device)
        state[keys[2]] = mask
        states[r] = state
        chosen = [names[i] for i in best[2]]
        report[r] = {"link_bonus": best[0], "path_bonus": best[1], "path_metapaths": chosen, "subset_z": z,
                     "val_NDCG@10": {"uncalibrated": tried.get((0.0, 0.0, every)), "calibrated": tried.get(best)}}
        logger.info("calibration of %s: link bonus %g, path weight %g on %s (validation NDCG@10 %.4f -> %.4f)", r,
                    best[0], best[1], ", ".join(chosen), tried.get((0.0, 0.0, every), float("nan")),
                    tried.get(best, float("nan")))
    model.load_state_dict(states[RELATIONS[-1]])
    return states, report


Setting = Tuple[float, float, Tuple[int, ...]]


def _choose(per_query: Dict[Setting, torch.Tensor], every: Tuple[int, ...],
            subset_z: float) -> Tuple[Setting, Optional[float]]:
    """The setting with the best mean NDCG (ties: smaller weights, more meta-paths), where one
    that counts a subset of the meta-paths must beat the best that counts them all by
    ``subset_z`` standard errors of the paired difference; and that margin (``None`` when a
    setting with every path, or none at all, won outright)."""
    if not per_query or not next(iter(per_query.values())).numel():  # no validation edges of r
        return (0.0, 0.0, every), None

    def key(w: Setting):
        return (float(per_query[w].mean()), -w[0] - w[1], -w[0], len(w[2]))

    best = max(per_query, key=key)
    if best[2] == every:
        return best, None
    fallback = max((w for w in per_query if w[2] == every), key=key)
    d = per_query[best] - per_query[fallback]
    se = float(d.std()) / max(d.numel(), 1) ** 0.5 if d.numel() > 1 else 0.0
    z = float(d.mean()) / se if se > 0 else (float("inf") if float(d.mean()) > 0 else 0.0)
    return (best if z > subset_z else fallback), z


def _validation_ndcg(model, evaluator, relation: str, settings) -> Dict[Setting, torch.Tensor]:
    """Per-query validation NDCG@10 of ``relation`` (float64 [Q]) at each ``(link_bonus,
    path_bonus, meta-path indices)``."""
    model.eval()
    embedding = evaluator.embed(model)[relation] if evaluator.embed is not None else model.embed(relation)
    evidence = model.evidence
    targets = model.targets(relation, embedding)
    seen = []

    def record(src: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        # MMSC's ranking score (model.ranking_scorer: the dot product plus the evidence term),
        # with the candidates' path counts computed once for the score and the features
        counts = evidence.query_counts(src, cand)
        scores = candidate_dot(embedding, src, cand, targets) + evidence(counts, relation)
        seen.append((scores, evidence.calibration_features(src, cand, relation, counts=counts)))
        return scores

    edges = evaluator.dataset.splits.val[relation]
    query = query_subset(len(edges), evaluator.config.val_queries, evaluator.config.seed)
    # Processes that hold the same model (data-parallel training) each rank their part of the
    # queries under every setting, and the ranks are gathered back in one exchange: every
    # process then chooses from every query's NDCG, as one process would.
    share = getattr(evaluator, "share", None)
    mine = query if share is None else share.part(query)
    rank_queries(record, edges, mine, evaluator.sampler, relation, "val", device=evaluator.device)
    # log(1 + the kept paths), per subset, per batch; every setting's ranks written into one
    # tensor made before the loop.  Small results kept from each setting between its large
    # temporaries pinned glibc's heap: freed, a temporary left a hole that the next one (as
    # large, but aligned) did not fit, and at 20k items and 1,000 queries the process grew by
    # 7.6 MB a setting, to 3.3 GB at its peak against 1.6 GB now.
    logs = {sub: [torch.log1p(features[..., [1 + i for i in sub]].sum(-1)) for _, features in seen]
            for sub in dict.fromkeys(sub for _, _, sub in settings)}
    sizes = [scores.shape[0] for scores, _ in seen]
    rank = torch.empty((sum(sizes), len(settings)), dtype=torch.long)  # [queries, settings]
    for i, (link, path, sub) in enumerate(settings):
        start = 0
        for (scores, features), kept, size in zip(seen, logs[sub], sizes):
            s = scores + link * features[..., 0] + path * kept
            rank[start: start + size, i] = ranks(s[:, 0], s[:, 1:]).cpu()
            start += size
    if share is not None:
        rank = share.whole(rank, len(query))
    rank = rank.double()
    ndcg = torch.where(rank <= 10, 1.0 / torch.log2(rank + 1), torch.zeros_like(rank))
    return {(float(link), float(path), sub): ndcg[:, i] for i, (link, path, sub) in enumerate(settings)}
