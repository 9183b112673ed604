"""After training: the link bonus of MMSC's path evidence, chosen on validation.

A pair that is a training edge of the *other* relation is a strong candidate (on Amazon data a
quarter to a half of the held-out pairs are), and the evidence MLP sees it as a feature.  But the
triplet loss stops pushing once a positive beats its four random negatives by the margin, while
evaluation ranks it against a thousand: the learned weight of the link is whatever was enough
in training.  The bonus adds a constant :math:`\\beta_r` to the score of such pairs, chosen per
relation from :data:`BONUS_GRID` by validation NDCG@10 (ties: the smaller), on the weights each
relation selected.  Training never sees it.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence, Tuple, Union

import torch

from mmsc_dgl import RELATIONS
from mmsc_dgl.determinism import deterministic_algorithms
from mmsc_dgl.eval.evaluate import embedding_scores, query_subset, rank_queries
from mmsc_dgl.eval.ranking import ranking_metrics, ranks

logger = logging.getLogger(__name__)

BONUS_GRID: Tuple[float, ...] = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0)
"""The link bonuses tried on validation (scores are dot products plus the evidence term, of
order 1)."""


def _evidence_prefix(model) -> Optional[str]:
    """The state-dict prefix of the model's path evidence with link features, or None."""
    from mmsc_dgl.nn import PathEvidence
    for name, module in model.named_modules():
        if isinstance(module, PathEvidence) and module.links:
            return f"{name}." if name else ""
    return None


@torch.no_grad()
def calibrate_link_bonus(model, relation_states: Dict[str, dict], evaluator,
                         setting: Union[str, float, None] = "validation",
                         grid: Sequence[float] = BONUS_GRID) -> Tuple[Dict[str, dict], Dict[str, dict]]:
    """Set each relation's ``link_bonus`` in its selected weights.

    Args:
        model: the trained model (left holding the last relation's weights).
        relation_states: per relation, the weights of its selected epoch (not modified).
        evaluator: the run's :class:`~mmsc_dgl.eval.evaluator.Evaluator` (its validation split,
            negatives, ``val_queries`` and seed).
        setting: ``"validation"`` (choose from ``grid``), or a fixed bonus.
        grid: the bonuses tried.

    Returns:
        ``(states, report)``: the states with the bonus set (copies; the same objects where the
        model has no link features), and per relation ``{"link_bonus": b, "val_NDCG@10": {b:
        NDCG@10}}`` (empty without link features).
    """
    prefix = _evidence_prefix(model)
    if prefix is None or setting is None or not relation_states:
        return relation_states, {}
    states, report = {}, {}
    for r in RELATIONS:
        key = f"{prefix}link_bonus_{r}"
        state = dict(relation_states[r])
        state.setdefault(key, torch.zeros(()))  # weights saved before the bonus existed
        if setting == "validation":
            model.load_state_dict({**state, key: torch.zeros_like(state[key])})
            with deterministic_algorithms(evaluator.config.deterministic):
                tried = _validation_ndcg(model, evaluator, r, grid)
            valid = {b: v for b, v in tried.items() if v == v}  # NaN: no validation edges of r
            best = max(valid, key=lambda b: (valid[b], -b)) if valid else 0.0
            report[r] = {"link_bonus": best, "val_NDCG@10": tried}
            logger.info("link bonus for %s: %g (validation NDCG@10 %.4f without, %.4f with it)", r, best,
                        tried.get(0.0, float("nan")), tried.get(best, float("nan")))
        else:
            best = float(setting)
            report[r] = {"link_bonus": best}
        state[key] = torch.tensor(float(best), dtype=state[key].dtype, device=state[key].device)
        states[r] = state
    model.load_state_dict(states[RELATIONS[-1]])
    return states, report


def _validation_ndcg(model, evaluator, relation: str, grid: Sequence[float]) -> Dict[float, float]:
    """Validation NDCG@10 of ``relation`` at each bonus: the model's scores and the link
    indicator are computed once, each bonus only re-ranks."""
    model.eval()
    embedding = evaluator.embed(model)[relation] if evaluator.embed is not None else model.embed(relation)
    base = model.ranking_scorer(relation, embedding)
    if isinstance(base, torch.Tensor):
        base = embedding_scores(base)
    evidence = model.evidence
    seen = []

    def record(src: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        scores = base(src, cand)
        seen.append((scores, evidence.link_scores(src, cand, relation)))
        return scores

    edges = evaluator.dataset.splits.val[relation]
    query = query_subset(len(edges), evaluator.config.val_queries, evaluator.config.seed)
    rank_queries(record, edges, query, evaluator.sampler, relation, "val", device=evaluator.device)
    out = {}
    for bonus in grid:
        rank = torch.cat([ranks(s[:, 0] + bonus * l[:, 0], s[:, 1:] + bonus * l[:, 1:]).cpu() for s, l in seen]) \
            if seen else torch.zeros(0, dtype=torch.long)
        out[float(bonus)] = float(ranking_metrics(rank, [10])["NDCG@10"])
    return out
