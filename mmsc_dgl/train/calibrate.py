"""After training: two weights of MMSC's path-evidence term, chosen on validation.

The evidence MLP learns how much a link to the other relation and a two-hop path are worth from
the triplet loss, which stops pushing once a positive beats its four random negatives by the
margin; evaluation ranks it against a thousand, among which the few items joined to the query
by a path or an edge are the hard ones.  So, once training has ended, each relation's score
gains

.. math::
    \\beta_r \\sum_{x \\ne r} A_x(i, j) \\; + \\; \\alpha_r \\log\\big(1 + \\textstyle\\sum_{xy} C_{xy}(i, j)\\big)

with :math:`(\\beta_r, \\alpha_r)` chosen from :data:`LINK_GRID` x :data:`PATH_GRID` by validation
NDCG@10 on the weights that relation selected (ties: the smaller weights).  Both terms are 0 for
a pair with no path and no link, so the whole-catalog and candidate-stage routes stay exact.
The scores and features of the validation candidates are computed once; each pair of weights
only re-ranks them.
"""
from __future__ import annotations

import logging
from itertools import product
from typing import Dict, Sequence, Tuple

import torch

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.determinism import deterministic_algorithms
from mmsc_dgl.eval.evaluate import query_subset, rank_queries
from mmsc_dgl.eval.ranking import ranking_metrics, ranks
from mmsc_dgl.ops.candidates import candidate_dot

logger = logging.getLogger(__name__)

LINK_GRID: Tuple[float, ...] = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0)
"""Bonuses tried for a pair that is a training edge of the other relation (scores are of order 1)."""
PATH_GRID: Tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.8, 1.6)
"""Weights tried on log(1 + the pair's two-hop path counts, all meta-paths, Adamic-Adar-weighted)."""


@torch.no_grad()
def calibrate(model, relation_states: Dict[str, dict], evaluator, enabled: bool = True,
              link_grid: Sequence[float] = LINK_GRID, path_grid: Sequence[float] = PATH_GRID
              ) -> Tuple[Dict[str, dict], Dict[str, dict]]:
    """Choose each relation's ``link_bonus`` and ``path_bonus`` on validation and set them in its
    selected weights.

    Args:
        model: the trained model (left holding the last relation's weights).
        relation_states: per relation, the weights of its selected epoch (not modified).
        evaluator: the run's :class:`~mmsc_dgl.eval.evaluator.Evaluator` (its validation split,
            negatives, ``val_queries`` and seed).
        enabled: ``False`` leaves the states as they are (MMSC's ``calibrate: false``).
        link_grid, path_grid: the weights tried (the link bonus only where the evidence has
            link features).

    Returns:
        ``(states, report)``: the states with both weights set (copies; the given states where the
        model has no path evidence), and per relation ``{"link_bonus", "path_bonus",
        "val_NDCG@10": {"uncalibrated", "calibrated"}}``.
    """
    evidence = getattr(model, "evidence", None)  # MMSC's PathEvidence (None without path evidence)
    if evidence is None or not enabled or not relation_states:
        return relation_states, {}
    if not evidence.links:
        link_grid = (0.0,)
    states, report = {}, {}
    for r in RELATIONS:
        keys = (f"evidence.link_bonus_{r}", f"evidence.path_bonus_{r}")
        state = dict(relation_states[r])
        for key in keys:  # weights saved before the calibration existed
            state.setdefault(key, torch.zeros(()))
        model.load_state_dict({**state, **{key: torch.zeros_like(state[key]) for key in keys}})
        with deterministic_algorithms(evaluator.config.deterministic):
            tried = _validation_ndcg(model, evaluator, r, list(product(link_grid, path_grid)))
        valid = {w: v for w, v in tried.items() if v == v}  # NaN: no validation edges of r
        best = max(valid, key=lambda w: (valid[w], -sum(w), tuple(-x for x in w))) if valid else (0.0, 0.0)
        for key, value in zip(keys, best):
            state[key] = torch.tensor(float(value), dtype=state[key].dtype, device=state[key].device)
        states[r] = state
        report[r] = {"link_bonus": best[0], "path_bonus": best[1],
                     "val_NDCG@10": {"uncalibrated": tried.get((0.0, 0.0)), "calibrated": tried.get(best)}}
        logger.info("calibration of %s: link bonus %g, path weight %g (validation NDCG@10 %.4f -> %.4f)", r,
                    best[0], best[1], tried.get((0.0, 0.0), float("nan")), tried.get(best, float("nan")))
    model.load_state_dict(states[RELATIONS[-1]])
    return states, report


def _validation_ndcg(model, evaluator, relation: str, weights) -> Dict[Tuple[float, float], float]:
    """Validation NDCG@10 of ``relation`` at each ``(link_bonus, path_bonus)``."""
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
    rank_queries(record, edges, query, evaluator.sampler, relation, "val", device=evaluator.device)
    out = {}
    for w in weights:
        parts = []
        for scores, features in seen:
            s = scores + w[0] * features[..., 0] + w[1] * features[..., 1]
            parts.append(ranks(s[:, 0], s[:, 1:]).cpu())
        rank = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        out[(float(w[0]), float(w[1]))] = float(ranking_metrics(rank, [10])["NDCG@10"])
    return out
