"""After training: a content tower per relation for items that have no edges, and how much to
trust it against MMSC's Eq. 12, both learnt from warm items made to look cold.

Eq. 12 gives a cold item the mean embedding of its nearest warm items in content space: it can
only be as good as content similarity is at finding items with the same neighbours, and on real
catalogs it lost to LightGCN with the same rule.  The tower instead learns, from every warm
item's training edges, where content should land in the behaviour model's space:

1. The trained model's rows are computed once, with each relation's selected weights, and held
   fixed (the tower never changes the warm model: warm results stay as they were).
2. A fifth of the warm items with edges (seeded) are set aside as *pseudo-cold*.
3. The tower maps an item's pooled content to a query row and is trained with a sampled softmax:
   for each training edge ``(a, b)`` (both directions) whose source is warm and not
   pseudo-cold, the score of ``tower(x_a)`` against ``b``'s target row must beat that against
   :data:`NEGATIVES` uniformly drawn items.  Training stops when NDCG@10 on the pseudo-cold
   items' *validation* edges (the query's row from the tower, against the split's own
   negatives) stops improving.
4. The tower's share against Eq. 12 (:data:`TOWER_SHARES`) is chosen on the same edges, Eq. 12
   borrowing only from the other warm items (ties: the smaller share).

With ``distill=True`` (``cold_start: aldi``) the tower is also taught the trained model's own
scores, as ALDI does (Huang et al., "Aligning Distillation For Cold-start Item Recommendation",
SIGIR 2023): the model is the teacher, its row of the edge's source ``a`` scores the same
positive and negatives as the tower's row of ``a``'s content (the student), and three terms are
added to the sampled softmax (:func:`alignment`): the scores themselves (rating distribution,
absolute error), the order of the positive over each negative (ranking, a binary cross-entropy
of the student's score gaps against the teacher's as probabilities), and how far an item stands
from the batch's other items (identification: its own product against the mean product with
the others).  ALDI's teacher-aware weighting of items by popularity is not implemented.

Why validation edges and not the pseudo-cold items' training edges: the model pulled the
neighbours' rows towards a pseudo-cold item's own row while training on those edges, and MMSC's
rows carry the item's content, so ranking them from content is easier than for an item that
really was never trained on.  On Magazine that proxy chose the tower alone where the real cold
items wanted half Eq. 12 (substitutes: 0.18 against 0.29 NDCG@10).  A validation edge was never
trained on, by the model or the tower.
"""
from __future__ import annotations

import copy
import logging
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.determinism import deterministic_algorithms
from mmsc_dgl.eval.cold_start import ColdStart
from mmsc_dgl.eval.ranking import ranks
from mmsc_dgl.nn.content_tower import ContentTower

logger = logging.getLogger(__name__)

TOWER_SHARES: Tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
"""The tower's shares tried against Eq. 12 (0: Eq. 12 alone, 1: the tower alone)."""
NEGATIVES = 1024
"""Uniform negatives per training batch (shared by the batch's edges)."""
HOLDOUT = 0.2
"""The share of warm items with edges set aside as pseudo-cold (their validation edges choose
when the tower stops and its share)."""


def _ndcg(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Per-query NDCG@10 of each positive score [Q] among its negatives [Q, M]."""
    rank = ranks(pos, neg).double()
    return torch.where(rank <= 10, 1.0 / torch.log2(rank + 1), torch.zeros_like(rank))


def alignment(student_pos: torch.Tensor, student_neg: torch.Tensor, teacher_pos: torch.Tensor,
              teacher_neg: torch.Tensor, student_rows: torch.Tensor, teacher_rows: torch.Tensor) -> Dict[str, torch.Tensor]:
    """ALDI's three alignment terms between a student and a teacher scoring the same pairs.

    Args:
        student_pos, teacher_pos: each query's score of its positive ``[B]``.
        student_neg, teacher_neg: its scores of the negatives ``[B, M]``.
        student_rows, teacher_rows: the queries' rows ``[B, D]`` (the identification term).

    Returns:
        ``{"rating", "ranking", "identification"}``, scalars.  ``rating`` is 0 exactly where
        the scores agree; the other two are binary cross-entropies, smallest (the teacher's own
        entropy) where the student's gaps equal the teacher's.

    Example:
        >>> rows = torch.eye(3)
        >>> parts = alignment(torch.ones(3), torch.zeros(3, 2), torch.ones(3), torch.zeros(3, 2), rows, rows)
        >>> float(parts["rating"])
        0.0
    """
    rating = (student_pos - teacher_pos).abs().mean() + (student_neg - teacher_neg).abs().mean()
    gaps = student_pos.unsqueeze(1) - student_neg
    ranking = F.binary_cross_entropy_with_logits(gaps, torch.sigmoid(teacher_pos.unsqueeze(1) - teacher_neg).detach())

    def apart(rows: torch.Tensor) -> torch.Tensor:
        products = rows @ rows.T
        own = products.diagonal()
        others = (products.sum(1) - own) / max(1, rows.shape[0] - 1)
        return own - others

    identification = F.binary_cross_entropy_with_logits(apart(student_rows), torch.sigmoid(apart(teacher_rows)).detach())
    return {"rating": rating, "ranking": ranking, "identification": identification}


def fit_cold_start(model, relation_states: Dict[str, dict], evaluator, *, k: int = 10, seed: int = 0,
                   hidden: int = 256, rounds: int = 80, patience: int = 5, batch_size: int = 1024,
                   steps_per_round: int = 50, lr: float = 3e-4, weight_decay: float = 1e-4,
                   queries: int = 1000, distill: bool = False) -> Tuple[ColdStart, Dict[str, dict]]:
    """Train a :class:`~mmsc_dgl.nn.ContentTower` per relation and choose its share against
    Eq. 12 on pseudo-cold items (the module text has the recipe).

    Args:
        model: the trained model (left holding the last relation's weights).
        relation_states: per relation, the weights of its selected epoch.
        evaluator: the run's :class:`~mmsc_dgl.eval.evaluator.Evaluator` (its dataset, content
            features and device).
        k: Eq. 12's nearest items.
        seed: draws the pseudo-cold items, the tower's initial weights, batches and negatives.
        hidden, rounds, patience, batch_size, steps_per_round, lr, weight_decay: the tower and
            its training: at most ``rounds`` rounds of ``steps_per_round`` batches of
            ``batch_size`` edges (drawn with replacement, so a small catalog trains as long as
            a large one), stopping after ``patience`` rounds without a better pseudo-cold NDCG.
        queries: pseudo-cold edges per relation that the stopping and the share are chosen on.
        distill: add ALDI's alignment with the trained model's scores (:func:`alignment`) to
            the tower's loss (``cold_start: aldi``).

    Returns:
        ``(cold_start, report)``: Eq. 12 alone (and an empty report) for a model without
        embeddings, one whose embedding is its content, or a run without content features;
        otherwise the towers and shares, and per relation ``{"tower_share", "rounds",
        "pseudo_cold_items", "pseudo_cold_NDCG@10": {"eq12", "tower", "chosen"}}``.
    """
    features = evaluator.features
    if features is None or not model.has_embeddings or model.content_only:
        return ColdStart(k=k), {}
    with deterministic_algorithms(evaluator.config.deterministic):
        return _fit(model, relation_states, evaluator, features, k=k, seed=seed, hidden=hidden, rounds=rounds,
                    patience=patience, batch_size=batch_size, steps_per_round=steps_per_round, lr=lr,
                    weight_decay=weight_decay, queries=queries, distill=distill)


def _fit(model, relation_states, evaluator, features, *, k, seed, hidden, rounds, patience, batch_size,
         steps_per_round, lr, weight_decay, queries, distill):
    device = evaluator.device
    embeddings = evaluator.embeddings(model, relation_states)
    content = features.pooled().to(device=device, dtype=torch.float32)
    splits = evaluator.dataset.splits
    num_items = content.shape[0]
    has_content = content.abs().sum(1) > 0
    cold = torch.zeros(num_items, dtype=torch.bool, device=device)
    cold[torch.tensor(np.array(splits.cold_items), dtype=torch.long, device=device)] = True
    both = {r: (np.concatenate([splits.train[r].src, splits.train[r].dst]),
                np.concatenate([splits.train[r].dst, splits.train[r].src])) for r in RELATIONS}
    with_edges = np.zeros(num_items, dtype=bool)
    for src, _ in both.values():
        with_edges[src] = True
    usable = np.flatnonzero(with_edges & (has_content & ~cold).cpu().numpy())
    rng = np.random.default_rng([seed, 31])
    pseudo = np.zeros(num_items, dtype=bool)
    if len(usable) >= 10:
        pseudo[rng.choice(usable, size=max(1, int(round(HOLDOUT * len(usable)))), replace=False)] = True
    if not pseudo.any():
        logger.info("cold start: too few warm items with content and edges for a tower; Eq. 12 alone")
        return ColdStart(k=k), {}
    pseudo_t = torch.from_numpy(pseudo).to(device)
    with_edges_t = torch.from_numpy(with_edges).to(device)
    gen = torch.Generator(device="cpu").manual_seed(int(seed) * 7919 + 17)
    negatives_pool = torch.nonzero(~cold).flatten().cpu()
    eq12 = ColdStart(k=k)
    towers, mix, report = {}, {}, {}
    for r in RELATIONS:
        emb = embeddings[r].float()
        model.load_state_dict(relation_states[r])
        targets = model.targets(r, embeddings[r]).float().detach()
        src, dst = both[r]
        is_cold = cold.cpu().numpy()
        train_mask = ~is_cold[dst] & ~pseudo[src] & has_content.cpu().numpy()[src] & ~is_cold[src]
        val = splits.val[r]  # validation edges of pseudo-cold items: never trained on, by model or tower
        val_rows = np.flatnonzero(pseudo[val.src] & ~is_cold[val.dst])
        if train_mask.sum() == 0 or len(val_rows) == 0:
            continue
        if len(val_rows) > queries:
            val_rows = np.sort(rng.choice(val_rows, size=queries, replace=False))
        t_src = torch.from_numpy(src[train_mask]).to(device)
        t_dst = torch.from_numpy(dst[train_mask]).to(device)
        v_src = torch.from_numpy(val.src[val_rows]).to(device)
        v_dst = torch.from_numpy(val.dst[val_rows]).to(device)
        v_neg = torch.from_numpy(evaluator.sampler.sample(r, "val", val_rows, val.src[val_rows])).to(device)
        v_pos_t, v_neg_t = targets[v_dst], targets[v_neg]

        def score(rows: torch.Tensor) -> torch.Tensor:
            return _ndcg((rows * v_pos_t).sum(-1), torch.einsum("qd,qmd->qm", rows, v_neg_t))

        torch.manual_seed(int(seed) * 104729 + RELATIONS.index(r))
        tower = ContentTower(content.shape[1], emb.shape[1], hidden=hidden).to(device)
        optimiser = torch.optim.AdamW(tower.parameters(), lr=lr, weight_decay=weight_decay)
        best, best_state, best_epoch, waited = -1.0, None, 0, 0
        for epoch in range(1, rounds + 1):
            tower.train()
            draws = torch.randint(len(t_src), (steps_per_round, min(batch_size, len(t_src))), generator=gen)
            for batch in draws.to(device):
                a, b = t_src[batch], t_dst[batch]
                neg = negatives_pool[torch.randint(len(negatives_pool), (NEGATIVES,), generator=gen)].to(device)
                q = tower(content[a])
                partners, others = targets[b], targets[neg]
                logits = torch.cat([(q * partners).sum(-1, keepdim=True), q @ others.T], dim=1)
                loss = F.cross_entropy(logits, torch.zeros(len(a), dtype=torch.long, device=device))
                if distill:
                    teacher = emb[a].detach()
                    known = torch.cat([(teacher * partners).sum(-1, keepdim=True), teacher @ others.T], dim=1)
                    loss = loss + sum(alignment(logits[:, 0], logits[:, 1:], known[:, 0], known[:, 1:],
                                                q, teacher).values())
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            tower.eval()
            with torch.no_grad():
                now = float(score(tower(content[v_src])).mean())
            logger.debug("cold start %s: round %d, loss %.4f, pseudo-cold NDCG@10 %.4f", r, epoch, float(loss), now)
            if now > best:
                best, best_state, best_epoch, waited = now, copy.deepcopy(tower.state_dict()), epoch, 0
            else:
                waited += 1
                if waited >= patience:
                    break
        tower.load_state_dict(best_state)
        tower.eval()
        with torch.no_grad():
            own = F.normalize(tower(content[v_src]), dim=1)
            borrowed = eq12.rows(r, emb, content, content[v_src], candidates=has_content & ~cold & ~pseudo_t & with_edges_t)
            tried = {s: float(score(F.normalize(s * own + (1 - s) * borrowed, dim=1)).mean()) for s in TOWER_SHARES}
        share = max(TOWER_SHARES, key=lambda s: (tried[s], -s))
        towers[r], mix[r] = tower.cpu(), share
        report[r] = {"tower_share": share, "rounds": best_epoch, "pseudo_cold_items": int(pseudo.sum()), "distilled": distill,
                     "pseudo_cold_NDCG@10": {"eq12": tried[0.0], "tower": tried[1.0], "chosen": tried[share]}}
        logger.info("cold start of %s: content tower share %g (pseudo-cold NDCG@10: Eq. 12 %.4f, tower %.4f, "
                    "chosen %.4f; best round %d)", r, share, tried[0.0], tried[1.0], tried[share], best_epoch)
    model.load_state_dict(relation_states[RELATIONS[-1]])
    return ColdStart(k=k, towers=towers, mix=mix).to(device), report
