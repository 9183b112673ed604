"""The Evaluator: validation during training, and test, cold-start and labelled-pair metrics of
a trained model.  It is handed the dataset and the model; it reads no files."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.determinism import deterministic_algorithms
from mmsc_dgl.eval.cold_start import ColdStart
from mmsc_dgl.eval.evaluate import QueryShare, degree_buckets, embedding_scores, evaluate_embeddings
from mmsc_dgl.eval.pairs import best_f1_threshold, pair_metrics
from mmsc_dgl.eval.warm_up import warm_up_curve, warm_up_plan


class Evaluator:
    """Ranks held-out edges against the split's seeded negatives (HR/MRR/NDCG@K), fills in
    cold-start items from content (Eq. 12), and scores labelled pairs (ROC-AUC, PR-AUC, F1 at a
    threshold chosen on validation).

    Args:
        dataset: a :class:`~mmsc_dgl.data.dataset.Dataset` (its splits and negatives).
        config: anything with ``ks``, ``val_queries``, ``test_queries``, ``seed``,
            ``cold_neighbors`` and ``deterministic`` (:class:`~mmsc_dgl.config.TrainConfig`).
        features: the run's content features (cold start needs them), or ``None``.
        device: where scores are computed.
        sampler: the split's negative sampler (default: the dataset's).
        embed: ``embed(model) -> {relation: [num_items, dim]}``, how every item's rows are
            computed (default: ``model.embed_all()``; data-parallel training embeds each
            process's share and gathers the rest: :mod:`mmsc_dgl.distributed.training`).
        cold_start: how cold items are placed (default: Eq. 12 with ``config.cold_neighbors``);
            a run sets its trained one (:func:`mmsc_dgl.train.cold_start.fit_cold_start`).
        share: processes holding the same model rank their part of each split's queries
            (:class:`~mmsc_dgl.eval.evaluate.QueryShare`: validation, test and cold items); the
            metrics are every query's.
    """

    def __init__(self, dataset, config, features=None, device: Optional[torch.device] = None, sampler=None,
                 embed: Optional[Callable] = None, cold_start: Optional[ColdStart] = None,
                 share: Optional[QueryShare] = None):
        self.dataset = dataset
        self.config = config
        self.features = features
        self.device = device or torch.device("cpu")
        self.sampler = sampler or dataset.negative_sampler()
        self.embed = embed
        self.cold_start = cold_start
        self.share = share

    # --- during training --------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, model) -> Dict[str, Dict[str, float]]:
        """Validation HR/NDCG@10 per relation on a fixed seeded subset of queries."""
        was_training = model.training
        model.eval()
        embeddings = None
        if model.has_embeddings:
            embeddings = self.embed(model) if self.embed is not None else model.embed_all()
        scorers = self.scorers(model, embeddings)
        result = evaluate_embeddings(scorers, self.dataset.splits.val, self.sampler, "val", ks=[10],
                                     max_queries=self.config.val_queries, seed=self.config.seed, device=self.device,
                                     share=self.share)
        model.train(was_training)
        return result

    def scorers(self, model, embeddings: Optional[Dict[str, torch.Tensor]],
                relation_states: Optional[Dict[str, dict]] = None,
                candidates: Optional[Dict[str, torch.Tensor]] = None) -> dict:
        """Per relation, what ranks candidates: an embedding matrix (and the model's pair term,
        taken with that relation's selected weights when ``relation_states`` are given), or the
        model's ``score``.  ``candidates``: other rows for items in the candidate role."""
        if embeddings is None:
            return {r: _pair_scorer(model, r) for r in RELATIONS}
        out = {}
        for r in RELATIONS:
            if relation_states:
                model.load_state_dict(relation_states[r])
            out[r] = model.ranking_scorer(r, embeddings[r], None if candidates is None else candidates[r])
        return out

    # --- after training ---------------------------------------------------------------------
    def edgeless_items(self) -> np.ndarray:
        """Items the model never saw an edge of: the cold items, and items whose every edge is
        held out (a test query's source can be one).  Evaluation places all of them as it
        places cold items (:attr:`cold_start`), since their own rows learned nothing from edges."""
        return np.union1d(np.asarray(self.dataset.splits.cold_items, dtype=np.int64),
                          np.flatnonzero(self.training_degree() == 0))

    def _place_edgeless(self, model, emb):
        """``emb`` with :meth:`edgeless_items` placed from their content as queries, and as
        candidates (``None`` where the same rows serve both); ``(None, None)`` where the model
        has no embeddings, its embedding is its content, or there is no content.

        A content tower is trained to place a *query* (its row against the warm items' target
        rows), never to be ranked itself: tower rows of new items resemble each other, so as
        candidates they would outrank a cold query's warm partners.  As candidates, edgeless
        items take Eq. 12's rows (borrowed warm rows, in the space the targets live in)."""
        if emb is None or model.content_only or self.features is None:
            return None, None
        content = self.features.pooled().to(emb["substitute"].device)
        placer = self.cold_start or ColdStart(k=self.config.cold_neighbors)
        edgeless = self.edgeless_items()
        nearest = placer.nearest(content, edgeless)  # one search for both relations and placers
        queries = {r: placer.fill(r, emb[r], content, edgeless, nearest) for r in RELATIONS}
        if not placer.towers:
            return queries, None
        eq12 = ColdStart(k=placer.k)
        return queries, {r: eq12.fill(r, emb[r], content, edgeless, nearest) for r in RELATIONS}

    def training_degree(self) -> np.ndarray:
        """Each item's training neighbours, summed over the relations (an edge stored in both
        directions counts once); test metrics are also reported per degree bucket
        (``test[r]["by_bucket"]``)."""
        splits = self.dataset.splits
        n = splits.num_items
        degree = np.zeros(n, dtype=np.int64)
        for r in RELATIONS:
            e = splits.train[r]
            pairs = np.unique(np.concatenate([e.src * n + e.dst, e.dst * n + e.src]))
            np.add.at(degree, pairs // n, 1)
        return degree

    @torch.no_grad()
    def embeddings(self, model, relation_states: Optional[Dict[str, dict]] = None) -> Optional[Dict[str, torch.Tensor]]:
        """Each relation's embeddings from that relation's selected weights (``None`` for a model
        that scores pairs without embeddings).  The model is left holding the last relation's."""
        model.eval()
        if not model.has_embeddings:
            return None
        if not relation_states:
            return self.embed(model) if self.embed is not None else model.embed_all()
        out = {}
        for r in RELATIONS:
            model.load_state_dict(relation_states[r])
            out[r] = self.embed(model)[r] if self.embed is not None else model.embed(r)
        return out

    @torch.no_grad()
    def evaluate(self, model, relation_states: Optional[Dict[str, dict]] = None, pairs=None,
                 full_catalog: bool = False) -> dict:
        """Test and cold-start ranking metrics, and labelled-pair metrics (``pairs``, or the
        dataset's own) of ``model`` with each relation's selected weights.  ``full_catalog`` adds
        ``test_full_catalog``: the test targets ranked against every item, not sampled negatives."""
        with deterministic_algorithms(self.config.deterministic):
            return self._evaluate(model, relation_states, pairs, full_catalog)

    def _evaluate(self, model, relation_states, pairs, full_catalog: bool = False) -> dict:
        cfg = self.config
        emb = self.embeddings(model, relation_states)
        splits = self.dataset.splits
        placed, placed_candidates = self._place_edgeless(model, emb)
        scorers = self.scorers(model, placed if placed is not None else emb, relation_states, placed_candidates)
        out: Dict[str, Any] = {"test": evaluate_embeddings(scorers, splits.test, self.sampler, "test", ks=cfg.ks, device=self.device,
                                           max_queries=cfg.test_queries, seed=cfg.seed,
                                           buckets=degree_buckets(self.training_degree()), share=self.share)}
        if full_catalog:
            out["test_full_catalog"] = evaluate_embeddings(scorers, splits.test, self.sampler, "test", ks=cfg.ks,
                                                           device=self.device, max_queries=cfg.test_queries,
                                                           seed=cfg.seed, full_catalog=True, share=self.share)
        if not len(splits.cold_items):
            given = self._cold_from_test(out["test"], placed is not None)
            if given:
                out["cold"], out["cold_start_method"] = given
        if len(splits.cold_items):
            if emb is None or model.content_only:
                cold_emb = scorers
                out["cold_start_method"] = ("the model's own scores (no embeddings)" if emb is None
                                            else "the content embedding itself")
            elif placed is not None:
                content = self.features.pooled().to(emb["substitute"].device)
                placer = self.cold_start or ColdStart(k=cfg.cold_neighbors)
                cold_emb = scorers
                empty = int((content[torch.tensor(np.array(splits.cold_items), device=content.device)].abs().sum(1) == 0).sum())
                out["cold_start_method"] = placer.describe() + (
                    f" ({empty:,} of {len(splits.cold_items):,} cold items have no content and keep their own "
                    "embeddings)" if empty else "")
            else:
                cold_emb = scorers
                out["cold_start_method"] = "none (no content features: id embeddings of unseen items)"
            out["cold"] = evaluate_embeddings(cold_emb, splits.cold, self.sampler, "cold", ks=cfg.ks, device=self.device,
                                              max_queries=cfg.test_queries, seed=cfg.seed, share=self.share)
            if emb is not None:
                out["warm_up"] = self.warm_up(model, placed if placed is not None else emb, placed_candidates,
                                              relation_states)
        pair_table = pairs if pairs is not None else splits.pairs
        if pair_table is not None and pair_table.num_rows:
            out["pairs"] = self.pair_metrics(scorers, pair_table)
        return out

    def _cold_from_test(self, test: dict, placed: bool):
        """Splits without cold items (given splits): the test queries whose source has no
        training edge, reported as cold start (``cold``, counted) with the run's placement, or
        ``None`` when there are none."""
        parts = {r: test[r].get("by_bucket", {}).get("0") for r in RELATIONS}
        if not any(parts.values()):
            return None
        nan = float("nan")
        empty = {f"{m}@{k}": nan for k in self.config.ks for m in ("HR", "MRR", "NDCG")}
        cold = {r: dict(p) if p else {**empty, "queries": 0, "reason": f"every {r} test source has a training edge"}
                for r, p in parts.items()}
        counted = ", ".join(f"{cold[r]['queries']:,} of {test[r]['queries']:,} {r}" for r in RELATIONS)
        placer = self.cold_start or ColdStart(k=self.config.cold_neighbors)
        how = placer.describe() if placed else "the model's own rows (no content placement)"
        return cold, f"{how}; cold items: the test queries whose source has no training edge ({counted})"

    def warm_up(self, model, queries: Dict[str, torch.Tensor], candidates: Optional[Dict[str, torch.Tensor]] = None,
                relation_states: Optional[Dict[str, dict]] = None) -> dict:
        """The warm-up curve (:mod:`mmsc_dgl.eval.warm_up`): NDCG@K of cold items once 0, 1, 2
        and 5 of their held-out edges are known, on the items with more than 5."""
        plan = warm_up_plan(self.dataset.splits, self.config.seed, max_items=self.config.test_queries)
        if not len(plan.items):
            return {"ks": list(plan.ks), "items": 0,
                    "reason": f"no cold item has more than {max(plan.ks)} held-out edges"}
        return warm_up_curve(model, plan, self.dataset.splits, self.sampler, queries, candidates, relation_states,
                             metric_ks=self.config.ks, device=self.device, share=self.share)

    def pair_metrics(self, scorers: dict, table) -> dict:
        """ROC-AUC, PR-AUC and F1 per relation of a labelled pair table (node ids); F1's
        threshold comes from validation edges against their first negative."""
        relation = table.column("relation").cast("string").to_pylist()
        src = table.column("src").to_numpy()
        dst = table.column("dst").to_numpy()
        label = table.column("label").to_numpy()
        result: Dict[str, Dict[str, Any]] = {}

        def pair_scores(score, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            a_t = torch.from_numpy(np.asarray(a, dtype=np.int64)).to(self.device)
            b_t = torch.from_numpy(np.asarray(b, dtype=np.int64)).to(self.device)
            return score(a_t, b_t.unsqueeze(1))[:, 0].cpu().numpy()

        for r in RELATIONS:
            pick = np.array([x == r for x in relation])
            if not pick.any():
                continue
            if len(np.unique(label[pick])) < 2:
                nan = float("nan")
                result[r] = {"ROC-AUC": nan, "PR-AUC": nan, "F1": nan, "pairs": int(pick.sum()),
                             "reason": f"every {r} pair is labelled {int(label[pick][0])}; the metrics need both labels"}
                continue
            score = embedding_scores(scorers[r]) if isinstance(scorers[r], torch.Tensor) else scorers[r]
            scores = pair_scores(score, src[pick], dst[pick])
            v_label, v_scores = self._threshold_pairs(score, pair_scores, r)
            threshold = best_f1_threshold(v_label, v_scores)
            result[r] = pair_metrics(label[pick], scores, threshold)
        return result

    def _threshold_pairs(self, score, pair_scores, relation: str):
        """Labels and scores F1's threshold is chosen on: the given labelled validation pairs of
        ``relation`` when the dataset has them (both labels), else each validation edge against
        its first sampled negative."""
        given = self.dataset.splits.val_pairs
        if given is not None:
            import pyarrow.compute as pc  # only datasets with labelled pairs get here
            part = given.filter(pc.equal(given.column("relation").cast("string"), relation))
            labels = part.column("label").to_numpy()
            if len(np.unique(labels)) == 2:
                return labels, pair_scores(score, part.column("src").to_numpy(), part.column("dst").to_numpy())
        val = self.dataset.splits.val[relation]
        neg = self.sampler.sample(relation, "val", np.arange(len(val)), val.src)[:, 0]
        v_pos = pair_scores(score, val.src, val.dst)
        v_neg = pair_scores(score, val.src, neg)
        return np.r_[np.ones(len(v_pos)), np.zeros(len(v_neg))], np.r_[v_pos, v_neg]


def _pair_scorer(model, relation: str):
    """``f(src, candidates)`` from ``model.score``, with the model's ``catalog_scores`` (every
    item at once, for ranking against the whole catalog) attached where it has one."""
    def scores(src: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        return model.score(src.unsqueeze(1).expand_as(cand), cand, relation)
    if hasattr(model, "catalog_scores"):
        setattr(scores, "catalog", lambda src: model.catalog_scores(src, relation))
    return scores
