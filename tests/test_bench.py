"""Benchmarks: retrieval against brute force, the DGL HAN-style comparison, the torch-only GPU
trainer (run with DGL, pyarrow and pydantic made unimportable), and the CLI face."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner

from mmsc_dgl import RELATIONS
from mmsc_dgl.cli import main
from mmsc_dgl.config import ModelConfig, SyntheticConfig
from mmsc_dgl.data.prepare import prepare
from mmsc_dgl.errors import DataError
from mmsc_dgl.eval.retrieval import recall_at_k, topk_all

from conftest import REPO


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "ds"
    prepare(synthetic=SyntheticConfig(num_items=300, seed=4), out=out, progress=False)
    return out


def test_topk_all_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(257, 8, generator=g)
    scores, index = topk_all(emb, k=5, block_size=50)
    full = emb @ emb.t()
    full.fill_diagonal_(float("-inf"))
    want = torch.topk(full, 5, dim=1)
    torch.testing.assert_close(scores, want.values)
    assert torch.equal(index, want.indices)
    assert not (index == torch.arange(257).unsqueeze(1)).any()
    q = torch.tensor([3, 100, 256])
    s2, i2 = topk_all(emb, k=5, block_size=2, queries=q)
    assert torch.equal(i2, want.indices[q])
    _, small = topk_all(emb[:3], k=10)
    assert small.shape == (3, 2)
    assert recall_at_k(want.indices, want.indices) == 1.0
    assert recall_at_k(want.indices[:, :1].repeat(1, 5), want.indices) == pytest.approx(0.2)


@pytest.mark.parametrize("n", [300, 5000, 5003])
def test_grouped_selection_is_exact(n):
    from mmsc_dgl.eval.retrieval import grouped_topk
    g = torch.Generator().manual_seed(n)
    scores = torch.randn(32, n, generator=g)
    values, index = grouped_topk(scores, 11, 64)
    want = torch.topk(scores, 11, dim=1)
    assert torch.equal(values, want.values) and torch.equal(index, want.indices)
    tied = torch.randint(0, 4, (32, n), generator=g).float()  # ties: same values, valid indices
    values, index = grouped_topk(tied, 11, 64)
    assert torch.equal(values, torch.topk(tied, 11, dim=1).values)
    assert torch.equal(tied.gather(1, index), values)


def test_bfloat16_products_keep_most_of_the_exact_top_k():
    from mmsc_dgl.bench.recommend import clustered_embeddings
    emb = clustered_embeddings(3000, 32, clusters=30)
    _, exact = topk_all(emb, k=10)
    _, approx = topk_all(emb, k=10, dtype=torch.bfloat16)
    assert recall_at_k(approx, exact) > 0.9


def test_dgl_han_neighbourhoods_equal_exact_tables(dataset_dir):
    from mmsc_dgl.bench.han_dgl import DGLHAN, reachable_graphs
    from mmsc_dgl.data.dataset import load_dataset
    from mmsc_dgl.metapath import build_metapath_tables
    dataset = load_dataset(dataset_dir)
    graph = dataset.train_graph()
    graphs, estimate = reachable_graphs(graph, ["s-c", "c-s-c"])
    exact = build_metapath_tables(graph, "s-c,c-s-c", strategy="exact", progress=False)
    for name, g in graphs.items():
        csr = exact[name].csr()
        for i in range(0, dataset.num_items, 7):
            mine = set(csr.indices[csr.indptr[i]: csr.indptr[i + 1]].tolist()) - {i}
            theirs = set(g.in_edges(i)[0].tolist()) - {i}
            assert mine == theirs, name
        assert bool((g.in_degrees() > 0).all())  # self-loops: no zero in-degree node
    model = DGLHAN(dataset.num_items, graphs, ModelConfig(hidden=16, heads=2))
    emb = model.embed_all()
    assert emb["substitute"].shape == (dataset.num_items, 16) and "DGLHAN" in repr(model)
    with pytest.raises(DataError, match="pairs"):
        reachable_graphs(graph, ["s-c-s"], memory_budget=10)


def test_bench_train_compares_mmsc_with_dgl_han(dataset_dir, tmp_path):
    from mmsc_dgl.bench import train as bench_train
    out = tmp_path / "train.json"
    bench_train.main(["--sizes", "300", "--epochs", "1", "--metapaths", "s,c,s-c", "--batch-size", "512",
                      "--hidden", "16", "--heads", "2", "--val-queries", "50", "--test-queries", "100",
                      "--data-dir", str(tmp_path / "data"), "--json", str(out)])
    payload = json.loads(out.read_text())
    assert payload["machine"]["cpu_count"] >= 1 and payload["machine"]["torch"]
    rows = {r["model"]: r for r in payload["results"]}
    assert set(rows) == {"mmsc", "han", "dgl-han"}
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["epoch_seconds"] > 0 and row["edges_per_second"] > 0 and row["peak_rss_mib"] > 0
        assert 0.03 < row["ndcg10_substitute"] <= 1, row  # a random ranking scores about 0.02 here
    assert rows["dgl-han"]["speedup_vs_dgl_han"] == 1.0
    # dgl-han refuses what it cannot hold, and says why
    refused = bench_train.run_case({**{k: v for k, v in payload["settings"].items()}, "model": "dgl-han",
                                    "items": 300, "dataset": str(next(p for p in (tmp_path / "data").iterdir() if p.is_dir())),
                                    "epochs": 1, "steps_per_epoch": None, "metapaths": "s-c-s", "max_neighbors": 4,
                                    "batch_size": 512, "lr": 0.01, "hidden": 16, "heads": 2, "features": "hashed",
                                    "val_queries": 50, "test_queries": 50, "memory_budget_gib": 1e-9,
                                    "device": "cpu", "seed": 0}, timeout=300)
    assert refused["status"] == "refused" and "pairs" in refused["reason"], refused


def test_bench_train_refuses_a_catalog_over_its_memory_floor_before_making_it(tmp_path, capsys):
    """Issue 32.2: a size whose floor (edges, tables, item-sized weights with Adam and the best
    copies) is over the memory available is a one-line refusal with the estimate, before any
    catalog is made, never an out-of-memory kill; the floor counts what it says it counts."""
    from mmsc_dgl.bench import train as bench_train
    from mmsc_dgl.bench.estimate import available_bytes, training_floor_bytes
    floor = training_floor_bytes(1000, 10, hidden=64, metapaths=14, max_neighbors=8)
    assert floor["edges"] == 1000 * 10 * 2 * 16 and floor["metapath_tables"] == 1000 * 14 * 8 * 8
    assert floor["weights"] == 1000 * 64 * 4 * 4 * 5
    assert training_floor_bytes(1000, 10, hidden=64, metapaths=14, max_neighbors=8,
                                graph_branch=False)["weights"] == 1000 * 64 * 4 * 5
    assert available_bytes() is not None
    out = tmp_path / "train.json"
    bench_train.main(["--sizes", str(10**12), "--models", "mmsc", "--data-dir", str(tmp_path / "data"),
                      "--json", str(out)])
    (row,) = json.loads(out.read_text())["results"]
    assert row["status"] == "refused" and "GiB available" in row["reason"], row
    assert "\n" not in row["reason"] and row["floor_gib"] > 1000
    assert not (tmp_path / "data").exists()
    assert "1,000,000,000,000 mmsc refused" in capsys.readouterr().out


BLOCKER = textwrap.dedent("""
    import runpy, sys
    # As on the GPU hosts: these packages are absent (a None entry makes import and find_spec fail).
    for name in ("dgl", "pyarrow", "pydantic", "pandas", "scipy", "sklearn", "yaml", "click"):
        sys.modules[name] = None
    sys.argv = ["gpu_train"] + sys.argv[1:]
    runpy.run_module("mmsc_dgl.bench.gpu_train", run_name="__main__")
""")


GPU_CONFIG = textwrap.dedent("""
    metapaths: s,c,s-c
    max_neighbors: 4
    epochs: 3
    patience: 3
    steps_per_epoch: 4
    batch_size: 128
    val_queries: 60
    impl: reference
    model: {hidden: 16, heads: 2, semantic_hidden: 8, ssl_nodes: 32}
""")


def test_export_then_torch_only_training_is_the_cli_model(dataset_dir, tmp_path):
    """``gpu_train`` with DGL, pyarrow and pydantic unimportable (as on the GPU hosts) trains
    the model ``mmsc-dgl train`` trains with the same config: today's default MMSC (path
    evidence, links, content paths, graph branch), validated on the same queries and negatives
    and calibrated alike; every epoch's validation NDCG@10 and the calibrated ones match."""
    config = tmp_path / "config.yaml"
    config.write_text(GPU_CONFIG)
    export = tmp_path / "syn.pt"
    runner = CliRunner()
    res = runner.invoke(main, ["export-tensors", str(dataset_dir), "--out", str(export), "--config", str(config)])
    assert res.exit_code == 0, res.output
    assert "300 items, 3 meta-paths" in res.output
    data = torch.load(export, weights_only=True)
    assert set(data["val"]) == set(RELATIONS) and data["val"]["substitute"]["negatives"].shape[0] == 60
    assert data["model"]["content_paths"] > 0 and data["model"]["path_evidence"] and data["features"] is not None
    script = tmp_path / "run_blocked.py"
    script.write_text(BLOCKER)
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(script), "--export", str(export), "--device", "cpu", "--impls",
                           "reference", "reference", "--epochs", "2", "--json", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 2 and rows[0]["edges_per_second"] > 0
    # same weights, same batches: the two runs agree exactly
    assert rows[0]["history"] == rows[1]["history"]
    res = runner.invoke(main, ["train", str(dataset_dir), "--out", str(tmp_path / "run"), "--config", str(config)])
    assert res.exit_code == 0, res.output
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(history) == len(rows[0]["history"]) == 3
    for cli, gpu in zip(history, rows[0]["history"]):
        for r in RELATIONS:
            assert gpu[f"val_{r}_NDCG@10"] == pytest.approx(cli[f"val_{r}_NDCG@10"], abs=1e-6), (cli, gpu)
        assert gpu["loss_total"] == pytest.approx(cli["loss_total"], rel=1e-5)
    assert rows[0]["best_epoch"] == metrics["best_epoch"]
    for r in RELATIONS:
        assert rows[0][f"calibrated_val_ndcg10_{r}"] == pytest.approx(
            metrics["calibration"][r]["val_NDCG@10"]["calibrated"], abs=1e-6)


def test_cli_bench_runs_the_shared_implementation(tmp_path):
    out = tmp_path / "rec.json"
    res = CliRunner().invoke(main, ["bench", "recommend", "--sizes", "600", "--faiss", "no", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["results"]
    assert rows[0]["items"] == 600 and rows[0]["recall@10"] == 1.0 and rows[0]["seconds"] > 0
    res = CliRunner().invoke(main, ["bench", "nope"])
    assert res.exit_code != 0


def test_bench_lookalikes_counts_picks_that_share_the_item_group(dataset_dir, tmp_path):
    from mmsc_dgl.bench.lookalikes import group_codes, main, same_group_share
    assert group_codes(["a", None, ["x", "a"], "b", [], ""]).tolist() == [0, -1, 0, 1, -1, -1]
    picks = torch.tensor([[1, 2], [0, 3], [0, 1], [2, 0]])
    assert same_group_share(picks, torch.tensor([0, 0, 1, -1])) == pytest.approx(2 / 6)  # item 3: no query
    assert same_group_share(picks, torch.tensor([0, 0, 0, 0])) == 1.0
    from mmsc_dgl.config import ModelConfig, TrainConfig
    from mmsc_dgl.runs.load import load_run
    from mmsc_dgl.runs.training import train
    config = TrainConfig(metapaths="s,c", max_neighbors=4, epochs=1, batch_size=256, val_queries=50,
                         model=ModelConfig(hidden=16, heads=2, semantic_hidden=8, ssl_nodes=32))
    train(dataset_dir, tmp_path / "run", config, progress=False)
    out = tmp_path / "look.json"
    main([str(tmp_path / "run"), "--k", "5", "--json", str(out)])
    rows = json.loads(out.read_text())["results"]
    model = load_run(tmp_path / "run").item_model()
    types = load_run(tmp_path / "run").dataset.catalog.table.column("product_type").to_pylist()
    for row in rows:  # the slow way: every item's picks, compared one by one
        top = model.topk(model.item_ids, row["relation"], k=5).nodes.tolist()
        expect = sum(types[j] == types[i] for i, picks in enumerate(top) for j in picks) / (5 * len(top))
        assert row["share"] == pytest.approx(expect)
    assert {r["relation"] for r in rows} == {"substitute", "complement"}
    with pytest.raises(DataError, match="no column 'nope'"):
        main([str(tmp_path / "run"), "--column", "nope"])


def test_export_refuses_learnt_category_features_in_one_line(dataset_dir, tmp_path):
    """The export writes frozen tokens; category features (``features: categories``) have ids
    whose embeddings are learnt, and crashed it with an AttributeError (found by mypy)."""
    from mmsc_dgl.bench.export import export_tensors
    from mmsc_dgl.config import TrainConfig
    from mmsc_dgl.errors import DataError
    config = TrainConfig(features="categories", metapaths="s,c", max_neighbors=4, val_queries=20)
    with pytest.raises(DataError, match="category tokens whose embeddings are learnt"):
        export_tensors(dataset_dir, tmp_path / "x.pt", config=config, progress=False)
    assert not (tmp_path / "x.pt").exists()
