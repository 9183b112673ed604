import math

import numpy as np
import pytest
import torch

from mmsc_dgl.data.edges import RelationEdges
from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.data.negatives import NegativeSampler
from mmsc_dgl.eval.cold_start import ColdStart
from mmsc_dgl.eval.evaluate import evaluate_embeddings, rank_full_catalog, rank_queries
from mmsc_dgl.eval.pairs import best_f1_threshold, pair_metrics
from mmsc_dgl.eval.ranking import ranking_metrics, ranks
from mmsc_dgl.models.losses import info_nce, triplet_loss
from conftest import run_sharing


def test_ranks_and_metrics_by_hand():
    pos = torch.tensor([0.9, 0.5, 0.1, 0.7])
    neg = torch.tensor([[0.1, 0.2, 0.3],    # rank 1
                        [0.6, 0.4, 0.7],    # two above: rank 3
                        [0.2, 0.3, 0.4],    # rank 4
                        [0.7, 0.0, 0.0]])   # a tie counts against: rank 2
    r = ranks(pos, neg)
    assert r.tolist() == [1, 3, 4, 2]
    m = ranking_metrics(r, ks=[1, 3])
    assert m["HR@1"] == pytest.approx(1 / 4)
    assert m["HR@3"] == pytest.approx(3 / 4)
    assert m["MRR@3"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 4)
    assert m["NDCG@3"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(3)) / 4)
    assert m["NDCG@1"] == pytest.approx(1 / 4)
    with pytest.raises(ValueError):
        ranks(pos, neg[:2])


def test_pair_metrics_against_hand_values():
    labels = np.array([1, 1, 0, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.3, 0.2])
    m = pair_metrics(labels, scores, threshold=0.5)
    # 9 positive-negative pairs; the positive wins 8 (0.3 loses to 0.7).
    assert m["ROC-AUC"] == pytest.approx(8 / 9)
    assert m["F1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))  # tp=2, fp=1, fn=1
    assert m["threshold_from_validation"]
    assert best_f1_threshold(labels, scores) in scores
    assert not pair_metrics(labels, scores)["threshold_from_validation"]
    with pytest.raises(ValueError, match="both positive and negative"):
        pair_metrics(np.ones(3), np.ones(3))


def test_losses():
    pos = torch.tensor([0.9, 0.2])
    neg = torch.tensor([[0.1, 0.5], [0.4, 0.0]])
    # margins: max(0, 0.5 - 0.9 + 0.1)=0, max(0, 0.5-0.9+0.5)=0.1, max(0, 0.5-0.2+0.4)=0.7, 0.3
    assert triplet_loss(pos, neg, 0.5).item() == pytest.approx((0 + 0.1 + 0.7 + 0.3) / 4)
    g = torch.Generator().manual_seed(0)  # the global RNG's state depends on the tests run before
    x = torch.randn(16, 8, generator=g)
    aligned = info_nce(x, x + 0.01 * torch.randn(16, 8, generator=g), 0.1)
    shuffled = info_nce(x, x[torch.randperm(16, generator=g)], 0.1)
    assert aligned < shuffled and aligned < 0.1


def test_cold_start_is_mean_of_nearest_in_content_space():
    content = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [1.0, 0.05]])
    behaviour = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0],
                                                            [0.0, 0.0, 1.0], [5.0, 5.0, 5.0]]), dim=1)
    out = ColdStart(k=2).fill("substitute", behaviour, content, np.array([3]))
    expect = torch.nn.functional.normalize(behaviour[[0, 1]].mean(0), dim=0)
    assert torch.allclose(out[3], expect) and torch.equal(out[:3], behaviour[:3])


def test_the_content_search_is_exact_in_blocks_of_any_size(monkeypatch):
    """Eq. 12's search holds at most SEARCH_CELLS similarities at once (memory at a large
    catalog); each query's nearest items do not depend on the block."""
    import mmsc_dgl.eval.evaluate as evaluate
    g = torch.Generator().manual_seed(0)
    content = torch.randn(80, 6, generator=g)
    warm = torch.rand(80, generator=g) > 0.3
    new = torch.randn(25, 6, generator=g)
    whole = evaluate.nearest_content(content, new, k=4, candidates=warm)
    unit, pool = torch.nn.functional.normalize(content, dim=1), torch.nonzero(warm).flatten()
    sims = torch.nn.functional.normalize(new, dim=1) @ unit[pool].t()
    assert torch.equal(whole, pool[sims.topk(4, dim=1).indices])
    import mmsc_dgl.eval.retrieval as retrieval
    blocks = []
    topk = retrieval.grouped_topk
    monkeypatch.setattr(retrieval, "grouped_topk", lambda scores, *a: blocks.append(len(scores)) or topk(scores, *a))
    monkeypatch.setattr(evaluate, "SEARCH_CELLS", 3 * int(warm.sum()))  # blocks of 3 queries
    assert torch.equal(evaluate.nearest_content(content, new, k=4, candidates=warm), whole)
    assert blocks == [3] * 8 + [1]


def _sampler_and_edges(n=60, seed=0):
    """A random symmetric graph over ``n`` items, its test edges (a quarter of them), and the
    sampler that excludes every true neighbour."""
    rng = np.random.default_rng(seed)
    pairs = {tuple(sorted(p)) for p in rng.integers(0, n, (240, 2)) if p[0] != p[1]}
    pairs = np.array(sorted(pairs))
    adj = [set() for _ in range(n)]
    for a, b in pairs:
        adj[a].add(int(b))
        adj[b].add(int(a))
    indptr = np.r_[0, np.cumsum([len(x) for x in adj])]
    indices = np.concatenate([sorted(x) for x in adj])
    exclude = {r: (indptr, indices) for r in ("substitute", "complement")}
    sampler = NegativeSampler(n, exclude, seed=0, num_negatives=20)
    test = pairs[rng.permutation(len(pairs))[: len(pairs) // 4]]
    return sampler, RelationEdges(test[:, 0], test[:, 1]), adj


def test_full_catalog_ranks_against_brute_force():
    n = 60
    sampler, test, adj = _sampler_and_edges(n)
    emb = torch.randn(n, 8, generator=torch.Generator().manual_seed(1))
    emb[7] = emb[3]  # a tie: it counts against the target
    query = np.arange(len(test))
    got = rank_full_catalog(emb, test, query, sampler, "substitute")
    scores = emb @ emb.T
    want = []
    for s, d in zip(test.src, test.dst):
        others = [j for j in range(n) if j != s and j != d and j not in adj[s]]
        want.append(1 + sum(bool(scores[s, j] >= scores[s, d]) for j in others))
    assert got.tolist() == want
    # the sampled negatives are some of those candidates: a target never ranks better against all
    sampled = rank_queries(emb, test, query, sampler, "substitute", "test")
    assert (got >= sampled).all() and (got > sampled).any()
    # a pair-scoring function over every item ranks the same as its embedding
    def pair(src, cand):
        return torch.einsum("qd,qmd->qm", emb[src], emb[cand])
    assert torch.equal(rank_full_catalog(pair, test, query, sampler, "substitute"), got)
    metrics = evaluate_embeddings({"substitute": emb, "complement": emb}, {"substitute": test, "complement": test},
                                  sampler, "test", full_catalog=True)
    assert metrics["substitute"]["HR@10"] == float((got <= 10).double().mean())


def test_sampler_neighbours_are_what_it_excludes():
    sampler, _, adj = _sampler_and_edges()
    items = np.array([5, 0, 5, 59])
    owner, nb = sampler.neighbours("complement", items)
    for k, item in enumerate(items):
        assert sorted(nb[owner == k].tolist()) == sorted(adj[item])


def test_test_metrics_per_training_degree_bucket():
    from mmsc_dgl.eval.evaluate import degree_buckets
    n = 60
    sampler, edges, _ = _sampler_and_edges(n)
    rng = np.random.default_rng(1)
    emb = torch.from_numpy(rng.normal(size=(n, 8))).float()
    degree = rng.integers(0, 15, size=n)
    buckets = degree_buckets(degree)
    split = {r: edges for r in ("substitute", "complement")}
    whole = evaluate_embeddings({r: emb for r in split}, split, sampler, "test", ks=[10])
    out = evaluate_embeddings({r: emb for r in split}, split, sampler, "test", ks=[10], buckets=buckets)
    parts = out["substitute"]["by_bucket"]
    assert list(parts) == [b for b in ("0", "1-2", "3-10", ">10") if b in parts] and len(parts) >= 3
    assert sum(p["queries"] for p in parts.values()) == whole["substitute"]["queries"]
    # the buckets' metrics, weighted by their queries, are the whole split's
    mean = sum(p["NDCG@10"] * p["queries"] for p in parts.values()) / whole["substitute"]["queries"]
    assert abs(mean - whole["substitute"]["NDCG@10"]) < 1e-9
    # and each is the metric of exactly the queries whose source is in the bucket
    src = edges.src
    some = next(iter(parts))
    ranks = rank_queries(emb, edges, np.arange(len(edges)), sampler, "substitute", "test")
    from mmsc_dgl.eval.ranking import ranking_metrics
    assert parts[some]["NDCG@10"] == ranking_metrics(ranks[torch.from_numpy(buckets[src] == some)], [10])["NDCG@10"]


def _warm_up_world(n=120, cold=8, per_item=9, seed=0):
    """Cold items whose held-out partners form a tight cluster in embedding space (one cluster
    per item), their content placement pointing elsewhere: only revealed edges can find them."""
    from types import SimpleNamespace
    rng = np.random.default_rng(seed)
    centres = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(cold, 16))).float(), dim=1)
    emb = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(n, 16))).float(), dim=1)
    items = np.arange(n - cold, n)
    src, dst = [], []
    for c, item in enumerate(items):
        partners = rng.choice(n - cold, size=per_item, replace=False)
        emb[partners] = torch.nn.functional.normalize(centres[c] + 0.05 * torch.randn(per_item, 16), dim=1)
        src += [item] * per_item
        dst += partners.tolist()
    src, dst = np.array(src), np.array(dst)
    half = len(src) // 2
    cold_edges = {"substitute": RelationEdges(src[:half], dst[:half]), "complement": RelationEdges(src[half:], dst[half:])}
    adj = [set() for _ in range(n)]
    for a, b in zip(src, dst):
        adj[a].add(int(b))
        adj[b].add(int(a))
    indptr = np.r_[0, np.cumsum([len(x) for x in adj])]
    indices = np.concatenate([sorted(x) for x in adj]).astype(np.int64)
    sampler = NegativeSampler(n, {r: (indptr, indices) for r in RELATIONS}, seed=0, num_negatives=50)
    return emb, SimpleNamespace(cold=cold_edges, cold_items=items, num_items=n), sampler


class _Rows(torch.nn.Module):
    """An embedding model with fixed rows (the Recommender contract's defaults)."""
    has_embeddings = True

    def __init__(self, emb):
        super().__init__()
        self.emb = emb

    def targets(self, relation, embedding):
        return embedding

    def ranking_scorer(self, relation, embedding, candidates=None, extra_edges=None):
        from mmsc_dgl.models.base import Recommender
        return Recommender.ranking_scorer(self, relation, embedding, candidates, extra_edges)

    def pair_term(self, relation, extra_edges=None, num_items=None):
        return None


def test_the_warm_up_plan_reveals_nested_edges_and_ranks_the_same_targets():
    from mmsc_dgl.eval.warm_up import warm_up_plan
    _, splits, _ = _warm_up_world()
    plan = warm_up_plan(splits, seed=3)
    assert plan.ks == (0, 1, 2, 5) and plan.items.tolist() == splits.cold_items.tolist()
    again = warm_up_plan(splits, seed=3)
    assert all(np.array_equal(plan.targets[r], again.targets[r]) for r in RELATIONS)
    shown = {k: {(r, a, b) for r, (s, d) in plan.revealed(splits, k).items() for a, b in zip(s.tolist(), d.tolist())}
             for k in plan.ks}
    assert shown[0] == set() and shown[1] <= shown[2] <= shown[5]
    per_item = {k: np.bincount([a for _, a, _ in shown[k]], minlength=splits.num_items)[splits.cold_items]
                for k in plan.ks}
    assert all((per_item[k] == k).all() for k in plan.ks)  # k edges of every item asked about
    ranked = {(r, int(splits.cold[r].src[i]), int(splits.cold[r].dst[i])) for r in RELATIONS for i in plan.targets[r]}
    assert not ranked & shown[5] and len(ranked) + len(shown[5]) == sum(len(splits.cold[r].src) for r in RELATIONS)
    # capped (the run's test_queries): a seeded subset of the items, each with all its targets
    capped = warm_up_plan(splits, seed=3, max_items=2)
    assert len(capped.items) == 2 and set(capped.items.tolist()) <= set(plan.items.tolist())
    assert np.array_equal(capped.items, warm_up_plan(splits, seed=3, max_items=2).items)
    for r in RELATIONS:
        kept = np.isin(splits.cold[r].src[plan.targets[r]], capped.items)
        assert np.array_equal(capped.targets[r], plan.targets[r][kept])
    # an item with too few held-out edges is not asked about
    splits.cold["substitute"] = RelationEdges(splits.cold["substitute"].src[4:], splits.cold["substitute"].dst[4:])
    assert len(warm_up_plan(splits, seed=3).items) == len(splits.cold_items) - 1


def test_revealed_edges_find_the_rest_of_a_new_items_partners(monkeypatch):
    from mmsc_dgl.eval.warm_up import warm_up_curve, warm_up_plan
    emb, splits, sampler = _warm_up_world()
    plan = warm_up_plan(splits, seed=0)
    rows = {r: emb for r in RELATIONS}
    curve = warm_up_curve(_Rows(emb), plan, splits, sampler, rows)
    ndcg = {k: np.mean([curve[r][str(k)]["NDCG@10"] for r in RELATIONS]) for k in plan.ks}
    assert ndcg[5] > ndcg[2] > ndcg[0] + 0.2 and ndcg[1] > ndcg[0]
    assert curve["items"] == len(splits.cold_items)
    # broken: if the revealed edges did not move the rows, nothing would be learnt from them
    monkeypatch.setattr(ColdStart, "with_edges", staticmethod(lambda rows, targets, items, partners, prior=2.0: rows))
    flat = warm_up_curve(_Rows(emb), plan, splits, sampler, rows)
    assert all(flat[r][str(k)]["NDCG@10"] == flat[r]["0"]["NDCG@10"] for r in RELATIONS for k in plan.ks)


def test_processes_sharing_the_queries_report_every_querys_metrics():
    """Data-parallel evaluation (``ShareQueries``): each of three processes ranks a third of the
    queries and gathers the others' ranks; each ends with the metrics of one process ranking all
    of them, to the bit, sampled and against the whole catalog, per bucket too."""
    from mmsc_dgl.eval.evaluate import degree_buckets
    from mmsc_dgl.distributed.training import ShareQueries
    n, world = 60, 3
    sampler, edges, _ = _sampler_and_edges(n)
    rng = np.random.default_rng(2)
    emb = torch.from_numpy(rng.normal(size=(n, 8))).float()
    split = {r: edges for r in RELATIONS}
    buckets = degree_buckets(rng.integers(0, 15, size=n))
    query = np.arange(len(edges))
    parts = [ShareQueries(rank, world).part(query) for rank in range(world)]
    assert sorted(np.concatenate(parts).tolist()) == query.tolist() and max(map(len, parts)) < len(query)

    ranked = 0
    for full in (False, True):
        want = evaluate_embeddings({r: emb for r in split}, split, sampler, "test", ks=[1, 10], buckets=buckets,
                                   max_queries=50, full_catalog=full)
        got, counts = run_sharing(world, lambda share: evaluate_embeddings(
            {r: emb for r in split}, split, sampler, "test", ks=[1, 10], buckets=buckets, max_queries=50,
            full_catalog=full, share=share))
        assert all(g == want for g in got), (got[0], want)
        ranked += sum(counts)
    assert ranked == 2 * len(RELATIONS) * 50  # every query ranked once per evaluation, not once per process


def test_processes_sharing_the_warm_up_targets_report_every_targets_metrics():
    """The warm-up curve with ``ShareQueries``: three processes each rank a third of every k's
    targets and all end with one process's curve, each target ranked once per k."""
    from mmsc_dgl.eval.warm_up import warm_up_curve, warm_up_plan
    emb, splits, sampler = _warm_up_world()
    plan = warm_up_plan(splits, seed=0)
    rows = {r: emb for r in RELATIONS}
    want = warm_up_curve(_Rows(emb), plan, splits, sampler, rows)
    got, ranked = run_sharing(3, lambda share: warm_up_curve(_Rows(emb), plan, splits, sampler, rows, share=share))
    assert all(g == want for g in got), (got[0], want)
    assert sum(ranked) == len(plan.ks) * sum(len(plan.targets[r]) for r in RELATIONS)
