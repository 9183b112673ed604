"""Baselines and MMSC ablations: one contract, checked against slow, obvious references."""
import itertools

import numpy as np
import pytest
import torch

from mmsc_dgl import RELATIONS
from mmsc_dgl.config import ARCHITECTURE_NAMES, MODEL_CONFIGS, SyntheticConfig, TrainConfig, model_config
from mmsc_dgl.data.noise import inject_training_noise
from mmsc_dgl.data.prepare import prepare
from mmsc_dgl.features import hashed_text_features
from mmsc_dgl.metapath import build_metapath_tables
from mmsc_dgl.metapath.spec import parse_metapaths
from mmsc_dgl.models import ARCHITECTURES, MMSC, Recommender, build_model
from mmsc_dgl.models.heuristic import NeighbourhoodHeuristic
from mmsc_dgl.models.lightgcn import LightGCN
from mmsc_dgl.runs.training import train

from mmsc_dgl.models.content import ContentCosine  # noqa: E402
from mmsc_dgl.models.decgcn import DecGCN  # noqa: E402
from mmsc_dgl.models.gat import GATPerRelation  # noqa: E402
from mmsc_dgl.models.han import HAN  # noqa: E402
from mmsc_dgl.models.two_tower import ContentTwoTower  # noqa: E402

MODEL_CLASSES = {"mmsc": MMSC, "han": HAN, "gat": GATPerRelation, "lightgcn": LightGCN, "decgcn": DecGCN,
                 "content": ContentCosine, "two-tower": ContentTwoTower, "common-neighbors": NeighbourhoodHeuristic,
                 "adamic-adar": NeighbourhoodHeuristic}
SMALL_FIELDS = dict(hidden=16, heads=2, semantic_hidden=8, ssl_nodes=32, layers=2)


def small(architecture: str):
    """A small model config of ``architecture``: the small sizes that model has."""
    fields = MODEL_CONFIGS[architecture].model_fields
    return model_config(architecture, **{k: v for k, v in SMALL_FIELDS.items() if k in fields})


SMALL = small("mmsc")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "ds"
    prepare(synthetic=SyntheticConfig(num_items=300, seed=2), out=out, progress=False)
    from mmsc_dgl.data.dataset import load_dataset
    return load_dataset(out)


@pytest.fixture(scope="module")
def parts(dataset):
    tables = build_metapath_tables(dataset.train_graph(), "s,c,s-c", max_neighbors=4, progress=False)
    features = hashed_text_features(dataset.catalog.table, dim=32)
    return tables, features


def small_model(dataset, parts, architecture: str):
    """A small, seeded, untrained model of ``architecture`` on the test dataset."""
    tables, features = parts
    torch.manual_seed(0)
    return build_model(architecture, dataset.num_items, small(architecture), tables=tables,
                       train_edges=dataset.splits.train, features=features, impl="reference")


def test_registry_and_config_agree(dataset, parts):
    """Each architecture name, read from a config file, builds the model written down here
    (not derived from the registry's own dict): a name the registry's dispatch forgets would
    fall through to the neighbourhood heuristic, and fails here (issue 30.11: the old test
    compared tuples derived from one dict).  The heuristics record which one they are."""
    assert set(ARCHITECTURE_NAMES) == set(MODEL_CLASSES), "every architecture needs a row in MODEL_CLASSES"
    for name in ARCHITECTURE_NAMES:
        config = TrainConfig.from_mapping({"architecture": name})
        assert type(config.model) is MODEL_CONFIGS[name] and config.model.architecture == name
        model = small_model(dataset, parts, name)
        assert type(model) is MODEL_CLASSES[name], (name, type(model).__name__)
        if isinstance(model, NeighbourhoodHeuristic):
            assert model.method == name.replace("-", "_"), (name, model.method)
    assert set(ARCHITECTURES) == set(MODEL_CLASSES)


def test_each_architecture_takes_only_its_own_settings():
    from mmsc_dgl.errors import DataError
    assert TrainConfig(architecture="lightgcn").model.layers == 2
    assert TrainConfig(architecture="lightgcn", model={"layers": 3}).model.layers == 3
    with pytest.raises(DataError, match="lightgcn.ssl_weight"):
        TrainConfig.from_mapping({"architecture": "lightgcn", "model": {"ssl_weight": 0.0}})
    with pytest.raises(DataError, match="model settings are for 'mmsc' but the architecture is 'gat'"):
        TrainConfig.from_mapping({"architecture": "gat", "model": small("mmsc")})
    with pytest.raises(DataError, match="impl"):
        TrainConfig.from_mapping({"impl": "fastest"})
    again = TrainConfig.model_validate_json(TrainConfig(architecture="decgcn").model_dump_json())
    assert type(again.model).__name__ == "DecGCNConfig"


@pytest.mark.parametrize("architecture", ARCHITECTURE_NAMES)
def test_every_architecture_answers_the_contract(dataset, parts, architecture):
    model = small_model(dataset, parts, architecture)
    assert isinstance(model, Recommender)
    assert type(model) is MODEL_CLASSES[architecture], type(model)
    src, dst = torch.tensor([0, 5, 7, 7]), torch.tensor([1, 2, 9, 7])
    model.eval()
    for r in RELATIONS:
        scores = model.score(src, dst, r)
        assert scores.shape == (4,) and torch.isfinite(scores).all()
        if model.has_embeddings:
            emb = model.embed(r)
            assert emb.shape[0] == dataset.num_items
            ranker = model.ranking_scorer(r, emb)
            # score is what ranking uses: the dot product of embedding rows, plus any pairwise term
            want = (emb[src] * emb[dst]).sum(-1) if isinstance(ranker, torch.Tensor) else ranker(src, dst[:, None])[:, 0]
            torch.testing.assert_close(scores, want, rtol=1e-4, atol=1e-5)
        else:
            with pytest.raises(NotImplementedError):
                model.embed(r)
    g = torch.Generator().manual_seed(0)
    batch = {"generator": g, **{r: (src, dst, torch.randint(0, dataset.num_items, (4, 3), generator=g))
                                for r in RELATIONS}}
    if model.trainable:
        model.train()
        loss = model.loss(batch)
        loss["total"].backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    else:
        assert list(model.parameters()) == []
        with pytest.raises(RuntimeError, match="no parameters"):
            model.loss(batch)


def test_heuristics_match_set_arithmetic(dataset):
    n = dataset.num_items
    neighbours = [set() for _ in range(n)]
    for r in RELATIONS:
        for s, d in zip(dataset.splits.train[r].src, dataset.splits.train[r].dst):
            if s != d:
                neighbours[s].add(int(d))
                neighbours[d].add(int(s))
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, n, (400, 2))
    # include pairs that certainly share neighbours
    hub = max(range(n), key=lambda i: len(neighbours[i]))
    nb = sorted(neighbours[hub])
    pairs = np.r_[pairs, np.array(list(itertools.combinations(nb[:8], 2)))]
    cn = NeighbourhoodHeuristic(n, dataset.splits.train, "common_neighbors")
    aa = NeighbourhoodHeuristic(n, dataset.splits.train, "adamic_adar")
    src, dst = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    want_cn = [len(neighbours[a] & neighbours[b]) for a, b in pairs]
    want_aa = [sum(1 / np.log(len(neighbours[z])) for z in neighbours[a] & neighbours[b]) for a, b in pairs]
    assert max(want_cn) >= 1
    np.testing.assert_allclose(cn.score(src, dst, "substitute").numpy(), want_cn)
    np.testing.assert_allclose(aa.score(src, dst, "complement").numpy(), want_aa, rtol=1e-5)
    # [B, K] candidate matrices (how evaluation calls it) keep their shape
    assert cn.score(src[:6].view(2, 3), dst[:6].view(2, 3), "substitute").shape == (2, 3)

    # links: edges of the other relation first, the heuristic's order within each group, and a
    # relation's own edges never count
    linked = NeighbourhoodHeuristic(n, dataset.splits.train, "adamic_adar", links=True)
    train = dataset.splits.train
    edge = {r: {(int(a), int(b)) for a, b in zip(train[r].src, train[r].dst)} for r in RELATIONS}
    edge = {r: e | {(b, a) for a, b in e} for r, e in edge.items()}
    pairs = np.r_[pairs, np.array(sorted(edge["substitute"]))[:50], np.array(sorted(edge["complement"]))[:50]]
    src, dst = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    plain = aa.score(src, dst, "complement").numpy()
    for r, other in (("complement", "substitute"), ("substitute", "complement")):
        got = linked.score(src, dst, r).numpy()
        is_linked = np.array([(int(a), int(b)) in edge[other] for a, b in pairs])
        assert is_linked.any() and (~is_linked).any()
        assert got[is_linked].min() > got[~is_linked].max()
        for group in (is_linked, ~is_linked):
            np.testing.assert_array_equal(np.argsort(got[group], kind="stable"), np.argsort(plain[group], kind="stable"))

    # every item at once (ranking against the whole catalog) gives the pairwise scores (summed in
    # another order: equal to float64 rounding)
    queries = torch.tensor([hub, 0, n - 1])
    every = torch.arange(n).expand(len(queries), n)
    for model in (cn, aa, linked):
        for r in RELATIONS:
            pairwise = model.score(queries.unsqueeze(1).expand_as(every), every, r)
            whole = model.catalog_scores(queries, r)
            assert whole.dtype == torch.float64
            np.testing.assert_allclose(whole.numpy(), pairwise.numpy(), rtol=1e-12, atol=0)


def test_lightgcn_propagation_matches_dense_reference(dataset):
    torch.manual_seed(0)
    model = LightGCN(dataset.num_items, dataset.splits.train, small("lightgcn"))
    n = dataset.num_items
    for r in RELATIONS:
        a = torch.zeros(n, n)
        e = dataset.splits.train[r]
        a[torch.from_numpy(e.dst), torch.from_numpy(e.src)] = 1.0
        deg = a.sum(1)
        norm = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
        a_hat = norm[:, None] * a * norm[None, :]
        x = model.shared.weight + model.relation[r].weight
        layers = [x]
        for _ in range(small("lightgcn").layers):
            layers.append(a_hat @ layers[-1])
        want = torch.stack(layers).mean(0)
        torch.testing.assert_close(model.propagate(r), want, rtol=1e-4, atol=1e-5)


def test_mmsc_ablations_change_the_architecture(dataset, parts):
    tables, features = parts
    edges = dict(graph_edges=dataset.splits.train)
    full = MMSC(dataset.num_items, tables, SMALL, features, **edges)
    concat = MMSC(dataset.num_items, tables, SMALL.model_copy(update={"semantic_fusion": "concat"}), features, **edges)
    no_task = MMSC(dataset.num_items, tables, SMALL.model_copy(update={"task_gate": False}), features, **edges)
    no_evidence = MMSC(dataset.num_items, tables, SMALL.model_copy(update={"path_evidence": False}), features, **edges)
    han = build_model("han", dataset.num_items, small("han"), tables=tables, features=features)
    keys = lambda m: {k.split(".")[0] for k in m.state_dict()}
    # each part exists only when configured: an absent one has no module and no state_dict keys
    assert {"fusion", "task_gate"} <= keys(full) and type(full.fusion).__name__ == "GateFusion"
    assert "fusion.substitute.proj_a.weight" in full.state_dict()
    assert type(concat.fusion).__name__ == "ConcatFusion" and "fusion.substitute.weight" in concat.state_dict()
    assert "task_gate" not in keys(no_task) and no_task.task_gate is None
    assert "evidence" in keys(full) and "evidence" not in keys(no_evidence) and "evidence" not in keys(han)
    assert not {"fusion", "task_gate"} & keys(han) and type(han.fusion).__name__ == "BehaviourFusion"
    assert han.config.ssl_weight == 0 and repr(han).startswith("HAN(")
    # HAN: an item with no meta-path neighbour keeps its content representation
    han.eval()
    empty = [i for i in range(dataset.num_items) if not any(tables[p].csr().degrees[i] for p in tables)]
    assert empty, "the fixture should have isolated (cold) items"
    nodes = torch.tensor(empty[:3])
    z = han.encode(nodes)
    q = han.content_all()[nodes]
    for r in RELATIONS:
        torch.testing.assert_close(z[r], q)


def test_hops_spec():
    assert [p.name for p in parse_metapaths("hops:1")] == ["s", "c"]
    assert len(parse_metapaths("hops:2")) == 6 and len(parse_metapaths("hops:3")) == 14
    from mmsc_dgl.errors import DataError
    with pytest.raises(DataError, match="hops"):
        parse_metapaths("hops:4")


def test_training_noise_injection(dataset):
    noisy = inject_training_noise(dataset, 0.25, seed=5)
    again = inject_training_noise(dataset, 0.25, seed=5)
    n = dataset.num_items
    cold = set(dataset.splits.cold_items.tolist())
    for r in RELATIONS:
        base, new = dataset.splits.train[r], noisy.splits.train[r]
        assert np.array_equal(new.src, again.splits.train[r].src) and np.array_equal(new.dst, again.splits.train[r].dst)
        added = np.setdiff1d(new.codes(n), base.codes(n))
        assert abs(len(added) - 0.25 * len(base)) <= 2
        assert len(new) == len(base) + len(added)
        known = set(dataset.edges[r].codes(n).tolist())
        assert not known & set(added.tolist())  # never a held-out (or any real) edge
        s, d = added // n, added % n
        assert not cold & set(s.tolist()) | cold & set(d.tolist())
        assert set(added.tolist()) == set((d * n + s).tolist())  # symmetric like the graph
        assert np.all(np.diff(new.codes(n)) > 0)  # sorted, no duplicates
        # evaluation splits untouched
        assert noisy.splits.test[r] is dataset.splits.test[r]
    assert inject_training_noise(dataset, 0.0) is dataset


@pytest.mark.parametrize("architecture", ["lightgcn", "adamic-adar", "content", "two-tower"])
def test_baselines_train_and_evaluate_through_the_harness(dataset, tmp_path, architecture):
    config = TrainConfig(architecture=architecture, epochs=2, batch_size=256, val_queries=100, model=small(architecture))
    result = train(dataset, tmp_path / architecture, config, progress=False)
    chance = 4.6 / (dataset.splits.num_negatives + 1)  # NDCG@10 of a random ranking, about
    for r in RELATIONS:
        floor = 0.0 if (architecture, r) == ("content", "complement") else 3 * chance  # content: no complement signal
        assert floor <= result.metrics["test"][r]["NDCG@10"] <= 1.0, (r, result.metrics["test"][r], chance)
        assert 0.0 <= result.metrics["cold"][r]["NDCG@10"] <= 1.0
    if architecture == "adamic-adar":  # cold items have no edges: no shared neighbour, worst rank
        assert all(result.metrics["cold"][r]["HR@10"] == 0.0 for r in RELATIONS)
    again = train(dataset, tmp_path / (architecture + "2"), config, progress=False)
    assert again.metrics["test"] == result.metrics["test"]


def test_content_baseline_without_features_is_a_clear_error(dataset, tmp_path):
    from mmsc_dgl.errors import DataError
    config = TrainConfig(architecture="content", features="none", epochs=1)
    with pytest.raises(DataError, match="needs content features"):
        train(dataset, tmp_path / "c", config, progress=False)


def test_cli_trains_a_baseline_and_refuses_to_retrieve_with_a_heuristic(dataset, tmp_path):
    from click.testing import CliRunner

    from mmsc_dgl.cli import main
    runner = CliRunner()
    res = runner.invoke(main, ["train", str(dataset.root), "--out", str(tmp_path / "aa"), "--architecture",
                               "adamic-adar", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "substitute" in res.output and "cold" in res.output
    res = runner.invoke(main, ["recommend", str(tmp_path / "aa"), "--item", dataset.catalog.ids[0].as_py(),
                               "--relation", "substitute"])
    assert res.exit_code == 2 and "no item embeddings" in res.output
    res = runner.invoke(main, ["train", str(dataset.root), "--out", str(tmp_path / "x"), "--architecture", "gcn"])
    assert res.exit_code != 0 and "gcn" in res.output


@pytest.mark.parametrize("architecture", ["mmsc", "han", "gat", "lightgcn", "decgcn", "two-tower"])
def test_every_learned_model_resets_its_parameters(dataset, parts, architecture):
    model = small_model(dataset, parts, architecture)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    model.reset_parameters()
    again = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(again[k].shape == first[k].shape for k in first)
    assert any(not torch.equal(again[k], first[k]) for k in first), "reset_parameters changed nothing"
    torch.manual_seed(1)
    model.reset_parameters()
    assert all(torch.equal(model.state_dict()[k], again[k]) for k in first), "reset_parameters is not seeded"


def test_graph_state_follows_the_parameters_not_a_cpu_probe():
    """``.half()`` keeps a model where it is: its graph state must stay there too (it used to move
    to the CPU, because the device was read from ``fn(torch.zeros(1))``).  The meta device
    stands in for CUDA on a machine without one."""
    from mmsc_dgl.models.base import GraphStateModule

    class Tiny(GraphStateModule):
        _graph_state = ("_tables",)

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(2))
            self._tables = {"s": torch.arange(3)}

    model = Tiny().to("meta")
    assert model._tables["s"].device.type == "meta"
    model.half()
    assert model._tables["s"].device.type == "meta" and model.weight.dtype == torch.float16


def test_mmsc_as_in_the_paper_is_one_preset():
    """Issue 30.9: "MMSC as in the paper" is ``model: {preset: paper}`` (it was spelt out in
    each experiment file, and two of them kept path evidence and the graph branch on); a field
    given beside it wins, and the recorded config reads back to the same settings."""
    from mmsc_dgl.config import PAPER_PRESET, TrainConfig
    paper = TrainConfig(model={"preset": "paper"})
    assert paper.cold_start == "eq12"
    assert {k: getattr(paper.model, k) for k in PAPER_PRESET} == PAPER_PRESET
    assert TrainConfig(model={"preset": "paper", "hidden": 32, "ssl_weight": 0.0}, cold_start="tower").model_dump()[
        "model"]["ssl_weight"] == 0.0
    assert TrainConfig.from_mapping(paper.model_dump()) == paper
    default = TrainConfig()
    assert default.model.preset is None and default.model.ssl_weight == 0 and default.cold_start == "tower"
    for path in ("fast.yaml", "full.yaml", "real.yaml"):
        from mmsc_dgl.experiments.config import load_experiment
        from conftest import REPO
        grid = load_experiment(REPO / "examples" / "experiments" / path)
        cell = grid.train_config(next(iter(grid.datasets)), "mmsc-paper", 0)
        assert {k: getattr(cell.model, k) for k in PAPER_PRESET} == PAPER_PRESET and cell.cold_start == "eq12", path
