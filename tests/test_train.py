"""MMSC end to end on tiny data: contract, training, resume, evaluation, recommendation, errors."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from mmsc_dgl.cli import main
from mmsc_dgl.config import ModelConfig, SyntheticConfig, TrainConfig
from mmsc_dgl.data.prepare import prepare
from mmsc_dgl.errors import DataError
from mmsc_dgl.features import hashed_text_features
from mmsc_dgl.metapath import build_metapath_tables
from mmsc_dgl.models import MMSC, Recommender
from mmsc_dgl import runs
from mmsc_dgl.eval.evaluator import Evaluator
from mmsc_dgl.train.build import build_run
from mmsc_dgl.train.trainer import Trainer

TINY = dict(metapaths="s,c,s-c,c-s", max_neighbors=4, epochs=3, batch_size=256, val_queries=150,
            model=ModelConfig(hidden=16, heads=2, semantic_hidden=8, ssl_nodes=32))


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "ds"
    prepare(synthetic=SyntheticConfig(num_items=300, seed=1), out=out)
    from mmsc_dgl.data.dataset import load_dataset
    return load_dataset(out)


def test_model_contract(tiny_dataset):
    tables = build_metapath_tables(tiny_dataset.train_graph(), "s,c-s", max_neighbors=4, progress=False)
    for features in (hashed_text_features(tiny_dataset.catalog.table, dim=32), None):
        torch.manual_seed(0)
        model = MMSC(300, tables, ModelConfig(hidden=16, heads=2, path_evidence=False, graph_branch=0, loss="triplet",
                                ssl_weight=0.1), features)
        assert isinstance(model, Recommender)
        src, dst = torch.tensor([0, 5, 7]), torch.tensor([1, 2, 9])
        model.eval()
        for r in ("substitute", "complement"):
            emb = model.embed(r)
            assert emb.shape == (300, 16)
            sign = model.signature(r)  # complements: the last half of the dimensions count negatively
            assert (sign is None) == (r == "substitute") and (r == "substitute" or sign.tolist() == [1.0] * 8 + [-1.0] * 8)
            targets = model.targets(r, emb)
            torch.testing.assert_close(model.score(src, dst, r), (emb[src] * targets[dst]).sum(-1), rtol=1e-5, atol=1e-5)
        model.train()
        g = torch.Generator().manual_seed(0)
        batch = {"generator": g, "substitute": (src, dst, torch.randint(0, 300, (3, 2), generator=g))}
        parts = model.loss(batch)
        assert set(parts) == {"ranking", "infonce", "total"}
        parts["total"].backward()
        assert f"content={'features(dim=32)+id-embeddings' if features is not None else 'id-embeddings'})" \
            in repr(model), repr(model)


def test_train_then_resume_matches_uninterrupted(tiny_dataset, tmp_path):
    config = TrainConfig(**TINY, seed=3)
    full = runs.train(tiny_dataset.root, tmp_path / "full", config, progress=False)
    runs.train(tiny_dataset.root, tmp_path / "part", config, progress=False, stop_after=1)
    # A new process would start from scratch: everything is rebuilt and resumed from disk.
    resumed = runs.train(tiny_dataset.root, tmp_path / "part", config, progress=False, resume=True)
    assert resumed.metrics == full.metrics
    assert resumed.history == [{**h, "seconds": r["seconds"], "train_seconds": r["train_seconds"]}
                                 for h, r in zip(full.history, resumed.history)]
    assert resumed.best_epoch == full.best_epoch
    ckpt = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == len(full.history)
    m = full.metrics
    assert set(m["test"]) == {"substitute", "complement"} and m["test"]["substitute"]["queries"] > 0
    assert 0.05 < m["test"]["substitute"]["NDCG@10"] <= 1
    assert "cold" in m and "mean of 10 nearest items" in m["cold_start_method"]


def test_resume_with_another_config_is_refused(tiny_dataset, tmp_path):
    runs.train(tiny_dataset.root, tmp_path / "r", TrainConfig(**TINY), progress=False, stop_after=1)
    other = TrainConfig(**{**TINY, "lr": 0.1})
    with pytest.raises(DataError, match="lr: 0.005 -> 0.1"):
        runs.train(tiny_dataset.root, tmp_path / "r", other, progress=False, resume=True)
    with pytest.raises(DataError, match="already holds an mmsc_dgl run.*resume=True"):
        runs.train(tiny_dataset.root, tmp_path / "r", TrainConfig(**TINY), progress=False)
    # The trainer itself refuses a checkpoint made under another identity.
    parts = build_run(tiny_dataset, TrainConfig(**TINY), tmp_path / "r", progress=False)
    trainer = Trainer(parts.model, parts.config, checkpoint=tmp_path / "r" / "checkpoint.pt", identity="another")
    with pytest.raises(DataError, match="another config"):
        trainer.fit(parts.batches(), Evaluator(parts.dataset, parts.config).validate, resume=True)


def test_bad_training_inputs(tiny_dataset, tmp_path):
    edges = tmp_path / "e_llm.parquet"
    pq.write_table(pa.table({"relation": ["substitute"], "src": [0], "dst": [1]}), edges)
    with pytest.raises(DataError, match="relation 'complement' has no training edges"):
        build_run(tiny_dataset, TrainConfig(**TINY, train_edges=str(edges)), tmp_path / "a")
    feats = tmp_path / "f.pt"
    torch.save({"item_ids": ["x"] * 3, "tokens": torch.zeros(3, 1, 4), "mask": torch.ones(3, 1, dtype=torch.bool)}, feats)
    with pytest.raises(DataError, match="do not match the catalog"):
        build_run(tiny_dataset, TrainConfig(**TINY, features=str(feats)), tmp_path / "b")
    ids = tiny_dataset.catalog.ids.to_pylist()
    tokens = torch.zeros(300, 1, 4)
    tokens[5, 0, 1] = float("nan")
    torch.save({"item_ids": ids, "tokens": tokens, "mask": torch.ones(300, 1, dtype=torch.bool)}, feats)
    with pytest.raises(DataError, match="NaN or inf"):
        build_run(tiny_dataset, TrainConfig(**TINY, features=str(feats)), tmp_path / "c")


def test_id_embedding_mode_and_filtered_edges(tiny_dataset, tmp_path):
    train = tiny_dataset.splits.train
    half = {r: (train[r].src[::2], train[r].dst[::2]) for r in train}
    table = pa.table({"relation": [r for r in half for _ in half[r][0]],
                      "src": np.concatenate([half[r][0] for r in half]),
                      "dst": np.concatenate([half[r][1] for r in half])})
    pq.write_table(table, tmp_path / "e.parquet")
    cfg = TrainConfig(**{**TINY, "epochs": 1}, features="none", train_edges=str(tmp_path / "e.parquet"))
    parts = build_run(tiny_dataset, cfg, progress=False)
    assert len(parts.train_edges["substitute"]) == len(half["substitute"][0])
    result = runs.train(tiny_dataset.root, tmp_path / "ids", cfg, progress=False)
    assert result.metrics["cold_start_method"].startswith("none")


def test_cli_train_evaluate_recommend(tiny_dataset, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("metapaths: s,c\nmax_neighbors: 4\nepochs: 1\nval_queries: 100\n"
                   "model:\n  hidden: 16\n  heads: 2\n  semantic_hidden: 8\n  ssl_nodes: 16\n")
    runner = CliRunner()
    run_dir = tmp_path / "run"
    r = runner.invoke(main, ["train", str(tiny_dataset.root), "--out", str(run_dir), "--config", str(cfg),
                             "--seed", "1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "NDCG@10" in r.output and (run_dir / "metrics.json").exists()
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 1
    r = runner.invoke(main, ["evaluate", str(run_dir), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["test"] == json.loads((run_dir / "metrics.json").read_text())["test"]
    r = runner.invoke(main, ["evaluate", str(run_dir), "--full-catalog", "--json"])
    assert r.exit_code == 0, r.output
    full = json.loads(r.output)
    for rel in ("substitute", "complement"):  # every item is a candidate: never easier than 1,000 sampled
        assert full["test_full_catalog"][rel]["queries"] == full["test"][rel]["queries"]
        assert full["test_full_catalog"][rel]["HR@10"] <= full["test"][rel]["HR@10"]
    r = runner.invoke(main, ["evaluate", str(run_dir), "--full-catalog"])
    assert r.exit_code == 0 and "against every item of the catalog" in r.output, r.output
    item = tiny_dataset.catalog.ids[0].as_py()
    r = runner.invoke(main, ["recommend", str(run_dir), "--item", item, "--relation", "complement", "-k", "3"])
    assert r.exit_code == 0, r.output
    assert len(r.output.strip().splitlines()) == 3
    r = runner.invoke(main, ["recommend", str(run_dir), "--item", "NOPE", "--relation", "substitute"])
    assert r.exit_code == 2 and "item 'NOPE' is not in the catalog" in r.output
    r = runner.invoke(main, ["recommend", str(run_dir), "--all", "--relation", "substitute", "-k", "2",
                             "--out", str(tmp_path / "recs.parquet")])
    assert r.exit_code == 0, r.output
    recs = pq.read_table(tmp_path / "recs.parquet")
    assert recs.num_rows == 600 and set(recs.column_names) >= {"item_id", "rank", "recommended_id", "score"}
    r = runner.invoke(main, ["evaluate", str(tmp_path)])
    assert r.exit_code == 2 and "not an mmsc_dgl run directory" in r.output


def test_evaluate_with_pair_file(tiny_dataset, tmp_path):
    runs.train(tiny_dataset.root, tmp_path / "run", TrainConfig(**TINY), progress=False)
    test = tiny_dataset.splits.test["complement"]
    ids = tiny_dataset.catalog.ids.to_pylist()
    rng = np.random.default_rng(0)
    lines = [f"complement {ids[s]} {ids[d]} 1" for s, d in zip(test.src[:30], test.dst[:30])]
    lines += [f"complement {ids[a]} {ids[b]} 0" for a, b in rng.integers(0, 300, (30, 2)) if a != b]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    metrics = runs.evaluate_run(tmp_path / "run", pairs=tmp_path / "pairs.txt")
    m = metrics["pairs"]["complement"]
    # 30 test edges against 30 random pairs: a trained model ranks most positives above them.
    assert m["ROC-AUC"] > 0.6 and m["threshold_from_validation"] and m["pairs"] == len(lines)


def test_a_stored_config_without_a_newer_field_keeps_how_it_was_trained():
    """complement_signature defaults to 0.5 now; a run or saved model written before it existed
    was trained with a dot product, and must be read back so (TrainConfig.from_stored)."""
    from mmsc_dgl.config import TrainConfig
    old = json.loads(TrainConfig().model_dump_json())
    del old["model"]["complement_signature"]
    assert TrainConfig.from_stored(old).model.complement_signature == 0.0
    assert TrainConfig.from_mapping({}).model.complement_signature == 0.5
    lightgcn = json.loads(TrainConfig(architecture="lightgcn").model_dump_json())
    assert TrainConfig.from_stored(lightgcn).model.architecture == "lightgcn"


def test_a_diverging_loss_stops_training_with_one_line():
    """A NaN loss is an error naming the epoch and step, never a model that goes on to be
    evaluated (a NaN score used to rank every target first: every comparison with NaN is False)."""
    from mmsc_dgl.config import TrainConfig
    from mmsc_dgl.errors import DataError
    from mmsc_dgl.eval.ranking import ranks
    from mmsc_dgl.train.trainer import Trainer

    class Diverges(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))
            self.calls = 0

        def loss(self, batch):
            self.calls += 1
            total = self.w * (float("nan") if self.calls == 3 else 1.0)
            return {"total": total}

    model = Diverges()
    with pytest.raises(DataError, match=r"diverged: the loss became nan at epoch 1, step 3.*TrainConfig.lr"):
        Trainer(model, TrainConfig(epochs=2), progress=False).fit(lambda g: [{}] * 5, lambda m: {})
    assert ranks(torch.tensor([float("nan")]), torch.zeros(1, 4)).tolist() == [5]


def test_the_run_asks_the_model_for_its_after_training_step(tiny_dataset, tmp_path, monkeypatch):
    """What happens after fit is the model's own step (Recommender.after_training): the run saves
    and tests the states it returns and writes its report, and reads no part of the model."""
    from mmsc_dgl.models.lightgcn import LightGCN
    from mmsc_dgl.train.checkpoint import load_checkpoint
    seen = {}

    def after_training(self, relation_states, evaluator):
        seen["relations"] = sorted(relation_states)
        states = {r: {k: (v * 0 if r == "substitute" and v.is_floating_point() else v) for k, v in s.items()}
                  for r, s in relation_states.items()}
        return states, {"zeroed": {"relation": "substitute"}}

    monkeypatch.setattr(LightGCN, "after_training", after_training)
    config = TrainConfig(**{**{k: v for k, v in TINY.items() if k != "model"}, "architecture": "lightgcn",
                            "cold_start": "eq12"})
    result = runs.train(tiny_dataset.root, tmp_path / "run", config, progress=False)
    assert seen["relations"] == ["complement", "substitute"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["zeroed"] == {"relation": "substitute"}
    saved = load_checkpoint(tmp_path / "run" / "model.pt")["states"]
    assert float(saved["substitute"]["shared.weight"].abs().sum()) == 0.0
    assert float(saved["complement"]["shared.weight"].abs().sum()) > 0.0
    # The zeroed relation scores every pair 0, and ties rank the target last: the test metrics
    # are those of the returned states, not of the trained ones.
    assert result.metrics["test"]["substitute"]["NDCG@10"] == 0.0 < result.metrics["test"]["complement"]["NDCG@10"]


def test_a_model_without_the_hook_is_finished_as_it_is(tiny_dataset):
    """finish() takes any module with a loss (the trainer does): no after_training, no change."""
    from mmsc_dgl.runs.finishing import after_training
    states = {"substitute": {"w": torch.ones(2)}, "complement": {"w": torch.zeros(2)}}
    assert after_training(torch.nn.Linear(2, 2), states, None) == (states, {})
    assert Recommender.after_training(None, states, None) == (states, {})
