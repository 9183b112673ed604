"""Given splits (prepare TRAIN --valid VALID --test TEST): every given training edge trains,
held-out positives that are also training edges are counted (kept, or dropped on request), and
the protocol's options refuse each other's company with one-line errors."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from mmsc_dgl.cli import main
from mmsc_dgl.config import PrepareConfig
from mmsc_dgl.data.prepare import prepare
from mmsc_dgl.errors import DataError


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    train = set()
    while len(train) < 600:
        a, b = rng.integers(0, 80, 2)
        if a != b:
            train.add((str(rng.choice(["s", "c"])), int(a), int(b)))
    train = sorted(train)
    heldout = [("s", 1, 2), ("s", 3, 4), ("c", 5, 6), ("c", 7, 8)]
    train = [t for t in train if (t[1], t[2]) not in {(a, b) for _, a, b in heldout}
             and (t[2], t[1]) not in {(a, b) for _, a, b in heldout}]
    train_lines = [f"{r} {a} {b}" for r, a, b in train] + ["s 3 4"]  # one test positive also trains
    valid = [f"{r} {a} {b}" for r, a, b in heldout[::2]]                # s 1 2, c 5 6 (unlabelled)
    test = [f"{r} {a} {b} 1" for r, a, b in heldout[1::2]] + ["s 10 11 0", "c 12 13 0", "s 1 999 1"]
    return (write(tmp_path / "train.txt", train_lines), write(tmp_path / "valid.txt", valid),
            write(tmp_path / "test.txt", test), train)


def test_every_given_training_edge_trains(files):
    train_file, valid, test, train = files
    ds = prepare([train_file], valid=valid, test=test, progress=False)
    codes = lambda e: set(zip(e.src.tolist(), e.dst.tolist()))  # noqa: E731
    node = {i: n for n, i in enumerate(ds.catalog.ids.to_pylist())}
    given = {(node[str(a)], node[str(b)]) for r, a, b in train if r == "s"} | {(node["3"], node["4"])}
    trained = codes(ds.splits.train["substitute"])
    assert given <= trained and all((b, a) in trained for a, b in given)  # symmetric by default
    assert codes(ds.splits.val["substitute"]) == {(node["1"], node["2"])}
    assert codes(ds.splits.test["substitute"]) == {(node["3"], node["4"])}
    assert codes(ds.splits.test["complement"]) == {(node["7"], node["8"])}
    stats = ds.splits.stats["substitute"]
    assert stats["training_edges_that_are_test_pairs"] == 2 and stats["overlap"].startswith("kept")
    assert len(ds.splits.cold_items) == 0 and ds.splits.stats["protocol"] == "given"
    assert ds.splits.pairs.num_rows == 4  # the labelled test file; the pair with an unknown item is skipped
    assert ds.report.counts["test pairs with an item not in the catalog"] == 1
    # negatives are never a known edge, held-out ones included
    sampler = ds.negative_sampler()
    neg = sampler.sample("substitute", "test", np.arange(1), ds.splits.test["substitute"].src)
    assert node["4"] not in set(neg[0].tolist())
    dropped = prepare([train_file], valid=valid, test=test, progress=False,
                      config=PrepareConfig(drop_overlap=True))
    assert (node["3"], node["4"]) not in codes(dropped.splits.train["substitute"])
    assert len(dropped.splits.train["substitute"]) == len(ds.splits.train["substitute"]) - 2


def test_parquet_held_out_files_read_the_same(files, tmp_path):
    train_file, valid, _, _ = files
    test = tmp_path / "test.parquet"
    pq.write_table(pa.table({"relation": ["s", "c"], "src": ["3", "7"], "dst": ["4", "8"]}), test)
    ds = prepare([train_file], valid=valid, test=test, progress=False)
    assert len(ds.splits.test["substitute"]) == 1 and len(ds.splits.test["complement"]) == 1
    assert ds.splits.pairs is None  # unlabelled: ranking metrics only


@pytest.mark.parametrize("args, message", [
    (["--valid", "V"], "--test is missing"),
    (["--holdout", "none"], "--holdout none holds nothing out"),
    (["--valid", "V", "--test", "T", "--holdout", "per-item"], "--holdout per-item carves"),
    (["--drop-overlap"], "--drop-overlap is for given splits"),
    (["--valid", "V", "--test", "T", "--cold-fraction", "0.1"], "no cold-start split"),
])
def test_protocol_options_refuse_bad_company(files, tmp_path, args, message):
    train_file, valid, test, _ = files
    args = [str(valid) if a == "V" else str(test) if a == "T" else a for a in args]
    result = CliRunner().invoke(main, ["prepare", str(train_file), "--out", str(tmp_path / "ds"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("kwargs, message", [
    (dict(valid="V"), "test= is missing"),
    (dict(config=PrepareConfig(holdout="none")), "holdout= none holds nothing out"),
    (dict(valid="V", test="T", config=PrepareConfig(holdout="per-item")), "but valid= and test= were given"),
    (dict(config=PrepareConfig(drop_overlap=True)), "drop_overlap=True is for given splits"),
])
def test_a_python_caller_is_told_the_arguments_it_passed(files, kwargs, message):
    """Issue 30.4: the same refusals from Python name prepare()'s arguments, not the CLI's flags."""
    train_file, valid, test, _ = files
    kwargs = {k: valid if v == "V" else test if v == "T" else v for k, v in kwargs.items()}
    with pytest.raises(DataError, match=message) as caught:
        prepare([train_file], progress=False, **kwargs)
    assert "--" not in str(caught.value)


def test_given_splits_train_and_report_pairs(files, tmp_path):
    from mmsc_dgl.config import ModelConfig, TrainConfig
    from mmsc_dgl.runs.training import train
    train_file, valid, test, _ = files
    result = CliRunner().invoke(main, ["prepare", str(train_file), "--valid", str(valid), "--test", str(test),
                                       "--out", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert "given splits, substitute: 0 training edges are validation pairs and 2 are test pairs" in result.output
    config = TrainConfig(metapaths="s,c", max_neighbors=4, epochs=1, batch_size=256,
                         model=ModelConfig(hidden=8, heads=2, semantic_hidden=4, ssl_nodes=16))
    out = train(tmp_path / "ds", tmp_path / "run", config, progress=False)
    assert out.metrics["test"]["substitute"]["queries"] == 1 and "cold" not in out.metrics
    assert set(out.metrics["pairs"]) == {"substitute", "complement"}


def test_labelled_validation_pairs_choose_the_f1_threshold(files, tmp_path):
    from mmsc_dgl.data.dataset import load_dataset
    train_file, _, test, _ = files
    valid = write(tmp_path / "valid_labelled.txt", ["s 1 2 1", "s 20 21 0", "c 5 6 1", "c 22 23 0"])
    prepare([train_file], valid=valid, test=test, out=tmp_path / "ds", progress=False)
    ds = load_dataset(tmp_path / "ds")  # kept through save and load
    assert ds.splits.val_pairs.num_rows == 4 and len(ds.splits.val["substitute"]) == 1

    from mmsc_dgl.config import TrainConfig
    from mmsc_dgl.eval.evaluator import Evaluator
    evaluator = Evaluator(ds, TrainConfig())
    score = lambda a, b: (a * 1000 + b[:, 0]).float().unsqueeze(1)  # noqa: E731
    pair_scores = lambda s, a, b: s(torch.tensor(a), torch.tensor(b).unsqueeze(1))[:, 0].numpy()  # noqa: E731
    labels, scores = evaluator._threshold_pairs(score, pair_scores, "substitute")
    node = {i: n for n, i in enumerate(ds.catalog.ids.to_pylist())}
    assert labels.tolist() == [1, 0]
    assert scores.tolist() == [node["1"] * 1000 + node["2"], node["20"] * 1000 + node["21"]]


def test_given_test_pairs_without_a_training_edge_are_reported_as_cold():
    """Issue 31.6: given splits have no cold items, so the test queries whose source has no
    training edge (placed as cold items are) are the cold-start block, counted, instead of none."""
    from types import SimpleNamespace
    from mmsc_dgl.eval.evaluator import Evaluator
    config = SimpleNamespace(ks=[10], cold_neighbors=10)
    evaluator = Evaluator(SimpleNamespace(negative_sampler=lambda: None), config)
    bucket = {"HR@10": 0.5, "MRR@10": 0.25, "NDCG@10": 0.3, "queries": 4}
    test = {"substitute": {"NDCG@10": 0.6, "queries": 40, "by_bucket": {"0": bucket, "1-2": {"queries": 36}}},
            "complement": {"NDCG@10": 0.5, "queries": 30, "by_bucket": {"3-10": {"queries": 30}}}}
    cold, method = evaluator._cold_from_test(test, placed=True)
    assert cold["substitute"] == bucket and cold["complement"]["queries"] == 0
    assert np.isnan(cold["complement"]["NDCG@10"]) and "every complement test source" in cold["complement"]["reason"]
    assert "4 of 40 substitute, 0 of 30 complement" in method and method.startswith("mean of 10 nearest")
    test["substitute"]["by_bucket"].pop("0")
    assert evaluator._cold_from_test(test, placed=True) is None  # every source has an edge: no block
