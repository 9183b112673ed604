import subprocess
import sys

import dgl
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mmsc_dgl.cli import main
from mmsc_dgl.config import SyntheticConfig
from mmsc_dgl.data.prepare import prepare
from mmsc_dgl.errors import DataError
from mmsc_dgl.metapath import (MetaPath, MetaPathTables, build_metapath_tables, default_metapaths,
                               estimate_pairs, parse_metapaths, relation_matrices)
from mmsc_dgl.metapath.build import exact_table, topk_table


def _random_graph(n=300, m=1500, seed=0, hub=False):
    rng = np.random.default_rng(seed)
    data = {}
    for rel in ("substitute", "complement"):
        src = rng.integers(0, n, m)
        dst = rng.integers(0, n, m)
        if hub:
            src[: m // 5] = 0
        keep = src != dst
        data[("item", rel, "item")] = (torch.from_numpy(src[keep]), torch.from_numpy(dst[keep]))
    g = dgl.heterograph(data, num_nodes_dict={"item": n})
    return dgl.to_simple(g) if not hub else g


PATHS = ["s", "c", "s-c", "c-s", "s-s", "s-c-s", "c-s-c", "c-c-s"]


@pytest.mark.parametrize("path", PATHS)
def test_exact_equals_dgl_metapath_reachable_graph(path):
    g = _random_graph()
    table = build_metapath_tables(g, path, strategy="exact", progress=False)[path]
    mp = MetaPath.parse(path)
    reach = dgl.metapath_reachable_graph(g, list(mp.relations))
    src, dst = reach.edges(order="srcdst")
    rows = torch.repeat_interleave(torch.arange(table.num_items), table.degrees)
    assert torch.equal(rows, src) and torch.equal(table.indices, dst)


def test_exact_weights_are_path_counts():
    g = _random_graph(n=40, m=150, seed=3)
    dense = {r: torch.zeros(40, 40) for r in ("substitute", "complement")}
    for r in dense:
        s, d = g.edges(etype=r)
        dense[r][s, d] = 1
    table = build_metapath_tables(g, "s-c-s", strategy="exact", progress=False)["s-c-s"]
    product = dense["substitute"] @ dense["complement"] @ dense["substitute"]
    rows = torch.repeat_interleave(torch.arange(40), table.degrees)
    assert torch.equal(product[rows, table.indices], table.weight)
    assert int((product > 0).sum()) == table.num_pairs


@pytest.mark.parametrize("path", ["s-c", "s-c-s", "c-c-c"])
def test_topk_equals_exact_when_k_covers_every_row(path):
    g = _random_graph(hub=True)
    mats = relation_matrices(g)
    mp = MetaPath.parse(path)
    exact = exact_table(mats, mp)
    k = int(exact.degrees.max())
    bounded = topk_table(mats, mp, k, block_paths=500)  # many row blocks
    assert torch.equal(bounded.indptr, exact.indptr)
    assert torch.equal(bounded.indices, exact.indices)
    assert torch.equal(bounded.weight, exact.weight)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_topk_keeps_the_heaviest_and_never_more_than_k(k):
    g = _random_graph(hub=True, seed=5)
    mats = relation_matrices(g)
    mp = MetaPath.parse("s-c-s")
    exact = exact_table(mats, mp)
    bounded = topk_table(mats, mp, k, block_paths=1000)
    assert int(bounded.degrees.max()) <= k
    assert torch.equal(bounded.degrees, torch.clamp(exact.degrees, max=k))
    for row in range(0, exact.num_items, 17):
        ex = exact.weight[exact.indptr[row]:exact.indptr[row + 1]]
        kept = bounded.weight[bounded.indptr[row]:bounded.indptr[row + 1]]
        if len(kept):
            assert kept.min() >= torch.topk(ex, len(kept)).values.min()


def test_walk_is_bounded_subset_and_seeded():
    g = _random_graph(hub=True, seed=6)
    exact = build_metapath_tables(g, "s-c-s,c", strategy="exact", progress=False)
    a = build_metapath_tables(g, "s-c-s,c", strategy="walk", max_neighbors=5, num_walks=20, seed=1, progress=False)
    b = build_metapath_tables(g, "s-c-s,c", strategy="walk", max_neighbors=5, num_walks=20, seed=1, progress=False)
    for name in ("s-c-s", "c"):
        t, e = a[name], exact[name]
        assert int(t.degrees.max()) <= 5
        rows = torch.repeat_interleave(torch.arange(t.num_items), t.degrees)
        e_rows = torch.repeat_interleave(torch.arange(e.num_items), e.degrees)
        exact_pairs = set(zip(e_rows.tolist(), e.indices.tolist()))
        assert set(zip(rows.tolist(), t.indices.tolist())) <= exact_pairs
        assert torch.equal(t.indices, b[name].indices) and torch.equal(t.weight, b[name].weight)
        sums = torch.zeros(t.num_items).index_add(0, rows, t.weight)
        assert torch.all(sums <= 1 + 1e-6)
        # Items without any path are marked, the same ones as the exact table's.
        assert torch.equal(t.nonempty, e.nonempty)


def test_a_bound_beyond_the_catalog_costs_no_more_than_the_catalog(monkeypatch):
    """``--max-neighbors 100000`` on a small graph ran for minutes (200,000 default walks per
    item) for the table that a bound of the catalog's size gives (issue 34.12)."""
    import mmsc_dgl.metapath.build as build
    g = _random_graph(hub=True, seed=9)
    n = g.num_nodes("item")
    walked = []
    real = build.random_walk_ends
    monkeypatch.setattr(build, "random_walk_ends", lambda adj, starts, *a: walked.append(len(starts)) or
                        real(adj, starts, *a))
    huge = build.walk_table(g, MetaPath.parse("s-c"), 100_000, seed=2)
    assert sum(walked) == n * 2 * n
    capped = build.walk_table(g, MetaPath.parse("s-c"), n, seed=2)
    assert torch.equal(huge.indptr, capped.indptr) and torch.equal(huge.indices, capped.indices)
    assert torch.equal(huge.weight, capped.weight)


def test_walks_do_not_depend_on_batch_size(monkeypatch):
    import mmsc_dgl.metapath.build as build
    g = _random_graph(hub=True, seed=8)
    a = build.walk_table(g, MetaPath.parse("c-s-c"), 6, num_walks=12, seed=4)
    monkeypatch.setattr(build, "WALKS_PER_CALL", 50)
    b = build.walk_table(g, MetaPath.parse("c-s-c"), 6, num_walks=12, seed=4)
    assert torch.equal(a.indptr, b.indptr) and torch.equal(a.indices, b.indices) and torch.equal(a.weight, b.weight)


def test_walk_steps_are_uniform_over_neighbours():
    """A star: item 0 has 10 substitutes; 20,000 one-hop walks should hit each about 2,000 times."""
    import mmsc_dgl.metapath.build as build
    adjacency = {"substitute": (torch.tensor([0] + [10] * 11), torch.arange(1, 11))}
    starts = torch.zeros(20_000, dtype=torch.int64)
    ends = build.random_walk_ends(adjacency, starts, torch.arange(20_000), MetaPath.parse("s"), key=3)
    counts = torch.bincount(ends, minlength=11)[1:].double()
    chi2 = float(((counts - 2000) ** 2 / 2000).sum())
    assert counts.min() > 0 and chi2 < 30  # 9 degrees of freedom: p < 0.001 beyond ~27.9
    dead = build.random_walk_ends(adjacency, torch.tensor([3, 0]), torch.tensor([0, 1]),
                                  MetaPath.parse("s-s"), key=3)
    assert dead.tolist() == [-1, -1]  # item 3 has no edge; leaves have no second hop


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("path", ["s-c", "s-c-s"])
def test_size_estimate_within_factor_two_on_random_graphs(seed, path):
    g = _random_graph(n=2000, m=6000, seed=seed)
    estimate = estimate_pairs(g, path)
    actual = build_metapath_tables(g, path, strategy="exact", progress=False)[path].num_pairs
    assert actual <= estimate <= 2 * actual


def test_exact_refuses_over_budget_naming_max_neighbors():
    g = _random_graph(hub=True)
    with pytest.raises(DataError, match=r"s-c-s would hold up to .* pairs.*max_neighbors=K"):
        build_metapath_tables(g, "s-c-s", strategy="exact", memory_budget=1000, progress=False)
    with pytest.raises(DataError, match="needs max_neighbors=K"):
        build_metapath_tables(g, "s", strategy="walk", max_neighbors=0, progress=False)


def test_specs():
    assert len(default_metapaths()) == 14 and default_metapaths()[0].name == "s"
    assert [p.name for p in parse_metapaths("s, c-s ,substitute-complement,s")] == ["s", "c-s", "s-c"]
    assert MetaPath.parse("c-s-c").hops == 3
    with pytest.raises(DataError, match="'x' is not s, c"):
        MetaPath.parse("s-x")
    with pytest.raises(DataError, match="no meta-path"):
        parse_metapaths(" , ")


def test_tables_save_and_load_without_dgl(tmp_path):
    g = _random_graph()
    tables = build_metapath_tables(g, "s,c-s", strategy="walk", max_neighbors=4, progress=False)
    tables.save(tmp_path / "mp.pt")
    back = MetaPathTables.load(tmp_path / "mp.pt")
    assert list(back) == ["s", "c-s"] and back.info["strategy"] == "walk"
    for name in tables:
        assert torch.equal(back[name].indices, tables[name].indices)
        assert back[name].max_neighbors == 4
    assert back.nonempty_mask().shape == (300, 2)
    code = (f"import sys; sys.modules['dgl'] = None\n"
            f"from mmsc_dgl.metapath import MetaPathTables\n"
            f"t = MetaPathTables.load({str(tmp_path / 'mp.pt')!r})\n"
            f"print(t['s'].csr().num_edges)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == tables["s"].num_pairs
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot read meta-path tables"):
        MetaPathTables.load(tmp_path / "junk.pt")


def test_cli_metapaths(tmp_path):
    prepare(synthetic=SyntheticConfig(num_items=400, seed=0), out=tmp_path / "ds")
    result = CliRunner().invoke(main, ["metapaths", str(tmp_path / "ds"), "--metapaths", "s,c-s",
                                       "--max-neighbors", "8", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "c-s" in result.output and "empty items" in result.output
    tables = MetaPathTables.load(tmp_path / "ds" / "metapaths.pt")
    assert tables.info["graph"] == "train" and int(tables["c-s"].degrees.max()) <= 8
    result = CliRunner().invoke(main, ["metapaths", str(tmp_path / "ds"), "--metapaths", "s-c-s",
                                       "--strategy", "exact", "--memory-budget", "0.0001",
                                       "--out", str(tmp_path / "x.pt")])
    assert result.exit_code == 2 and "--max-neighbors" in result.output
    assert not (tmp_path / "x.pt").exists()
