"""Two-hop path counts (ops.paths) against dense matrix products, and MMSC's path-evidence term."""
import pytest
import torch

from mmsc_dgl import RELATIONS
from mmsc_dgl.models.losses import sampled_softmax_loss
from mmsc_dgl.nn import PathEvidence
from mmsc_dgl.ops.paths import PathCounter, undirected


def random_graphs(n=120, edges=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    graphs, dense = {}, {}
    for name in ("s", "c"):
        src, dst = torch.randint(0, n, (edges,), generator=g), torch.randint(0, n, (edges,), generator=g)
        graphs[name] = undirected(src, dst, n)
        a = torch.zeros(n, n)
        keep = src != dst
        a[src[keep], dst[keep]] = 1
        a[dst[keep], src[keep]] = 1
        dense[name] = a
    return graphs, dense, torch.rand(n, generator=g) + 0.1


def test_pair_and_row_counts_match_dense_products():
    graphs, dense, w = random_graphs()
    counter = PathCounter(graphs, w)
    g = torch.Generator().manual_seed(1)
    src, dst = torch.randint(0, 120, (40, 9), generator=g), torch.randint(0, 120, (40, 9), generator=g)
    for x in "sc":
        for y in "sc":
            want = (dense[x] * w) @ dense[y]
            torch.testing.assert_close(counter.pairs(x, y, src, dst), want[src, dst])
            torch.testing.assert_close(counter.rows(x, y, src[:, 0]), want[src[:, 0]])
    # unweighted: common neighbours
    plain = PathCounter(graphs)
    torch.testing.assert_close(plain.pairs("s", "s", src, dst), (dense["s"] @ dense["s"])[src, dst])
    torch.testing.assert_close(counter.unweighted().pairs("s", "c", src, dst), (dense["s"] @ dense["c"])[src, dst])


def test_pairs_walked_in_blocks_give_one_pass_sums_to_the_bit(monkeypatch):
    """Walks are expanded at most WALK_BLOCK first hops at a time (memory); each pair stays in one
    block, so the counts equal one unbounded pass exactly, and the dense products."""
    import mmsc_dgl.ops.paths as paths
    graphs, dense, w = random_graphs()
    counter = PathCounter(graphs, w)
    g = torch.Generator().manual_seed(2)
    src, dst = torch.randint(0, 120, (60, 11), generator=g), torch.randint(0, 120, (60, 11), generator=g)
    whole = {(x, y): counter.pairs(x, y, src, dst) for x in "sc" for y in "sc"}
    blocks = []
    expand = paths._expand
    monkeypatch.setattr(paths, "_expand", lambda graph, nodes, tags: blocks.append(len(nodes)) or expand(graph, nodes, tags))
    monkeypatch.setattr(paths, "WALK_BLOCK", 7)
    for (x, y), want in whole.items():
        got = counter.pairs(x, y, src, dst)
        assert torch.equal(got, want)
        torch.testing.assert_close(got, ((dense[x] * w) @ dense[y])[src, dst])
    assert len(blocks) > 50 and max(blocks) < src.numel() // 4  # many blocks, each a small part of the pairs


def test_the_pair_table_holds_every_pair_feature_the_walks_give():
    """Issue 32: the evidence features of every pair are built once (PairTable) and looked up
    per step; they equal the per-pair walks and the dense products, for pairs with and without
    paths, and the evidence term gives the same values and gradients either way."""
    from mmsc_dgl.ops.paths import pair_table
    graphs, dense, w = random_graphs()
    counter = PathCounter(graphs, w)
    metapaths, links = [(x, y) for x in "sc" for y in "sc"], ["s", "c"]
    table = pair_table(counter, metapaths, links)
    g = torch.Generator().manual_seed(3)
    src, dst = torch.randint(0, 120, (40, 9), generator=g), torch.randint(0, 120, (40, 9), generator=g)
    got = table.lookup(src, dst)
    assert got.shape == (40, 9, 6)
    for f, (x, y) in enumerate(metapaths):
        torch.testing.assert_close(got[..., f], ((dense[x] * w) @ dense[y])[src, dst])
    for f, x in enumerate(links, start=4):
        torch.testing.assert_close(got[..., f], dense[x][src, dst])
    assert (got == 0).all(-1).any() and (got != 0).any(-1).any()  # both kinds of pair were asked
    # over its budget there is no table, and the evidence walks the pairs instead
    assert pair_table(counter, metapaths, links, budget=10_000) is None
    with_table = PathEvidence(counter, RELATIONS, hidden=8)
    assert with_table._table is not None
    walked = PathEvidence(counter, RELATIONS, hidden=8)
    walked.load_state_dict(with_table.state_dict())
    walked._table = None
    for r in RELATIONS:
        a, b = with_table.pair_scores(src, dst, r), walked.pair_scores(src, dst, r)
        torch.testing.assert_close(a, b)
        ga = torch.autograd.grad(a.sum(), list(with_table.mlp[r].parameters()))
        gb = torch.autograd.grad(b.sum(), list(walked.mlp[r].parameters()))
        for x, y in zip(ga, gb):
            torch.testing.assert_close(x, y)
    # new items' edges change the counts: that evidence walks its pairs
    assert with_table.with_edges({"s": (torch.tensor([0]), torch.tensor([1]))}, 121)._table is None


def test_sparse_reach_holds_every_nonzero_count_once():
    graphs, dense, w = random_graphs(seed=2)
    counter = PathCounter(graphs, w)
    src = torch.tensor([5, 0, 5, 119, 33])  # a repeated query answers twice
    for x in "sc":
        for y in "sc":
            row, col, value = counter.reached(x, y, src)
            want = ((dense[x] * w) @ dense[y])[src]
            got = torch.zeros_like(want)
            got[row, col] = value
            torch.testing.assert_close(got, want)
            assert (value > 0).all() and torch.unique(row * 120 + col).numel() == row.numel()
        row, col = counter.neighbours(x, src)
        got = torch.zeros(len(src), 120)
        got[row, col] = 1
        torch.testing.assert_close(got, dense[x][src])


def test_middle_items_of_many_pairs_equal_the_one_pair_reference():
    from mmsc_dgl.eval.explain import middle_item, middle_items
    graphs, _, _ = random_graphs(n=60, edges=300, seed=6)
    g = torch.Generator().manual_seed(3)
    src, dst = torch.randint(0, 60, (400,), generator=g), torch.randint(0, 60, (400,), generator=g)
    src[:5] = dst[:5]  # a pair of an item with itself: neither end is its own middle
    # weights with many ties (the first middle in adjacency order wins) and without
    for w in (torch.randint(1, 4, (60,), generator=g).float(), torch.rand(60, generator=g)):
        counter = PathCounter(graphs, w)
        for x in "sc":
            for y in "sc":
                want = [middle_item(counter, x, y, int(a), int(b)) for a, b in zip(src, dst)]
                got = middle_items(counter, x, y, src, dst).tolist()
                assert got == [-1 if k is None else k for k in want]
                assert sum(k is not None for k in want) > 20


def test_evidence_against_the_whole_catalog_equals_every_item_as_a_candidate():
    graphs, dense, w = random_graphs(seed=4)
    torch.manual_seed(0)
    evidence = PathEvidence(PathCounter(graphs, w), RELATIONS, hidden=8)
    src = torch.tensor([0, 17, 17, 64, 100, 119])
    every = torch.arange(120).expand(len(src), -1)
    for r in RELATIONS:
        term = evidence.frozen(r)
        torch.testing.assert_close(term.catalog(src), term(src, every))
        torch.testing.assert_close(term.catalog(src), evidence.candidate_scores(src, every, r))
    row, col, features = evidence.reached(src)
    assert (features != 0).any(1).all()  # only pairs with a feature are scored one by one
    # The calibration (set after training) adds its link bonus once per other-relation edge and
    # its path weight times log(1 + the path counts), by every route; a term taken before keeps its own.
    before = {r: evidence.frozen(r) for r in RELATIONS}
    for r in RELATIONS:
        getattr(evidence, f"link_bonus_{r}").fill_(0.75)
        getattr(evidence, f"path_bonus_{r}").fill_(0.4)
        term = evidence.frozen(r)
        links = sum(evidence.counter.linked(x, src.unsqueeze(1).expand_as(every), every) for x in evidence.links)
        paths = torch.log1p(sum(evidence.counter.pairs(x, y, src.unsqueeze(1).expand_as(every), every)
                                for x, y in evidence.metapaths))
        assert links.sum() > 0 and paths.sum() > 0
        torch.testing.assert_close(term(src, every), before[r](src, every) + 0.75 * links + 0.4 * paths)
        per_path = torch.stack([evidence.counter.pairs(x, y, src.unsqueeze(1).expand_as(every), every)
                                for x, y in evidence.metapaths], -1)
        torch.testing.assert_close(evidence.calibration_features(src, every, r),
                                   torch.cat([links.unsqueeze(-1), per_path], -1))
        torch.testing.assert_close(term.catalog(src), term(src, every))
        torch.testing.assert_close(evidence.candidate_scores(src, every, r), term(src, every))
        torch.testing.assert_close(before[r].catalog(src), before[r](src, every))
        # the path weight counts only the meta-paths its mask keeps, by every route
        mask = getattr(evidence, f"path_mask_{r}")
        mask.copy_(torch.tensor([0.0, 1.0, 1.0, 0.0]))
        kept = torch.log1p(per_path[..., 1:3].sum(-1))
        assert not torch.equal(kept, paths)
        masked = evidence.frozen(r)
        torch.testing.assert_close(masked(src, every), before[r](src, every) + 0.75 * links + 0.4 * kept)
        torch.testing.assert_close(masked.catalog(src), masked(src, every))
        torch.testing.assert_close(evidence.candidate_scores(src, every, r), masked(src, every))
        torch.testing.assert_close(term(src, every), before[r](src, every) + 0.75 * links + 0.4 * paths)  # its own
    # weights saved before the calibration (or before its choice of paths) existed load with none
    state = {k: v for k, v in evidence.state_dict().items() if "_bonus_" not in k and "path_mask" not in k}
    evidence.load_state_dict(state)
    assert all(float(getattr(evidence, f"{k}_{r}")) == 0 for r in RELATIONS for k in ("link_bonus", "path_bonus"))
    assert all(bool((getattr(evidence, f"path_mask_{r}") == 1).all()) for r in RELATIONS)


def test_candidate_stage_with_an_exact_search_is_the_exact_ranking():
    from mmsc_dgl.eval.retrieval import exact_search, topk_all, topk_searched
    graphs, _, w = random_graphs(seed=6)
    torch.manual_seed(0)
    evidence = PathEvidence(PathCounter(graphs, w), RELATIONS, hidden=8)
    with torch.no_grad():  # a term large enough to reorder the dot products
        evidence.mlp["complement"][2].weight.mul_(20)
    emb = torch.randn(120, 6)
    term = evidence.frozen("complement")
    queries = torch.tensor([0, 3, 3, 50, 119, 64])
    want_scores, want = topk_all(emb, 7, queries=queries, pair_term=term.catalog)
    for slack, block in ((32, 1024), (0, 2)):  # no slack: queries whose hits are all path-reached ask again
        scores, got = topk_searched(emb, 7, exact_search(emb), queries=queries, sparse_term=term.sparse,
                                    slack=slack, block_size=block)
        assert got.tolist() == want.tolist()
        torch.testing.assert_close(scores, want_scores)
    # without a term: the search's own top-k, never the query itself
    assert topk_searched(emb, 5, exact_search(emb))[1].tolist() == topk_all(emb, 5)[1].tolist()

    def few(vectors, k):  # an index that holds only 10 items per query (an IVF's probed clusters)
        found = exact_search(emb)(vectors, 10)
        return torch.cat([found, found.new_full((len(found), max(0, k - 10)), -1)], 1)[:, :k]
    scores, got = topk_searched(emb, 7, few, queries=queries, sparse_term=term.sparse, slack=0)
    assert (got >= 0).all() and all(len(set(row)) == 7 for row in got.tolist())


def test_faiss_candidate_stage_matches_the_exact_ranking_with_a_flat_index():
    pytest.importorskip("faiss")
    from mmsc_dgl.eval.retrieval import faiss_search, topk_all, topk_searched
    graphs, _, w = random_graphs(seed=7)
    evidence = PathEvidence(PathCounter(graphs, w), RELATIONS, hidden=8)
    emb = torch.randn(120, 6)
    term = evidence.frozen("substitute")
    _, want = topk_all(emb, 5, pair_term=term.catalog)
    _, got = topk_searched(emb, 5, faiss_search(emb), sparse_term=term.sparse)  # 120 items: a flat index
    assert got.tolist() == want.tolist()


def test_counts_ignore_the_pair_own_edge_and_empty_graphs():
    n = 6
    path = undirected(torch.tensor([0, 1]), torch.tensor([1, 2]), n)  # 0 - 1 - 2
    closed = undirected(torch.tensor([0, 1, 0]), torch.tensor([1, 2, 2]), n)  # plus the edge 0 - 2
    empty = undirected(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), n)
    for g in (path, closed):
        counter = PathCounter({"s": g, "c": empty})
        assert counter.pairs("s", "s", torch.tensor([0]), torch.tensor([2])).tolist() == [1.0]
        assert counter.pairs("s", "c", torch.tensor([0]), torch.tensor([2])).tolist() == [0.0]
        assert counter.rows("c", "s", torch.tensor([0])).abs().sum() == 0


def test_evidence_candidate_route_matches_pair_route():
    graphs, dense, w = random_graphs(seed=3)
    torch.manual_seed(0)
    evidence = PathEvidence(PathCounter(graphs, w), RELATIONS, hidden=8)
    src = torch.arange(10)
    cand = torch.randint(0, 120, (10, 80))  # >= 64 candidates: the dense-row route
    for r in RELATIONS:
        rows = evidence.candidate_scores(src, cand, r)
        pairs = evidence(evidence.counts(src.unsqueeze(1).expand_as(cand), cand), r)
        torch.testing.assert_close(rows, pairs)
    assert evidence.names == ["s-s", "s-c", "c-s", "c-c", "s", "c"]
    links = evidence.counts(src.unsqueeze(1).expand_as(cand), cand)[..., 4:]
    torch.testing.assert_close(links, torch.stack([dense[x][src.unsqueeze(1), cand] for x in "sc"], -1))


def test_query_counts_take_the_cheaper_route_and_both_routes_agree():
    """Dense rows over a small catalog, each pair's walks over a large sparse one (a million
    items made validation and calibration walk dense rows of a million slots per query); the
    route never changes the counts."""
    graphs, _, w = random_graphs(seed=4)
    small = PathEvidence(PathCounter(graphs, w), RELATIONS, hidden=8)
    assert small.dense_rows_cheaper(1001) and not small.dense_rows_cheaper(63)
    g = torch.Generator().manual_seed(5)
    n = 200_000
    sparse = {name: undirected(torch.randint(0, n, (150_000,), generator=g),
                               torch.randint(0, n, (150_000,), generator=g), n) for name in ("s", "c")}
    large = PathEvidence(PathCounter(sparse, torch.rand(n, generator=g) + 0.1), RELATIONS, hidden=8)
    assert not large.dense_rows_cheaper(1001)
    src = torch.randint(0, n, (6,), generator=g)
    # candidates that share paths with their query: its two-hop ends, then random items
    near = [large.counter.reached("s", "c", src[i: i + 1])[1][:40] for i in range(6)]
    cand = torch.randint(0, n, (6, 1001), generator=g)
    for i, ends in enumerate(near):
        cand[i, : ends.numel()] = ends
    walked = large.query_counts(src, cand)
    assert float(walked[..., :4].sum()) > 0
    torch.testing.assert_close(walked, large.candidate_counts(src, cand))


def test_links_never_show_a_relation_its_own_edges_and_old_weights_load_unchanged():
    graphs, _, w = random_graphs(seed=5)
    graphs = {"substitute": graphs["s"], "complement": graphs["c"]}
    torch.manual_seed(0)
    evidence = PathEvidence(PathCounter(graphs, w), RELATIONS, hidden=8)
    src, dst = torch.arange(30), torch.randint(0, 120, (30,))
    counts = evidence.counts(src, dst)
    for r in RELATIONS:
        own = 4 + evidence.links.index(r)
        other = 4 + evidence.links.index(next(x for x in RELATIONS if x != r))
        flipped = counts.clone()
        flipped[:, own] = 1 - flipped[:, own]
        torch.testing.assert_close(evidence(flipped, r), evidence(counts, r))  # its own edges: no effect
        flipped = counts.clone()
        flipped[:, other] = 1 - flipped[:, other]
        assert not torch.allclose(evidence(flipped, r), evidence(counts, r))  # the other relation's: seen
    # weights saved before the links existed: the same function, the links weighted zero
    old = PathEvidence(PathCounter(graphs, w), RELATIONS, hidden=8, links=False)
    assert old.names == ["substitute-substitute", "substitute-complement", "complement-substitute",
                         "complement-complement"]
    evidence.load_state_dict(old.state_dict())
    for r in RELATIONS:
        torch.testing.assert_close(evidence(counts, r), old(counts[:, :4], r))


def test_sampled_softmax_loss_is_cross_entropy_with_the_positive_first():
    pos, neg = torch.tensor([2.0, -1.0]), torch.tensor([[0.0, 1.0], [0.5, -3.0]])
    want = -(torch.log_softmax(torch.tensor([[2.0, 0.0, 1.0], [-1.0, 0.5, -3.0]]), 1)[:, 0]).mean()
    torch.testing.assert_close(sampled_softmax_loss(pos, neg), want)
    assert sampled_softmax_loss(torch.tensor([50.0]), torch.tensor([[0.0]])) < 1e-6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from mmsc_dgl.config import SyntheticConfig
    from mmsc_dgl.data.dataset import load_dataset
    from mmsc_dgl.data.prepare import prepare
    out = tmp_path_factory.mktemp("ev") / "ds"
    prepare(synthetic=SyntheticConfig(num_items=300, seed=4), out=out, progress=False)
    return load_dataset(out)


def test_mmsc_score_is_dot_plus_path_evidence(tiny):
    from mmsc_dgl.config import ModelConfig
    from mmsc_dgl.metapath import build_metapath_tables
    from mmsc_dgl.models import MMSC
    tables = build_metapath_tables(tiny.train_graph(), "s,c,s-c", max_neighbors=4, progress=False)
    torch.manual_seed(0)
    model = MMSC(300, tables, ModelConfig(hidden=16, heads=2, ssl_nodes=16), None, graph_edges=tiny.splits.train)
    model.eval()
    src, dst = torch.tensor([0, 5, 7, 11]), torch.tensor([1, 2, 9, 3])
    cand = torch.randint(0, 300, (4, 70))
    for r in RELATIONS:
        emb = model.embed(r)
        targets = model.targets(r, emb)  # complements: emb times the signature
        term = model.evidence.pair_scores(src, dst, r)
        torch.testing.assert_close(model.score(src, dst, r), (emb[src] * targets[dst]).sum(-1) + term,
                                   rtol=1e-5, atol=1e-5)
        scorer = model.ranking_scorer(r, emb)
        dot = (emb[src].unsqueeze(1) * targets[cand]).sum(-1)
        torch.testing.assert_close(scorer(src, cand) - dot, model.evidence.candidate_scores(src, cand, r))
        torch.testing.assert_close(scorer(src, cand), model.score(src.unsqueeze(1).expand_as(cand), cand, r),
                                   rtol=1e-4, atol=1e-4)
    model.train()
    g = torch.Generator().manual_seed(0)
    batch = {"generator": g, "substitute": (src, dst, torch.randint(0, 300, (4, 3), generator=g))}
    model.loss(batch)["total"].backward()
    assert sum(p.grad.abs().sum() for p in model.evidence.mlp["substitute"].parameters()) > 0
    with pytest.raises(ValueError, match="graph_edges"):
        MMSC(300, tables, ModelConfig(hidden=16, heads=2, graph_branch=0), None)


def test_each_relation_is_evaluated_with_its_own_selected_evidence_weights(tiny):
    """The trainer keeps each relation's best epoch; evaluation loads them in turn.  The pair
    term must be the one of the relation's own weights, not of the last relation loaded."""
    from mmsc_dgl.config import ModelConfig, TrainConfig
    from mmsc_dgl.eval.evaluator import Evaluator
    from mmsc_dgl.metapath import build_metapath_tables
    from mmsc_dgl.models import MMSC
    tables = build_metapath_tables(tiny.train_graph(), "s,c,s-c", max_neighbors=4, progress=False)
    torch.manual_seed(0)
    model = MMSC(300, tables, ModelConfig(hidden=16, heads=2, ssl_nodes=16), None, graph_edges=tiny.splits.train)
    mine = {k: v.clone() for k, v in model.state_dict().items()}
    other = {k: v.clone() for k, v in mine.items()}
    for k in other:
        if k.startswith("evidence.mlp.substitute."):
            other[k] = -10 * other[k] + 1  # an epoch whose substitute evidence is very different
    evaluator = Evaluator(tiny, TrainConfig(val_queries=100))
    alone = evaluator.evaluate(model, {r: mine for r in RELATIONS})["test"]["substitute"]
    # substitute's selected weights are `mine`; complement's epoch differs only in the
    # substitute MLP, which complement never uses
    both = evaluator.evaluate(model, {"substitute": mine, "complement": other})["test"]["substitute"]
    assert both == alone
    swapped = evaluator.evaluate(model, {"substitute": other, "complement": mine})["test"]["substitute"]
    assert swapped != alone  # the check can fail: the substitute MLP does move its metrics
    # a pair term keeps the weights it was taken with
    term = model.pair_term("substitute")
    src, cand = torch.tensor([0, 5]), torch.randint(0, 300, (2, 70))
    before = term(src, cand)
    model.load_state_dict(other)
    torch.testing.assert_close(term(src, cand), before)
    assert not torch.allclose(model.pair_term("substitute")(src, cand), before)


def test_normalised_conv_matches_dense_lightgcn_propagation():
    from mmsc_dgl.nn import NormalisedConv
    graphs, dense, _ = random_graphs(n=60, edges=150, seed=5)
    a = dense["s"]
    deg = a.sum(1)
    torch.manual_seed(0)
    conv = NormalisedConv(8, 4, activation=None)
    x = torch.randn(60, 8, requires_grad=True)
    rows = torch.tensor([3, 0, 17, 59])
    csr = graphs["s"].select_rows(rows)
    out = conv(csr, x, deg_dst=graphs["s"].degrees[rows], deg_src=graphs["s"].degrees)
    norm = a / torch.sqrt(deg.clamp(min=1)[:, None] * deg.clamp(min=1)[None, :])
    want = conv.linear(norm[rows] @ x) * (deg[rows] > 0).float()[:, None]
    torch.testing.assert_close(out, want)
    g1, = torch.autograd.grad(out.sum(), x)
    g2, = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(g1, g2)


def test_mmsc_with_full_first_hop_trains(tiny):
    from mmsc_dgl.config import ModelConfig
    from mmsc_dgl.metapath import build_metapath_tables
    from mmsc_dgl.models import MMSC
    tables = build_metapath_tables(tiny.train_graph(), "s,c-s", max_neighbors=4, progress=False)
    model = MMSC(300, tables, ModelConfig(hidden=16, heads=2, ssl_nodes=16, full_first_hop=True), None,
                 graph_edges=tiny.splits.train)
    assert {"first_hop", "evidence"} <= {k.split(".")[0] for k in model.state_dict()}
    g = torch.Generator().manual_seed(0)
    src, dst = torch.tensor([0, 5, 7]), torch.tensor([1, 2, 9])
    model.loss({"generator": g, "complement": (src, dst, torch.randint(0, 300, (3, 2), generator=g))})["total"].backward()
    assert model.first_hop["complement"].linear.weight.grad.abs().sum() > 0


def test_recommend_is_exact_and_explained(tiny, tmp_path, monkeypatch):
    import pyarrow.parquet as pq
    from mmsc_dgl.config import ModelConfig, TrainConfig
    from mmsc_dgl.runs.load import load_run
    from mmsc_dgl.runs.query import recommend
    from mmsc_dgl.runs.training import train
    config = TrainConfig(metapaths="s,c,s-c", max_neighbors=4, epochs=2, batch_size=256, val_queries=100,
                         model=ModelConfig(hidden=16, heads=2, semantic_hidden=8, ssl_nodes=32))
    run_dir = tmp_path / "run"
    train(tiny.root, run_dir, config, progress=False)
    ids = tiny.catalog.ids.to_pylist()
    # an item with two-hop neighbours, so some pick is joined by a path
    degrees = torch.bincount(torch.as_tensor(tiny.splits.train["substitute"].src), minlength=len(ids))
    item = ids[int(torch.argmax(degrees))]
    rows = recommend(run_dir, "substitute", k=8, item=item, explain=True)
    run = load_run(run_dir)
    model = run.use_relation("substitute")
    node = ids.index(item)
    every = torch.arange(len(ids))
    with torch.no_grad():
        exact = model.score(torch.full_like(every, node), every, "substitute")
    exact[node] = float("-inf")
    best = torch.topk(exact, 8)
    assert [r["item_id"] for r in rows] == [ids[j] for j in best.indices.tolist()]
    torch.testing.assert_close(torch.tensor([r["score"] for r in rows]), best.values, rtol=1e-4, atol=1e-4)
    names = ["substitute-substitute", "substitute-complement", "complement-substitute", "complement-complement"]
    for row in rows:
        parts = row["embedding"] + row["structure_base"] + sum(v for key, v in row.items()
                                                               if key.startswith("structure["))
        assert abs(parts - row["score"]) < 1e-3, row
        assert "linked[complement]" in row and "linked[substitute]" not in row  # never its own relation
        if not row["linked[complement]"]:
            assert abs(row["structure[complement]"]) < 1e-6
        for n in names:
            assert (row[f"paths[{n}]"] > 0) == (row[f"via[{n}]"] is not None)
            if row[f"paths[{n}]"] == 0:
                assert abs(row[f"structure[{n}]"]) < 1e-6
    assert any(row[f"paths[{n}]"] for row in rows for n in names)
    from click.testing import CliRunner
    from mmsc_dgl.cli import main
    shown = CliRunner().invoke(main, ["recommend", str(run_dir), "--item", item, "--relation", "substitute",
                                      "-k", "3", "--explain"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("embedding ") == 3 and "structure base" in shown.output
    out = tmp_path / "recs.parquet"
    monkeypatch.setattr("mmsc_dgl.runs.query.EXPLAIN_BLOCK", 7)  # blocks that cut through an item's picks
    recommend(run_dir, "substitute", k=3, out=out, explain=True)
    table = pq.read_table(out)
    assert table.num_rows == 3 * len(ids) and "structure[substitute-complement]" in table.column_names
    first = table.slice(3 * node, 3).to_pylist()
    assert [r["recommended_id"] for r in first] == [r["item_id"] for r in rows[:3]]
    # every pick explained at once gives what one item's explanation does
    for whole, one in zip(first, rows[:3]):
        for key, value in one.items():
            if key in ("rank", "item_id", "title", "score"):
                continue
            assert whole[key] == pytest.approx(value, abs=1e-5) if isinstance(value, float) else whole[key] == value, key
    # the candidate stage: FAISS's hits plus the path-reached items, re-ranked exactly
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is None:
        ann = CliRunner().invoke(main, ["recommend", str(run_dir), "--item", item, "--relation", "substitute",
                                        "--ann"])
        assert ann.exit_code == 2 and "mmsc_dgl[faiss]" in ann.output and "Traceback" not in ann.output
    else:
        ann_rows = recommend(run_dir, "substitute", k=8, item=item, ann=True)
        assert [r["item_id"] for r in ann_rows] == [r["item_id"] for r in rows]  # a flat index: exact
        recommend(run_dir, "substitute", k=3, out=tmp_path / "ann.parquet", ann=True)
        assert pq.read_table(tmp_path / "ann.parquet").column("recommended_id").to_pylist() == \
            table.column("recommended_id").to_pylist()


def test_graph_branch_is_lightgcn_over_each_relation(tiny):
    from mmsc_dgl.config import ModelConfig
    from mmsc_dgl.metapath import build_metapath_tables
    from mmsc_dgl.models import MMSC
    tables = build_metapath_tables(tiny.train_graph(), "s,c", max_neighbors=4, progress=False)
    torch.manual_seed(0)
    model = MMSC(300, tables, ModelConfig(hidden=16, heads=2, ssl_nodes=16, graph_branch=2), None,
                 graph_edges=tiny.splits.train)
    for r in RELATIONS:
        edges = tiny.splits.train[r]
        a = torch.zeros(300, 300)
        src, dst = torch.as_tensor(edges.src), torch.as_tensor(edges.dst)
        keep = src != dst
        a[src[keep], dst[keep]] = 1
        a[dst[keep], src[keep]] = 1
        d = a.sum(1).clamp(min=1).rsqrt()
        a_hat = d[:, None] * a * d[None, :]
        e0 = model.graph_branch.shared.weight + model.graph_branch.relation[r].weight
        want = (e0 + a_hat @ e0 + a_hat @ (a_hat @ e0)) / 3
        torch.testing.assert_close(model.graph_representation(r), want, rtol=1e-4, atol=1e-5)
        nodes = torch.tensor([0, 3, 9])
        emb = model.embed(r)
        assert emb.shape == (300, 32)  # the projection and the graph branch, concatenated
        torch.testing.assert_close(emb[nodes, 16:], want[nodes].detach(), rtol=1e-4, atol=1e-5)


def test_graph_branch_cap_reads_the_precomputed_table(tiny):
    """``graph_branch_cap`` at least every row's size gives the exact graph branch; the table
    moves with the model and is not in its state_dict."""
    from mmsc_dgl.config import ModelConfig
    from mmsc_dgl.metapath import build_metapath_tables
    from mmsc_dgl.models import MMSC
    from mmsc_dgl.schema import RELATIONS
    tables = build_metapath_tables(tiny.train_graph(), "s,c", max_neighbors=4, progress=False)
    config = dict(hidden=16, heads=2, ssl_nodes=16, graph_branch=2)
    torch.manual_seed(0)
    exact = MMSC(300, tables, ModelConfig(**config), None, graph_edges=tiny.splits.train)
    capped = MMSC(300, tables, ModelConfig(**config, graph_branch_cap=300), None, graph_edges=tiny.splits.train)
    capped.load_state_dict(exact.state_dict())
    exact.eval(), capped.eval()
    assert set(capped.state_dict()) == set(exact.state_dict())
    assert "cap=300" in repr(capped.graph_branch)
    nodes = torch.tensor([0, 7, 7, 299])
    for r in RELATIONS:
        torch.testing.assert_close(capped.graph_representation(r), exact.graph_representation(r), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(capped(nodes, r), exact(nodes, r), rtol=1e-4, atol=1e-5)
    cut = MMSC(300, tables, ModelConfig(**config, graph_branch_cap=4), None, graph_edges=tiny.splits.train)
    assert cut.graph_branch._columns["substitute"].shape == (300, 4)
    assert cut.graph_branch(RELATIONS[0], nodes).shape == (4, 16)


def test_calibration_is_chosen_on_validation_and_kept_with_the_weights(tiny, tmp_path):
    import json
    from mmsc_dgl.config import ModelConfig, TrainConfig
    from mmsc_dgl.eval.evaluate import evaluate_embeddings
    from mmsc_dgl.models.calibration import LINK_GRID, PATH_GRID, SUBSET_Z
    from mmsc_dgl.runs.load import load_run
    from mmsc_dgl.runs.training import train
    config = TrainConfig(metapaths="s,c,s-c", max_neighbors=4, epochs=2, batch_size=256, val_queries=100,
                         model=ModelConfig(hidden=16, heads=2, semantic_hidden=8, ssl_nodes=32))
    run_dir = tmp_path / "run"
    train(tiny.root, run_dir, config, progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = load_run(run_dir)

    def validation(state, r):  # the slow way: the weights set in the model, every candidate scored
        run.model.load_state_dict(state)
        scorer = run.model.ranking_scorer(r, run.model.embed(r))
        return evaluate_embeddings({x: scorer for x in RELATIONS}, tiny.splits.val, run.evaluator.sampler, "val",
                                   ks=[10], max_queries=config.val_queries, seed=config.seed)[r]["NDCG@10"]

    names = run.model.evidence.path_names
    moved = False
    for r in RELATIONS:
        chosen = metrics["calibration"][r]
        state = run.relation_states[r]
        keys = (f"evidence.link_bonus_{r}", f"evidence.path_bonus_{r}", f"evidence.path_mask_{r}")
        # the weights saved with the run carry the choice, and scoring uses it
        assert [float(state[k]) for k in keys[:2]] == pytest.approx([chosen["link_bonus"], chosen["path_bonus"]])
        assert [n for n, m in zip(names, state[keys[2]].tolist()) if m] == chosen["path_metapaths"]
        assert chosen["link_bonus"] in LINK_GRID and chosen["path_bonus"] in PATH_GRID
        best = validation(state, r)
        assert best == pytest.approx(chosen["val_NDCG@10"]["calibrated"], abs=1e-9)
        none = validation({**state, keys[0]: torch.tensor(0.0), keys[1]: torch.tensor(0.0)}, r)
        assert none == pytest.approx(chosen["val_NDCG@10"]["uncalibrated"], abs=1e-9)
        # no setting on the grid does better on validation than the one chosen
        for link, path, mask in ((2.0, 0.0, [1, 1, 1, 1]), (0.0, 1.6, [1, 1, 1, 1]), (0.5, 0.4, [1, 1, 1, 1]),
                                 (0.0, 0.8, [0, 1, 1, 0]), (0.0, 0.8, [1, 0, 0, 1])):
            # the mask over the behaviour paths (content paths, where the run has them, are the MLP's)
            full = torch.zeros(len(names))
            full[[i for i, on in zip(run.model.evidence.behaviour_paths, mask) if on]] = 1
            other = validation({**state, keys[0]: torch.tensor(link), keys[1]: torch.tensor(path),
                                keys[2]: full}, r)
            # a subset of the paths may win validation by chance only: then its margin is reported
            by_chance = mask != [1, 1, 1, 1] and chosen["subset_z"] is not None and chosen["subset_z"] <= SUBSET_Z
            assert other <= best + 1e-9 or by_chance
            moved |= other != best
    assert moved  # the weights change the ranking on this data, so the checks above can fail
    assert run.evaluate()["test"] == metrics["test"]  # evaluate reads the same weights back
    # the calibration acts after training: a finished run resumed without it is only re-evaluated
    off = config.model_copy(update={"model": config.model.model_copy(update={"calibrate": False})})
    assert off.resume_identity() == config.resume_identity()
    again = train(tiny.root, run_dir, off, resume=True, progress=False)
    assert again.history == json.loads((run_dir / "history.json").read_text())
    assert "calibration" not in again.metrics
    assert load_run(run_dir).relation_states["substitute"]["evidence.link_bonus_substitute"] == 0


def test_a_subset_of_the_paths_must_beat_all_of_them_by_a_margin_in_standard_errors():
    from mmsc_dgl.models.calibration import _choose
    every, gen = (0, 1, 2, 3), torch.Generator().manual_seed(0)
    base = torch.rand(400, generator=gen, dtype=torch.float64)
    noise = torch.rand(400, generator=gen, dtype=torch.float64) * 0.6
    noise -= noise.mean()  # spread 0.17, so the standard error of the margin 0.01 is 0.009
    tried = {(0.0, 0.0, every): base - 0.05, (0.0, 0.4, every): base,
             (0.0, 0.4, (1, 2)): base + 0.01 + noise}  # better on average, by far less than its spread
    chosen, z = _choose(tried, every, 2.0)
    assert chosen == (0.0, 0.4, every) and 0 < z < 2.0
    assert _choose(tried, every, 0.0)[0] == (0.0, 0.4, (1, 2))  # without the margin: the plain best
    tried[(0.0, 0.8, (1, 2))] = base + 0.02  # better on every query
    chosen, z = _choose(tried, every, 2.0)
    assert chosen == (0.0, 0.8, (1, 2)) and z > 1e6
    tried[(0.0, 0.8, every)] = base + 0.03  # all the paths win outright: no margin to report
    assert _choose(tried, every, 2.0) == ((0.0, 0.8, every), None)
    assert _choose({w: v[:0] for w, v in tried.items()}, every, 2.0) == ((0.0, 0.0, every), None)


def test_calibration_tries_every_set_of_meta_paths_and_a_model_copies_after_evaluating(tiny, tmp_path):
    from mmsc_dgl.config import ModelConfig, TrainConfig
    from mmsc_dgl.models.calibration import path_subsets
    from mmsc_dgl.runs.load import load_run
    from mmsc_dgl.runs.training import train
    assert len(path_subsets(4)) == 15 and path_subsets(4)[0] == (0, 1, 2, 3) and len(set(path_subsets(4))) == 15
    assert len(path_subsets(9)) == 10 and all(len(s) >= 8 for s in path_subsets(9))  # a wider schema: leave-one-out
    config = TrainConfig(metapaths="s,c", max_neighbors=4, epochs=1, batch_size=256, val_queries=50,
                         model=ModelConfig(hidden=16, heads=2, semantic_hidden=8, ssl_nodes=32))
    train(tiny.root, tmp_path / "run", config, progress=False)
    run = load_run(tmp_path / "run")
    run.evaluate()  # caches sparse path matrices in the model's path counter
    top = run.item_model().topk(run.item_model().item_ids[:3], "complement", k=5)  # copies the model
    assert top.nodes.shape == (3, 5)


def test_processes_sharing_the_calibration_queries_choose_what_one_process_chooses(tiny, tmp_path):
    """Data-parallel training calibrates with its queries shared (``ShareQueries``): each of
    three processes ranks a third of the validation queries under every setting, and every one
    ends with one process's choice and figures, each query ranked once."""
    import copy

    from conftest import run_sharing
    from mmsc_dgl.config import ModelConfig, TrainConfig
    from mmsc_dgl.models.calibration import calibrate
    from mmsc_dgl.runs.load import load_run
    from mmsc_dgl.runs.training import train
    config = TrainConfig(metapaths="s,c,s-c", max_neighbors=4, epochs=1, batch_size=256, val_queries=80,
                         model=ModelConfig(hidden=16, heads=2, semantic_hidden=8, ssl_nodes=32))
    train(tiny.root, tmp_path / "run", config, progress=False)
    run = load_run(tmp_path / "run")
    states = {r: {k: v.clone() for k, v in s.items()} for r, s in run.relation_states.items()}
    want_states, want = calibrate(copy.deepcopy(run.model), states, run.evaluator)
    assert want and any(w["link_bonus"] or w["path_bonus"] for w in want.values())  # a choice that can differ

    def work(share):
        evaluator = copy.copy(run.evaluator)
        evaluator.share = share
        return calibrate(copy.deepcopy(run.model), states, evaluator)
    got, ranked = run_sharing(3, work)
    for states_here, report in got:
        assert report == want
        for r in RELATIONS:
            for k, v in want_states[r].items():
                assert torch.equal(states_here[r][k], v), k
    assert sum(ranked) == len(RELATIONS) * config.val_queries  # each query once, not once per process


def test_recommend_for_new_items_from_their_columns(tiny, tmp_path):
    """mmsc-dgl recommend --new-items (issue 31.5): features extracted as the run's were (here
    hashed text, weighted by the run catalog's document frequencies), edges from a file, the
    answers those of ItemModel.add_items, and bad files one line naming them."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from click.testing import CliRunner
    from mmsc_dgl.cli import main
    from mmsc_dgl.config import ModelConfig, TrainConfig
    from mmsc_dgl.features.new_items import new_item_features
    from mmsc_dgl.runs.load import load_model
    from mmsc_dgl.runs.training import train
    config = TrainConfig(metapaths="s,c", max_neighbors=4, epochs=1, batch_size=256, val_queries=50,
                         model=ModelConfig(hidden=16, heads=2, semantic_hidden=8, ssl_nodes=16))
    run_dir = tmp_path / "run"
    train(tiny.root, run_dir, config, progress=False)
    catalog = tiny.catalog.table
    ids = tiny.catalog.ids.to_pylist()
    rows = catalog.take([3, 4]).set_column(0, "item_id", pa.array(["NEW1", "NEW2"]))
    pq.write_table(rows, tmp_path / "new.parquet")
    pq.write_table(pa.table({"src": ["NEW1"], "dst": [ids[10]], "relation": ["complement"]}), tmp_path / "edges.parquet")
    model = load_model(run_dir)
    # the same columns give the same features as the catalog's items have
    again = new_item_features(model.features, catalog, rows)
    torch.testing.assert_close(again.tokens, model.features.tokens[[3, 4]])
    shown = CliRunner().invoke(main, ["recommend", str(run_dir), "--new-items", str(tmp_path / "new.parquet"),
                                      "--new-edges", str(tmp_path / "edges.parquet"), "--relation", "complement",
                                      "-k", "3", "--explain"])
    assert shown.exit_code == 0, shown.output
    assert "NEW1:" in shown.output and "NEW2:" in shown.output and shown.output.count("embedding ") == 6
    model.add_items(["NEW1", "NEW2"], again, edges={"complement": [("NEW1", ids[10])]})
    want = model.topk(["NEW1", "NEW2"], "complement", k=3).item_ids
    printed = [line.split()[2] for line in shown.output.splitlines() if line[:3].strip().isdigit()]
    assert printed == want[0] + want[1]
    out = tmp_path / "recs.parquet"
    written = CliRunner().invoke(main, ["recommend", str(run_dir), "--new-items", str(tmp_path / "new.parquet"),
                                        "--relation", "complement", "-k", "3", "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert pq.read_table(out).column("item_id").to_pylist() == ["NEW1"] * 3 + ["NEW2"] * 3
    # bad inputs: one line, exit 2, naming the file
    pq.write_table(pa.table({"src": ["NEW1"], "dst": [ids[10]], "relation": ["bought"]}), tmp_path / "bad-edges.parquet")
    pq.write_table(catalog.take([5]), tmp_path / "known.parquet")
    for args, says in [(["--new-items", str(tmp_path / "new.parquet"), "--new-edges", str(tmp_path / "bad-edges.parquet")],
                        "bad-edges.parquet: row 0: relation 'bought'"),
                       (["--new-items", str(tmp_path / "known.parquet")], "known.parquet: item"),
                       (["--new-items", str(tmp_path / "edges.parquet")], "no column 'item_id'"),
                       (["--item", ids[0], "--new-edges", str(tmp_path / "edges.parquet")], "goes with --new-items")]:
        res = CliRunner().invoke(main, ["recommend", str(run_dir), "--relation", "complement", *args])
        assert res.exit_code == 2 and says in res.output and "Traceback" not in res.output, res.output
