"""Meta-path neighbours drawn per mini-batch from a (partitioned) graph follow the same law as
the single-machine walk tables: per item and meta-path, the end-point frequencies of both are
compared with a chi-square test, and both against the exact law of a uniform walk."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

dgl = pytest.importorskip("dgl")
stats = pytest.importorskip("scipy.stats")

from mmsc_dgl.config import SyntheticConfig  # noqa: E402
from mmsc_dgl.data.dataset import load_dataset  # noqa: E402
from mmsc_dgl.data.prepare import prepare  # noqa: E402
from mmsc_dgl.distributed.sampling import default_sampler, metapath_walk_ends, sample_metapath_neighbors  # noqa: E402
from mmsc_dgl.metapath.build import random_walk_ends  # noqa: E402
from mmsc_dgl.metapath.spec import MetaPath  # noqa: E402

WALKS = 3000
PATHS = ["s", "s-c", "c-s-c"]


@pytest.fixture(scope="module")
def graph_and_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "ds"
    prepare(synthetic=SyntheticConfig(num_items=200, seed=4), out=out, progress=False)
    return load_dataset(out).train_graph(), out


def _items(graph, path, count=5):
    """Items whose walks along ``path`` can end in several places (a test with power)."""
    law = _exact_law(graph, path)
    support = (law[:, :-1] > 0).sum(1)
    return torch.nonzero(support >= 3).flatten()[:count]


def _exact_law(graph, path):
    """[N, N + 1]: where a uniform walk from each item ends (last column: the walk died)."""
    n = graph.num_nodes()
    law = torch.eye(n, dtype=torch.float64)
    dead = torch.zeros(n, dtype=torch.float64)
    for rel in MetaPath.parse(path).relations:
        src, dst = graph.edges(etype=rel)
        adj = torch.zeros(n, n, dtype=torch.float64).index_put_((src, dst), torch.ones(len(src), dtype=torch.float64),
                                                                accumulate=True)
        deg = adj.sum(1, keepdim=True)
        step = torch.where(deg > 0, adj / deg.clamp(min=1), torch.zeros_like(adj))
        dead = dead + law @ (deg.squeeze(1) == 0).double()
        law = law @ step
    return torch.cat([law, dead.unsqueeze(1)], dim=1)


def _counts(ends, n):
    return np.bincount(np.where(ends < 0, n, ends), minlength=n + 1)


def _single_machine_ends(graph, items, path, seed=0):
    metapath = MetaPath.parse(path)
    adjacency = {rel: tuple(t.to(torch.int64) for t in graph.adj_tensors("csr", etype=rel)[:2])
                 for rel in set(metapath.relations)}
    starts = items.repeat_interleave(WALKS)
    walk_ids = torch.arange(starts.numel(), dtype=torch.int64)
    return random_walk_ends(adjacency, starts, walk_ids, metapath, key=seed + 17).view(len(items), WALKS)


def _same_law(a, b):
    """Two-sample chi-square p-value over the categories either sample visited."""
    keep = (a + b) > 0
    if keep.sum() < 2:
        return 1.0
    return stats.chi2_contingency(np.stack([a[keep], b[keep]]))[1]


def _fits_law(counts, law):
    keep = law > 0
    assert counts[~keep].sum() == 0, "ends where the exact law has no mass"
    return stats.chisquare(counts[keep], law[keep] * counts.sum())[1]


@pytest.mark.parametrize("path", PATHS)
def test_per_batch_sampling_matches_the_single_machine_walk(graph_and_dir, path):
    graph, _ = graph_and_dir
    n = graph.num_nodes()
    dgl.seed(1)
    items = _items(graph, path)
    assert len(items) >= 3
    mine = metapath_walk_ends(default_sampler(graph), items.repeat_interleave(WALKS),
                              MetaPath.parse(path)).view(len(items), WALKS)
    theirs = _single_machine_ends(graph, items, path)
    law = _exact_law(graph, path).numpy()
    for row, item in enumerate(items.tolist()):
        a, b = _counts(mine[row].numpy(), n), _counts(theirs[row].numpy(), n)
        assert _same_law(a, b) > 1e-4, (path, item)
        assert _fits_law(a, law[item]) > 1e-4 and _fits_law(b, law[item]) > 1e-4, (path, item)


def test_the_comparison_can_fail(graph_and_dir):
    """Walks along c-s compared with walks along s-c: told apart (the test has power)."""
    graph, _ = graph_and_dir
    n = graph.num_nodes()
    dgl.seed(2)
    items = _items(graph, "s-c")
    mine = metapath_walk_ends(default_sampler(graph), items.repeat_interleave(WALKS),
                              MetaPath.parse("c-s")).view(len(items), WALKS)
    theirs = _single_machine_ends(graph, items, "s-c")
    p = [_same_law(_counts(mine[r].numpy(), n), _counts(theirs[r].numpy(), n)) for r in range(len(items))]
    assert min(p) < 1e-6


def test_top_k_rows_are_the_walk_tables_rows(graph_and_dir):
    graph, _ = graph_and_dir
    items = torch.tensor([0, 5, 9])
    rows, cols, share = sample_metapath_neighbors(graph, items, MetaPath.parse("s-c"), k=4, num_walks=64)
    assert rows.max() < 3 and torch.all(torch.bincount(rows, minlength=3) <= 4)
    assert torch.all(share > 0) and torch.all(share <= 1)
    reach = dgl.metapath_reachable_graph(graph, ["substitute", "complement"])
    for r, c in zip(rows.tolist(), cols.tolist()):
        assert reach.has_edges_between(int(items[r]), c)


def test_distgraph_in_standalone_mode_draws_the_same_law(tmp_path):
    """A real DistGraph (DistDGL standalone mode, one partition, in a subprocess): its walks,
    mapped back to the dataset's ids, follow the single-machine law."""
    from mmsc_dgl.config import PrepareConfig
    from mmsc_dgl.distributed.partition import partition_dataset
    # a directed dataset: out-edges differ from in-edges, so a walk the wrong way round is caught
    from mmsc_dgl.data.prepare import dataset_from_graph
    gen = torch.Generator().manual_seed(8)
    src = torch.randint(0, 200, (1600,), generator=gen)
    hop = torch.randint(1, 9, (1600,), generator=gen)  # i -> i + 1..8: in-edges differ from out-edges
    directed = dgl.heterograph({("item", "substitute", "item"): (src[:800], (src[:800] + hop[:800]) % 200),
                                ("item", "complement", "item"): (src[800:], (src[800:] + 3 * hop[800:]) % 200)})
    dataset_dir = tmp_path / "directed"
    dataset_from_graph(directed, config=PrepareConfig(symmetric=False)).save(dataset_dir)
    graph = load_dataset(dataset_dir).train_graph()
    n = graph.num_nodes()
    info = partition_dataset(dataset_dir, 1, tmp_path / "parts", features="none")
    items = _items(graph, "s-c")
    script = textwrap.dedent(f"""
        import json, os, sys, torch, dgl
        from mmsc_dgl.distributed.sampling import metapath_walk_ends, default_sampler
        from mmsc_dgl.metapath.spec import MetaPath
        open({str(tmp_path / 'ip.txt')!r}, 'w').write('127.0.0.1\\n')
        dgl.distributed.initialize({str(tmp_path / 'ip.txt')!r})
        g = dgl.distributed.DistGraph('mmsc', part_config={str(info.config)!r})
        orig = torch.load({str(tmp_path / 'parts' / 'mapping.pt')!r}, weights_only=True)['orig_nids']['item']
        new_of = torch.empty_like(orig); new_of[orig] = torch.arange(orig.numel())
        items = torch.tensor({items.tolist()})
        ends = metapath_walk_ends(default_sampler(g), new_of[items].repeat_interleave({WALKS}), MetaPath.parse('s-c'))
        ends = torch.where(ends >= 0, orig[ends.clamp(min=0)], ends)
        json.dump(ends.tolist(), open({str(tmp_path / 'ends.json')!r}, 'w'))
    """)
    env = {**os.environ, "DGL_DIST_MODE": "standalone", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    ends = np.array(json.loads((tmp_path / "ends.json").read_text())).reshape(len(items), WALKS)
    theirs = _single_machine_ends(graph, items, "s-c", seed=5)
    for row in range(len(items)):
        assert _same_law(_counts(ends[row], n), _counts(theirs[row].numpy(), n)) > 1e-4


def test_walking_in_chunks_gives_the_rows_of_one_pass():
    """Each item's row depends on its own walks only: with a sampler that has one choice per
    step (every item one out-edge per relation), walking 7 items at a time gives exactly the rows,
    neighbours and shares of walking all at once, rows numbered over all the items."""
    n = 50
    perm = {rel: torch.randperm(n, generator=torch.Generator().manual_seed(i))
            for i, rel in enumerate(("substitute", "complement"))}
    g = dgl.heterograph({("item", rel, "item"): (torch.arange(n), perm[rel]) for rel in perm})
    items = torch.tensor([3, 9, 0, 41, 17, 22, 5, 8, 13, 44, 30, 29, 2, 48, 11, 7, 6])
    for path in ("s", "s-c", "c-s-c"):
        metapath = MetaPath.parse(path)
        whole = sample_metapath_neighbors(g, items, metapath, 4, 16, chunk=10_000)
        chunked = sample_metapath_neighbors(g, items, metapath, 4, 16, chunk=7)
        for a, b in zip(whole, chunked):
            assert torch.equal(a, b), path
        assert torch.equal(whole[0], torch.arange(items.numel()))  # one end point per item, share 1
