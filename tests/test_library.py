"""mmsc_dgl imported into someone else's graph project, written as their script would be: their
schema, their features, a self-contained model, the query API (issue 16)."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

dgl = pytest.importorskip("dgl")

import mmsc_dgl  # noqa: E402
from mmsc_dgl import DataError, TrainConfig  # noqa: E402

N = 240


def _shop_graph(seed=0, with_users=True, third=False, rated_by=False):
    gen = torch.Generator().manual_seed(seed)

    def rand(count, high=N):
        return torch.randint(0, high, (count,), generator=gen)
    # two "kinds" of product so the graph has structure to learn
    half = N // 2
    view_src = rand(1200)
    view_dst = (view_src + torch.randint(1, 6, (1200,), generator=gen)) % N
    buy_src = rand(1200)
    buy_dst = (buy_src + half + torch.randint(0, 4, (1200,), generator=gen)) % N
    data = {("product", "also_viewed", "product"): (view_src, view_dst),
            ("product", "also_bought", "product"): (buy_src, buy_dst)}
    if with_users:
        data[("user", "rated", "product")] = (rand(300, 40), rand(300))
        if rated_by:  # the reverse edge type, as dgl.add_reverse_edges or PyG's ToUndirected give
            data[("product", "rated_by", "user")] = (data[("user", "rated", "product")][1],
                                                     data[("user", "rated", "product")][0])
    if third:
        data[("product", "same_brand", "product")] = (rand(100), rand(100))
    g = dgl.heterograph(data, num_nodes_dict={"product": N, **({"user": 40} if with_users else {})})
    g.nodes["product"].data["feat"] = torch.randn(N, 12, generator=gen)
    return g


RELATIONS = {"also_viewed": "substitute", "also_bought": "complement"}


def _config(**extra):
    return TrainConfig.from_mapping({"epochs": 2, "batch_size": 512, "val_queries": 60, "test_queries": 60,
                                     "model": {"hidden": 16, "heads": 2, "ssl_nodes": 16}, **extra})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lib")
    g = _shop_graph()
    ds = mmsc_dgl.dataset_from_graph(g, ntype="product", relations=RELATIONS, feat="feat",
                                     item_ids=[f"P{i:03d}" for i in range(N)])
    result = mmsc_dgl.train(ds, out=root / "run", config=_config(), progress=False)
    return root, ds, result


def test_their_schema_and_features_go_straight_in(trained):
    root, ds, result = trained
    assert ds.relation_map == RELATIONS
    assert len(ds.edges["substitute"]) > 0 and len(ds.edges["complement"]) > 0
    # the user edges are kept (not split) for meta-paths through users, and said so
    assert {e: len(src) for e, (src, _) in ds.side.edges.items()} == {("user", "rated", "item"): 300}
    assert ds.side.num_nodes == {"user": 40, "item": N} and ds.side.item_type == "product"
    assert "side edges (meta-paths only, not split): user/rated/item 300" in ds.format_summary()
    model = mmsc_dgl.load_model(root / "run")
    assert "features(dim=12)" in repr(model.module)  # the graph's own features, not hashed titles


def test_nothing_maps_is_an_error_naming_the_fix():
    g = dgl.heterograph({("item", "views", "item"): ([0, 1], [1, 2])})
    with pytest.raises(DataError, match="relations="):
        mmsc_dgl.dataset_from_graph(g)
    with pytest.raises(DataError, match="ntype="):
        mmsc_dgl.dataset_from_graph(_shop_graph())  # two node types, none named item


def test_misspelt_relations_and_non_finite_features_are_errors():
    """Issue 30.4: a misspelt edge type in relations= built a dataset with no substitute edges
    (a warning in summary() was the only sign), and NaN features were taken."""
    g = _shop_graph()
    with pytest.raises(DataError, match="'alt_viewed', which is not an edge type.*did you mean 'also_viewed'"):
        mmsc_dgl.dataset_from_graph(g, ntype="product", relations={"alt_viewed": "substitute",
                                                                  "also_bought": "complement"})
    bad = g.nodes["product"].data["feat"].clone()
    bad[3, 0], bad[7, 2] = float("nan"), float("inf")
    with pytest.raises(DataError, match="NaN or inf for 2 of"):
        mmsc_dgl.dataset_from_graph(g, ntype="product", relations=RELATIONS, feat=bad)


def test_left_out_edge_types_are_counted():
    ds = mmsc_dgl.dataset_from_graph(_shop_graph(third=True), ntype="product", relations=RELATIONS, side=False)
    counted = dict(ds.report.counts)
    assert counted["edge type ('product', 'same_brand', 'product') left out (not in relations)"] == 100
    assert counted["edge type ('user', 'rated', 'product') left out (not between 'product' nodes)"] == 300
    assert counted["node type 'user' left out (not the item type 'product')"] == 40
    assert ds.side is None
    # by default they are kept as side edges instead; "ignore" still leaves one out, counted
    ds = mmsc_dgl.dataset_from_graph(_shop_graph(third=True), ntype="product",
                                     relations={**RELATIONS, "same_brand": "ignore"})
    left_out = {k: v for k, v in ds.report.counts.items() if "left out" in k}
    assert left_out == {"edge type ('product', 'same_brand', 'product') left out (ignored)": 100}
    assert list(ds.side.edges) == [("user", "rated", "item")]


def test_query_api_takes_ids_and_node_ids(trained):
    root, ds, _ = trained
    model = mmsc_dgl.load_model(root / "run")
    by_id = model.topk(["P000", "P005"], "complement", k=5)
    by_node = model.topk(torch.tensor([0, 5]), "complement", k=5)
    assert by_id.item_ids == by_node.item_ids and by_id.nodes.shape == (2, 5)
    assert "P000" not in by_id.item_ids[0]
    s = model.score("P000", by_id.item_ids[0], "complement")
    torch.testing.assert_close(s, by_id.scores[0])
    torch.testing.assert_close(model.score([0, 1], [2, 3], "substitute"),
                               model.for_relation("substitute").score(torch.tensor([0, 1]), torch.tensor([2, 3]),
                                                                      "substitute"))
    with pytest.raises(DataError, match="not in the catalog"):
        model.topk("nope", "complement")
    with pytest.raises(DataError, match="outside"):
        model.score(N + 3, 0, "complement")


def test_for_relation_gives_separate_models(trained):
    root, _, _ = trained
    model = mmsc_dgl.load_model(root / "run")
    sub = model.for_relation("substitute")
    before = {k: v.clone() for k, v in sub.state_dict().items()}
    comp = model.for_relation("complement")
    assert comp is not sub
    assert all(torch.equal(before[k], v) for k, v in sub.state_dict().items())
    run = mmsc_dgl.load_run(root / "run")
    a = run.use_relation("substitute")
    run.use_relation("complement")
    assert all(torch.equal(before[k], v) for k, v in a.state_dict().items())


def test_save_move_and_load_elsewhere_without_the_dataset(trained, tmp_path):
    root, _, _ = trained
    model = mmsc_dgl.load_model(root / "run")
    path = model.save(tmp_path / "model.mmsc")
    with pytest.raises(DataError, match="already exists"):
        model.save(path)
    model.save(path, overwrite=True)
    foreign = tmp_path / "notes.pt"
    foreign.write_text("mine")
    with pytest.raises(DataError, match="never replaced"):
        model.save(foreign, overwrite=True)
    assert foreign.read_text() == "mine"
    moved = tmp_path / "elsewhere" / "m.mmsc"
    moved.parent.mkdir()
    shutil.move(str(path), moved)
    want = model.topk(["P010"], "substitute", k=4)
    # as on a GPU host: DGL cannot be imported at all
    script = ("import sys\nclass NoDGL:\n    def find_spec(self, name, *args):\n"
              "        if name.split('.')[0] == 'dgl': raise ModuleNotFoundError(name)\n"
              "sys.meta_path.insert(0, NoDGL())\n"
              "import json, mmsc_dgl; m = mmsc_dgl.load_model(sys.argv[1], device='cpu'); "
              "t = m.topk(['P010'], 'substitute', k=4); "
              "print(json.dumps({'ids': t.item_ids, 'dgl': 'dgl' in sys.modules}))")
    got = _last_json_line(script, moved, tmp_path)
    assert got["ids"] == want.item_ids and got["dgl"] is False  # no dataset, no DGL needed
    # where DGL is installed, a query on a saved model imports neither it (3.5 s) nor
    # torch._dynamo (1.5 s: CSR asked whether torch.compile was tracing): issue 30.6
    script = ("import sys, json, mmsc_dgl; m = mmsc_dgl.load_model(sys.argv[1], device='cpu'); "
              "t = m.topk(['P010'], 'substitute', k=4); m.score('P010', ['P011'], 'substitute'); "
              "print(json.dumps({'ids': t.item_ids, 'loaded': [n for n in ('dgl', 'torch._dynamo') "
              "if n in sys.modules]}))")
    got = _last_json_line(script, moved, tmp_path)
    assert got["ids"] == want.item_ids and got["loaded"] == []


def _last_json_line(script: str, argument, cwd) -> dict:
    """Run ``script`` in a fresh interpreter with one argument; its last stdout line, as JSON."""
    out = subprocess.run([sys.executable, "-c", script, str(argument)], capture_output=True, text=True, timeout=300,
                         cwd=cwd)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_moved_run_directory_still_loads(trained, tmp_path):
    root, _, _ = trained
    copy = tmp_path / "copied-run"
    shutil.copytree(root / "run", copy)  # the dataset travelled inside (the run wrote it there)
    a = mmsc_dgl.load_model(root / "run").topk([3], "complement", k=3).item_ids
    b = mmsc_dgl.load_model(copy).topk([3], "complement", k=3).item_ids
    assert a == b


def test_features_from_python_in_the_config(tmp_path):
    g = _shop_graph(seed=1, with_users=False)
    ds = mmsc_dgl.dataset_from_graph(g, ntype="product", relations=RELATIONS)
    feats = torch.randn(N, 2, 6)
    mask = torch.ones(N, 2, dtype=torch.bool)
    mask[::3, 1] = False
    run = tmp_path / "run"
    mmsc_dgl.train(ds, out=run, config=_config(epochs=1, features=(feats, mask)), progress=False)
    assert json.loads((run / "config.json").read_text())["features"] == "features.pt"
    model = mmsc_dgl.load_model(run)
    assert "features(dim=6)" in repr(model.module)
    torch.testing.assert_close(model.features.tokens, feats)
    with pytest.raises(Exception, match="rows"):
        mmsc_dgl.train(ds, out=tmp_path / "bad", config=_config(features=torch.randn(N + 1, 4)), progress=False)
    assert not (tmp_path / "bad").exists()


def test_strict_loading_refuses_weights_of_other_content(trained):
    root, ds, _ = trained
    model = mmsc_dgl.load_model(root / "run")
    from mmsc_dgl.models.mmsc import MMSC
    tables = {name: model._tables[name] for name in model._tables}
    bare = MMSC(N, tables, model.config.model, features=None, graph_edges=model._edges)
    with pytest.raises(RuntimeError, match="trained on frozen features"):
        bare.load_state_dict(model.relation_states["substitute"])


def test_a_new_item_from_its_content(trained):
    root, ds, _ = trained
    from mmsc_dgl.eval.cold_start import ColdStart
    model = mmsc_dgl.load_model(root / "run")
    feats = ds.features["tokens"][:3, 0] + 0.01 * torch.randn(3, 12)
    # the run placed its cold items with a content tower, and the model places new items the same way
    assert set(model.cold_start.towers) == {"substitute", "complement"} and model.cold_start.describe().startswith("content tower")
    with_tower = model.embed_new(feats, "complement")
    assert with_tower.shape == (3, model.embed("complement").shape[1])
    torch.testing.assert_close(with_tower.norm(dim=1), torch.ones(3))
    model.cold_start = ColdStart(k=1)  # Eq. 12 alone
    new = model.embed_new(feats, "complement")
    emb = model.embed("complement")
    # its nearest item in content space is the one it copies (unit length)
    torch.testing.assert_close(new, torch.nn.functional.normalize(emb[:3], dim=1))
    if model.cold_start.mix.get("complement", 0) > 0:
        assert not torch.allclose(with_tower, new)
    scores = new @ emb.T
    assert scores.shape == (3, N)
    with pytest.raises(DataError, match="dimensions"):
        model.embed_new(torch.randn(2, 5), "complement")


def test_a_saved_model_keeps_its_content_tower(trained, tmp_path):
    root, ds, _ = trained
    model = mmsc_dgl.load_model(root / "run")
    feats = ds.features["tokens"][:4, 0] + 0.05 * torch.randn(4, 12)
    path = model.save(tmp_path / "moved" / "model.mmsc")
    again = mmsc_dgl.load_model(path)
    assert again.cold_start.mix == model.cold_start.mix and set(again.cold_start.towers) == set(model.cold_start.towers)
    for r in ("substitute", "complement"):
        torch.testing.assert_close(again.embed_new(feats, r), model.embed_new(feats, r))
    # a damaged tower is one line naming the file
    state = torch.load(path, weights_only=True)
    state["cold_start"]["towers"]["substitute"]["weights"]["fc_in.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "bad.mmsc")
    with pytest.raises(DataError, match="bad.mmsc.*damaged"):
        mmsc_dgl.load_model(tmp_path / "bad.mmsc")


def test_mmsc_in_their_own_training_loop(trained):
    root, _, _ = trained
    module = mmsc_dgl.load_model(root / "run").for_relation("complement")
    module.train()
    batch = {"complement": (torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([[4, 5], [6, 7]]))}
    parts = module.loss(batch)  # no generator needed
    parts["total"].backward()
    rows = module(torch.tensor([0, 1]), "complement")
    assert rows.shape[0] == 2 and set(module(torch.tensor([0]))) == {"substitute", "complement"}


def test_metapaths_in_their_edge_type_names(tmp_path):
    g = _shop_graph(seed=2, with_users=False)
    ds = mmsc_dgl.dataset_from_graph(g, ntype="product", relations=RELATIONS)
    paths = [[("product", "also_viewed", "product")],
             [("product", "also_viewed", "product"), ("product", "also_bought", "product")]]
    mmsc_dgl.train(ds, out=tmp_path / "run", config=_config(epochs=1, metapaths=paths), progress=False)
    assert mmsc_dgl.load_model(tmp_path / "run").module.metapaths == ["s", "s-c"]
    with pytest.raises(DataError, match="same_brand"):
        mmsc_dgl.train(ds, out=tmp_path / "bad", config=_config(metapaths=[["same_brand"]]), progress=False)


def test_train_and_augment_stay_callable_after_their_packages_are_imported():
    import importlib
    importlib.import_module("mmsc_dgl.train.trainer")
    importlib.import_module("mmsc_dgl.augment.judge")
    assert callable(mmsc_dgl.train) and callable(mmsc_dgl.augment)
    with pytest.raises(DataError):
        mmsc_dgl.train("/nonexistent/dataset", out="/nonexistent/run")


def test_metapath_tables_for_their_own_graph():
    g = _shop_graph(seed=3)
    tables = mmsc_dgl.build_metapath_tables(g, [["also_viewed"], ["also_viewed", "also_bought"]], strategy="exact",
                                            ntype="product", relations=RELATIONS, progress=False)
    assert list(tables) == ["s", "s-c"]
    # row i lists where walks from i end: the out-neighbours, DGL's metapath_reachable_graph i -> j
    reach = dgl.metapath_reachable_graph(g, ["also_viewed", "also_bought"])
    src, dst = reach.edges()
    want = sorted(set(zip(src.tolist(), dst.tolist())))
    t = tables["s-c"]
    rows = torch.repeat_interleave(torch.arange(t.num_items), t.indptr[1:] - t.indptr[:-1])
    assert sorted(zip(rows.tolist(), t.indices.tolist())) == want


def _pairs(table):
    rows = torch.repeat_interleave(torch.arange(table.num_items), table.indptr[1:] - table.indptr[:-1])
    return sorted(zip(rows.tolist(), table.indices.tolist()))


def test_metapath_tables_through_another_node_type():
    g = _shop_graph(seed=4, rated_by=True)
    through_users = [("product", "rated_by", "user"), ("user", "rated", "product")]
    tables = mmsc_dgl.build_metapath_tables(g, [through_users, ["rated_by", "rated", "also_bought"]],
                                            strategy="exact", ntype="product", relations=RELATIONS, progress=False)
    assert list(tables) == ["rated_by-rated", "rated_by-rated-c"]
    for name, etypes in (("rated_by-rated", ["rated_by", "rated"]),
                         ("rated_by-rated-c", ["rated_by", "rated", "also_bought"])):
        reach = dgl.metapath_reachable_graph(g, etypes)
        assert _pairs(tables[name]) == sorted(zip(*(t.tolist() for t in reach.edges()))), name
    # weights are path counts: the users two items share
    adj = torch.zeros(N, 40)
    src, dst = g.edges(etype="rated_by")
    adj.index_put_((src, dst), torch.ones(len(src)), accumulate=True)
    shared = adj @ adj.T
    t = tables["rated_by-rated"]
    rows = torch.repeat_interleave(torch.arange(N), t.indptr[1:] - t.indptr[:-1])
    torch.testing.assert_close(t.weight, shared[rows, t.indices])
    walked = mmsc_dgl.build_metapath_tables(g, [through_users], max_neighbors=4, ntype="product",
                                            relations=RELATIONS, progress=False)["rated_by-rated"]
    assert set(_pairs(walked)) <= set(_pairs(t)) and int(walked.degrees.max()) <= 4
    with pytest.raises(DataError, match="ends at 'user'"):
        mmsc_dgl.build_metapath_tables(g, [["rated_by"]], ntype="product", relations=RELATIONS, progress=False)
    with pytest.raises(DataError, match="starts at 'user'"):
        mmsc_dgl.build_metapath_tables(g, [["rated", "rated_by"]], ntype="product", relations=RELATIONS,
                                       progress=False)


def test_train_with_a_metapath_through_users(tmp_path):
    g = _shop_graph(seed=5, rated_by=True)
    ds = mmsc_dgl.dataset_from_graph(g, ntype="product", relations=RELATIONS, feat="feat")
    ds.save(tmp_path / "ds")
    loaded = mmsc_dgl.load_dataset(tmp_path / "ds")
    assert {e: s.tolist() for e, (s, _) in loaded.side.edges.items()} == \
        {e: s.tolist() for e, (s, _) in ds.side.edges.items()}
    assert loaded.side.item_type == "product"
    paths = ["s", "c", [("product", "rated_by", "user"), ("user", "rated", "product")]]
    mmsc_dgl.train(tmp_path / "ds", out=tmp_path / "run", config=_config(epochs=1, metapaths=paths), progress=False)
    model = mmsc_dgl.load_model(tmp_path / "run")
    assert model.module.metapaths == ["s", "c", "rated_by-rated"]
    assert model.topk([0, 1], "complement", k=3).nodes.shape == (2, 3)
    with pytest.raises(DataError, match="side edge type"):
        mmsc_dgl.train(tmp_path / "ds", out=tmp_path / "bad", config=_config(metapaths=[["bought_by", "rated"]]),
                       progress=False)


def test_a_feature_file_is_found_after_the_run_moves_and_can_be_re_pointed(tmp_path, monkeypatch):
    from mmsc_dgl.data.node_features import write_feature_file
    g = _shop_graph(seed=6, with_users=False)
    home = tmp_path / "home"
    home.mkdir()
    ds = mmsc_dgl.dataset_from_graph(g, ntype="product", relations=RELATIONS)
    ds.save(home / "ds")
    write_feature_file(home / "feats.pt", ds.catalog.ids.to_pylist(), torch.randn(N, 1, 6), torch.ones(N, 1, dtype=torch.bool))
    monkeypatch.chdir(home)  # the feature file named relative to where training ran
    mmsc_dgl.train("ds", out="run", config=_config(epochs=1, features="feats.pt"), progress=False)
    want = mmsc_dgl.load_model("run").topk([3], "complement", k=3).item_ids
    # moved with its dataset and features, to another place, loaded from another directory
    shutil.move(str(home), tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    moved = tmp_path / "elsewhere"
    assert mmsc_dgl.load_model(moved / "run").topk([3], "complement", k=3).item_ids == want
    # the feature file alone moved: a one-line error naming the fix, then re-pointed
    (moved / "feats.pt").rename(tmp_path / "feats-now.pt")
    with pytest.raises(DataError, match="features=PATH"):
        mmsc_dgl.load_model(moved / "run")
    assert mmsc_dgl.load_model(moved / "run", features=tmp_path / "feats-now.pt").topk(
        [3], "complement", k=3).item_ids == want
    mmsc_dgl.evaluate_run(moved / "run", features=tmp_path / "feats-now.pt")  # run.json now points there
    assert mmsc_dgl.load_model(moved / "run").topk([3], "complement", k=3).item_ids == want
    # other features under the old name are refused, not silently used
    write_feature_file(tmp_path / "other.pt", ds.catalog.ids.to_pylist(), torch.randn(N, 1, 6),
                       torch.ones(N, 1, dtype=torch.bool))
    with pytest.raises(DataError, match="not the one this run was trained on"):
        mmsc_dgl.load_model(moved / "run", features=tmp_path / "other.pt")


def test_what_the_graph_path_writes_can_be_overwritten(tmp_path):
    """features.pt and side_edges.parquet are the package's own files: --overwrite replaces a
    dataset (and a run) holding them, where it refused them as foreign before."""
    g = _shop_graph(seed=7, rated_by=True)
    ds = mmsc_dgl.dataset_from_graph(g, ntype="product", relations=RELATIONS, feat="feat")
    ds.save(tmp_path / "ds")
    assert (tmp_path / "ds" / "features.pt").exists() and (tmp_path / "ds" / "side_edges.parquet").exists()
    ds.save(tmp_path / "ds", overwrite=True)
    config = _config(epochs=1, features=torch.randn(N, 4))
    mmsc_dgl.train(ds, out=tmp_path / "run", config=config, progress=False)
    assert (tmp_path / "run" / "features.pt").exists()
    mmsc_dgl.train(ds, out=tmp_path / "run", config=config, progress=False, overwrite=True)
    (tmp_path / "ds" / "mine.txt").write_text("the user's")
    with pytest.raises(DataError, match="mine.txt"):
        ds.save(tmp_path / "ds", overwrite=True)


def test_a_damaged_saved_model_is_one_line_naming_the_part(trained, tmp_path):
    """Issue 30.4: a corrupted saved model raised a bare ValueError from models/inputs.py, and a
    weight of the wrong shape gave torch's header line without the parameter's name."""
    import torch
    root, _, _ = trained
    path = mmsc_dgl.load_model(root / "run").save(tmp_path / "m.mmsc")
    state = torch.load(path, weights_only=True)
    shrunk = {**state, "features": {**state["features"], "tokens": state["features"]["tokens"][:5],
                                    "mask": state["features"]["mask"][:5]}}
    torch.save(shrunk, tmp_path / "features.mmsc")
    with pytest.raises(DataError, match=r"features.mmsc: the saved model is damaged \(.*features cover 5 items"):
        mmsc_dgl.load_model(tmp_path / "features.mmsc", device="cpu")
    name = next(k for k in state["states"]["complement"] if k.startswith("project.complement"))
    wrong = {**state, "states": {**state["states"], "complement": {
        **state["states"]["complement"], name: torch.zeros(3, 3)}}}
    torch.save(wrong, tmp_path / "shape.mmsc")
    with pytest.raises(DataError, match=rf"size mismatch for {name}"):
        mmsc_dgl.load_model(tmp_path / "shape.mmsc", device="cpu")


def test_new_items_are_asked_about_with_and_without_edges(trained, tmp_path):
    """add_items (issue 31.5): a new id answers topk and score, is a candidate of catalog items,
    its known edges move it (and MMSC counts their paths), and a saved model keeps it, in a
    fresh process without DGL after the file moved."""
    root, ds, _ = trained
    model = mmsc_dgl.load_model(root / "run")
    warm_before = model.topk(["P010"], "complement", k=5)
    feats = ds.features["tokens"][:2, 0] + 0.01 * torch.randn(2, 12)
    nodes = model.add_items(["NEW1", "NEW2"], feats, titles=["first", None])
    assert nodes.tolist() == [N, N + 1] and model.num_items == N + 2
    alone = model.topk("NEW1", "complement", k=5)
    assert len(alone.item_ids[0]) == 5 and "NEW1" not in alone.item_ids[0]
    # topk and score agree for the new item
    torch.testing.assert_close(model.score("NEW1", alone.item_ids[0], "complement"), alone.scores[0])
    # the trained items keep their answers over the same candidates (a new item may join them)
    kept = [i for i in model.topk(["P010"], "complement", k=7).item_ids[0] if not i.startswith("NEW")]
    assert kept[:5] == warm_before.item_ids[0]
    # the placement is the run's cold-start placement of that content
    torch.testing.assert_close(model.embed("complement")[N], model.embed_new(feats, "complement")[0])
    # an edge to a catalog item moves the item toward that item's partners and adds paths through it
    partner = "P100"
    model.add_items(["NEW3"], feats[:1], edges={"complement": [("NEW3", partner)]})
    assert not torch.allclose(model.embed("complement")[N + 2], model.embed("complement")[N])
    term = model.pair_term("complement")
    if term is not None:  # MMSC with path evidence: the new edge makes paths to the partner's neighbours
        row, col, _, _ = term.sparse(model.node_ids(["NEW3"]))
        assert col.numel() > 0
    assert model.node_ids(["NEW3"]).tolist() == [N + 2]
    path = model.save(tmp_path / "with-new.mmsc")
    moved = tmp_path / "moved" / "m.mmsc"
    moved.parent.mkdir()
    shutil.move(str(path), moved)
    want = model.topk(["NEW3", "P010"], "complement", k=4).item_ids
    script = ("import sys\nclass NoDGL:\n    def find_spec(self, name, *args):\n"
              "        if name.split('.')[0] == 'dgl': raise ModuleNotFoundError(name)\n"
              "sys.meta_path.insert(0, NoDGL())\n"
              "import json, mmsc_dgl; m = mmsc_dgl.load_model(sys.argv[1], device='cpu'); "
              "t = m.topk(['NEW3', 'P010'], 'complement', k=4); "
              "print(json.dumps({'ids': t.item_ids, 'n': m.num_items}))")
    got = _last_json_line(script, moved, tmp_path)
    assert got == {"ids": want, "n": N + 3}


def test_bad_new_items_are_one_line_errors(trained):
    root, ds, _ = trained
    model = mmsc_dgl.load_model(root / "run")
    feats = ds.features["tokens"][:1, 0]
    cases = [
        (dict(ids=["P001"], features=feats), "already in the catalog"),
        (dict(ids=["X", "X"], features=feats.repeat(2, 1)), "given twice"),
        (dict(ids=["X"], features=torch.randn(1, 5)), "dimensions"),
        (dict(ids=["X"], features=feats.repeat(2, 1)), "2 rows for 1 ids"),
        (dict(ids=["X"], features=feats * float("nan")), "NaN"),
        (dict(ids=["X"], features=feats, edges={"complement": [("P001", "P002")]}), "already knows"),
        (dict(ids=["X"], features=feats, edges={"compliment": [("X", "P002")]}), "unknown relation 'compliment'"),
        (dict(ids=["X"], features=feats, edges={"complement": [("X", "NOPE")]}), "'NOPE' is neither"),
        (dict(ids=[7], features=feats), "non-empty strings"),
    ]
    for kwargs, message in cases:
        with pytest.raises(DataError, match=message):
            model.add_items(**kwargs)
    assert model.num_items == N  # nothing half-added
    with pytest.raises(DataError, match="add_items"):
        model.node_ids(["NOT-YET"])


def test_the_trained_model_compiles_whole(trained):
    """Issue 30.2: a saved model's rows and scores trace with fullgraph=True (they stopped at
    select_rows' Tensor.item, then at torch.unique) and match eager; tests/test_compile.py
    checks each traced path against the eager one."""
    root, _, _ = trained
    model = mmsc_dgl.load_model(root / "run", device="cpu")
    nodes, src, dst = torch.arange(30), torch.tensor([1, 4, 9]), torch.tensor([2, 2, 17])
    for relation in ("substitute", "complement"):
        net = model.for_relation(relation)
        forward = torch.compile(net, fullgraph=True, backend="aot_eager")
        score = torch.compile(net.score, fullgraph=True, backend="aot_eager")
        with torch.no_grad():
            torch.testing.assert_close(forward(nodes, relation), net(nodes, relation))
            torch.testing.assert_close(score(src, dst, relation), net.score(src, dst, relation))


@pytest.mark.parametrize("impl", ["reference", "dgl"])
def test_the_trained_model_runs_under_bf16_autocast(trained, impl):
    """Issue 30.2: torch.autocast on the trained model, with either CPU kernel (impl='dgl' raised a
    DGLError: bf16 features against f32 attention); rows and scores follow the float32 model."""
    root, _, _ = trained
    model = mmsc_dgl.load_model(root / "run", device="cpu")
    nodes = torch.arange(30)
    for relation in ("substitute", "complement"):
        net = model.for_relation(relation)
        for module in net.modules():
            if hasattr(module, "impl"):
                module.impl = impl
        with torch.no_grad():
            exact = net(nodes, relation)
            exact_scores = net.score(nodes[:10], nodes[10:20], relation)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                rows = net(nodes, relation)
                scores = net.score(nodes[:10], nodes[10:20], relation)
        assert rows.shape == exact.shape and torch.isfinite(rows.float()).all()
        scale = exact.abs().max()
        torch.testing.assert_close(rows.float(), exact, atol=0.05 * float(scale), rtol=0.05)
        torch.testing.assert_close(scores.float(), exact_scores, atol=0.05 * float(exact_scores.abs().max()),
                                   rtol=0.05)
