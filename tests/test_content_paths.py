"""MMSC's content paths (issue 31): a ``similar`` graph joins every item to its nearest items in
content space, so the path evidence can score an item without edges by the partners of the
items it resembles; training can make some sources look edgeless (``evidence_dropout``), and the
calibration leaves those paths to the learned term."""
import pytest
import torch
import torch.nn.functional as F

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.nn.path_evidence import SIMILAR, PathEvidence
from mmsc_dgl.ops.neighbours import content_neighbours
from mmsc_dgl.ops.paths import PathCounter, adamic_adar_counter, undirected, with_edges


def test_content_neighbours_are_the_nearest_by_cosine_among_the_candidates():
    g = torch.Generator().manual_seed(0)
    content = torch.randn(60, 5, generator=g)
    content[7] = 0  # no content: never a source, never a neighbour
    candidates = torch.rand(60, generator=g) > 0.3
    sources = torch.rand(60, generator=g) > 0.5
    src, dst = content_neighbours(content, 4, candidates=candidates, sources=sources)
    unit = F.normalize(content, dim=1)
    for i in range(60):
        got = dst[src == i].tolist()
        if not sources[i] or i == 7:
            assert got == []
            continue
        pool = [j for j in range(60) if candidates[j] and j != i and j != 7]
        want = sorted(pool, key=lambda j: -float(unit[i] @ unit[j]))[:4]
        assert sorted(got) == sorted(want), i
    # blocks of any size give the same edges
    import mmsc_dgl.ops.neighbours as neighbours
    old = neighbours.SIMILARITIES_PER_BLOCK
    try:
        neighbours.SIMILARITIES_PER_BLOCK = 50
        again = content_neighbours(content, 4, candidates=candidates, sources=sources)
    finally:
        neighbours.SIMILARITIES_PER_BLOCK = old
    assert torch.equal(again[0], src) and torch.equal(again[1], dst)
    empty = content_neighbours(torch.zeros(5, 3), 2)
    assert empty[0].numel() == 0 and empty[1].numel() == 0


def test_above_the_exact_limit_an_ivf_index_finds_the_nearest(monkeypatch):
    """Over ``EXACT_SEARCH_UP_TO`` similarities the look-alikes come from a FAISS IVF index:
    with every list probed it is the exact search; with the default probes it keeps most of
    each source's nearest (clustered data, as content is), never the source itself."""
    pytest.importorskip("faiss")
    import mmsc_dgl.ops.neighbours as neighbours
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(40, 16, generator=g)
    content = centres[torch.randint(0, 40, (4000,), generator=g)] + 0.3 * torch.randn(4000, 16, generator=g)
    content[7] = 0
    candidates = torch.rand(4000, generator=g) > 0.3
    exact = content_neighbours(content, 5, candidates=candidates)
    monkeypatch.setattr(neighbours, "EXACT_SEARCH_UP_TO", 0)
    monkeypatch.setattr(neighbours, "IVF_NPROBE", 10**6)  # every list: exact
    src, dst = content_neighbours(content, 5, candidates=candidates)
    pairs = lambda s, d: set(zip(s.tolist(), d.tolist()))  # noqa: E731
    assert pairs(src, dst) == pairs(*exact)
    monkeypatch.setattr(neighbours, "IVF_NPROBE", 4)
    src, dst = content_neighbours(content, 5, candidates=candidates)
    assert not (src == dst).any() and not (dst == 7).any() and not (src == 7).any()
    assert bool(candidates[dst].all())
    recall = len(pairs(src, dst) & pairs(*exact)) / exact[0].numel()
    assert recall > 0.8, recall



def test_eq12_above_the_exact_limit_averages_the_ivf_nearest(monkeypatch):
    """Eq. 12's placement (``nearest_content_mean``) over ``EXACT_SEARCH_UP_TO`` similarities
    reads an IVF index: with every list probed it gives the exact rows; with few lists probed a
    slot the lists cannot fill is left out of the mean (never the zero row of a -1), and a new
    item without content still gets zeros."""
    pytest.importorskip("faiss")
    import mmsc_dgl.ops.neighbours as neighbours
    from mmsc_dgl.eval.evaluate import nearest_content_mean
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(30, 12, generator=g)
    content = centres[torch.randint(0, 30, (3000,), generator=g)] + 0.3 * torch.randn(3000, 12, generator=g)
    embeddings = torch.randn(3000, 8, generator=g) + 5.0  # far from 0: a zero row in a mean would show
    new = centres[torch.randint(0, 30, (200,), generator=g)] + 0.3 * torch.randn(200, 12, generator=g)
    new[3] = 0
    candidates = torch.rand(3000, generator=g) > 0.2
    exact = nearest_content_mean(embeddings, content, new, k=7, candidates=candidates)
    monkeypatch.setattr(neighbours, "EXACT_SEARCH_UP_TO", 0)
    monkeypatch.setattr(neighbours, "IVF_NPROBE", 10**6)  # every list: exact
    assert torch.allclose(nearest_content_mean(embeddings, content, new, k=7, candidates=candidates), exact, atol=1e-5)
    monkeypatch.setattr(neighbours, "IVF_NPROBE", 1)
    approx = nearest_content_mean(embeddings, content, new, k=7, candidates=candidates)
    assert bool((approx[3] == 0).all()) and bool((exact[3] == 0).all())
    real = torch.ones(200, dtype=torch.bool)
    real[3] = False
    close = torch.isclose(approx, exact, atol=1e-5).all(1)[real].float().mean()
    assert close > 0.5, close
    # 60 nearest from one list of about 40 rows: slots unfilled, the mean over the found rows
    unit = torch.nn.functional.normalize(content[candidates], dim=1)
    assert bool((neighbours.ivf_nearest(unit, new, 60) == -1).any())
    wide = nearest_content_mean(embeddings, content, new, k=60, candidates=candidates)
    assert bool((wide[real].mean(1) > 4.5).all()), wide[real].mean(1).min()  # about 5: no empty slot averaged in


def _counter(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    edges = {}
    for name in RELATIONS:
        edges[name] = type("E", (), {"src": torch.randint(0, 40, (120,), generator=g),
                                     "dst": torch.randint(0, 40, (120,), generator=g)})
    # items 40..49 have no behaviour edge: only content neighbours among the first 40
    content = torch.randn(n, 6, generator=g)
    has_edge = torch.zeros(n, dtype=torch.bool)
    has_edge[:40] = True
    src, dst = content_neighbours(content, 3, candidates=has_edge)
    edges[SIMILAR] = type("E", (), {"src": src, "dst": dst})
    return adamic_adar_counter(n, edges, weigh_by=RELATIONS), edges


def test_content_paths_keep_the_behaviour_weights_and_an_edgeless_source_keeps_only_them():
    counter, edges = _counter()
    plain = adamic_adar_counter(50, {r: edges[r] for r in RELATIONS})
    torch.testing.assert_close(counter.weight, plain.weight)  # the similar graph changes no path weight
    torch.manual_seed(0)
    evidence = PathEvidence(counter, RELATIONS, hidden=8)
    names = evidence.names
    assert f"{SIMILAR}-substitute" in names and names[-1] == SIMILAR
    assert [names[i] for i in evidence.behaviour_paths] == [f"{x}-{y}" for x in RELATIONS for y in RELATIONS]
    src = torch.tensor([0, 3, 41, 45, 12])
    dst = torch.tensor([5, 9, 2, 17, 30])
    counts = evidence.counts(src, dst)
    assert (counts[2:4, :len(evidence.metapaths)][:, evidence.behaviour_paths] == 0).all()  # no edges, no such path
    edgeless = torch.tensor([True, False, False, True, True])
    for r in RELATIONS:
        masked = counts.clone()
        masked[edgeless] *= evidence._edgeless
        torch.testing.assert_close(evidence.pair_scores(src, dst, r, edgeless), evidence(masked, r))
        torch.testing.assert_close(evidence.pair_scores(src, dst, r), evidence(counts, r))
        # what stays for an edgeless source: the paths that start with a content neighbour, and that link
        kept = [n for n, keep in zip(names, evidence._edgeless.tolist()) if keep]
        assert kept == [f"{SIMILAR}-{y}" for y in (*RELATIONS, SIMILAR)] + [SIMILAR]
        # the calibration's link bonus is for edges of the other relation, never for look-alikes
        linked = getattr(evidence, f"_linked_{r}")
        assert [n for n, on in zip(names, linked.tolist()) if on] == [x for x in RELATIONS if x != r]
    # a new item's content neighbours join like its first edges, the weights still the relations'
    grown = with_edges(counter, {SIMILAR: (torch.tensor([50, 50]), torch.tensor([1, 2]))}, 51)
    assert grown.weigh_by == tuple(RELATIONS) and grown.linked(SIMILAR, torch.tensor([50]), torch.tensor([1])).item() == 1
    torch.testing.assert_close(grown.weight[:50], counter.weight)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from mmsc_dgl.config import ModelConfig, SyntheticConfig, TrainConfig
    from mmsc_dgl.data.prepare import prepare
    from mmsc_dgl.runs.training import train
    root = tmp_path_factory.mktemp("cp")
    dataset = prepare(synthetic=SyntheticConfig(num_items=300, seed=4), out=root / "ds", progress=False)
    config = TrainConfig(metapaths="s,c", max_neighbors=4, epochs=1, batch_size=256, val_queries=50,
                         features="hashed", cold_start="eq12",
                         model=ModelConfig(hidden=16, heads=2, semantic_hidden=8, ssl_nodes=16, content_paths=3,
                                           evidence_dropout=0.5))
    train(dataset.root, root / "run", config, progress=False)
    return dataset, root / "run"


def test_a_cold_item_and_a_new_item_reach_the_partners_of_their_look_alikes(run):
    from mmsc_dgl.runs.load import load_model, load_run
    dataset, run_dir = run
    loaded = load_run(run_dir)
    evidence = loaded.model.evidence
    counter = evidence.counter
    assert SIMILAR in counter.graphs
    cold = torch.as_tensor(dataset.splits.cold_items[:5], dtype=torch.int64)
    degree = sum(counter.degrees(r) for r in RELATIONS)
    assert (degree[cold] == 0).all() and (counter.degrees(SIMILAR)[cold] >= 3).all()
    row, col, features = evidence.reached(cold)
    assert row.unique().numel() == cold.numel()  # every cold item reaches something through its look-alikes
    assert (features[:, [i for i in range(len(evidence.metapaths)) if i not in evidence.behaviour_paths]] > 0).any()
    # a new item with a catalog item's content reaches what that item's look-alikes reach
    model = load_model(run_dir)
    twin = int(torch.nonzero(degree > 0)[0])
    new = model.add_items(["NEW"], model.features.pooled()[twin: twin + 1])
    grown = model.evidence("complement")
    assert grown.counter.degrees(SIMILAR)[new].item() == 3
    r_new, _, f_new = grown.reached(new)
    assert r_new.numel() > 0 and (f_new > 0).any()
    top = model.topk("NEW", "complement", k=5)
    assert len(top.item_ids[0]) == 5
    # a run saved before content paths existed loads with none (its config lacks the field)
    from mmsc_dgl.config import TrainConfig
    stored = TrainConfig.from_stored({"model": {"hidden": 16}})
    assert stored.model.content_paths == 0 and TrainConfig().model.content_paths > 0


def _shapley_by_definition(g, counts):
    """Each feature's Shapley value by the textbook sum over the coalitions of the others."""
    from itertools import combinations
    from math import factorial
    m = counts.shape[-1]
    out = torch.zeros_like(counts)
    for i in range(m):
        others = [p for p in range(m) if p != i]
        for size in range(m):
            weight = factorial(size) * factorial(m - size - 1) / factorial(m)
            for subset in combinations(others, size):
                mask = torch.zeros(m)
                mask[list(subset)] = 1
                without = g(counts * mask)
                mask[i] = 1
                out[:, i] += weight * (g(counts * mask) - without)
    return out


@torch.no_grad()
def test_explanation_shares_are_the_shapley_values_by_definition_in_any_block():
    """The explanation evaluates each coalition of the batch's live features once (twelve
    features with content paths made the textbook loop 64x slower); the shares equal the
    definition, a feature that is zero in every pair gets 0, and the shares add up to
    g(c) - g(0)."""
    from mmsc_dgl.eval.explain import shapley_shares
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    g = lambda c: mlp(torch.log1p(c)).squeeze(-1)  # noqa: E731
    counts = torch.rand(40, 6) * (torch.rand(40, 6) > 0.4)
    counts[:, 2] = 0
    want = _shapley_by_definition(g, counts)
    for block in (1 << 22, 100, 1):
        got = shapley_shares(g, counts, block=block)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert (got[:, 2] == 0).all()
    torch.testing.assert_close(got.sum(1), g(counts) - g(torch.zeros(1, 6)), atol=1e-6, rtol=1e-5)
    assert shapley_shares(g, torch.zeros(3, 6)).abs().sum() == 0
