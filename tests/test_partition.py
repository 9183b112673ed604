"""``mmsc-dgl partition``: the training graph split for DistDGL, with the features the servers
hold and the mapping back to the dataset's ids (issue 15, first step)."""
import json
import subprocess
import sys

import pytest
import torch

dgl = pytest.importorskip("dgl")

from mmsc_dgl import DataError  # noqa: E402
from mmsc_dgl.config import SyntheticConfig  # noqa: E402
from mmsc_dgl.data.dataset import load_dataset  # noqa: E402
from mmsc_dgl.data.prepare import prepare  # noqa: E402
from mmsc_dgl.distributed.partition import load_partition_record, partition_dataset  # noqa: E402
from mmsc_dgl.features.load import load_features  # noqa: E402


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "ds"
    prepare(synthetic=SyntheticConfig(num_items=300, seed=2), out=out, progress=False)
    return out


@pytest.mark.parametrize("method", ["metis", "random"])
def test_partitions_cover_the_training_graph_and_its_features(dataset_dir, tmp_path, method):
    info = partition_dataset(dataset_dir, 2, tmp_path / "parts", method=method, features="hashed", feature_dim=16)
    dataset = load_dataset(dataset_dir)
    train = dataset.train_graph()
    assert sum(p["inner_nodes"] for p in info.parts) == 300
    assert sum(p["inner_edges"] for p in info.parts) == train.num_edges() == info.num_edges
    assert all(p["halo_nodes"] >= 0 and p["edges"] >= p["inner_edges"] for p in info.parts)
    mapping = torch.load(tmp_path / "parts" / "mapping.pt", weights_only=True)
    orig = mapping["orig_nids"]["item"]
    assert sorted(orig.tolist()) == list(range(300))
    # the edge cut, counted here from the node assignment in DistDGL's config
    ranges = json.loads(info.config.read_text())["node_map"]["item"]
    part_of = torch.empty(300, dtype=torch.int64)
    for part, (lo, hi) in enumerate(ranges):
        part_of[orig[lo:hi]] = part
    want = sum(int((part_of[s] != part_of[d]).sum()) for s, d in (train.edges(etype=r) for r in train.etypes))
    assert info.edge_cut == want
    # every partition's features are the dataset's, row for row through the mapping
    feats = load_features("hashed", dataset, 16)
    for part in range(2):
        local, nfeat, _, gpb, *_ = dgl.distributed.load_partition(str(info.config), part)
        inner = local.ndata["inner_node"].bool()
        new_ids = local.ndata["_ID"][inner]
        torch.testing.assert_close(nfeat["item/tokens"], feats.tokens[orig[new_ids]])
    record = load_partition_record(tmp_path / "parts")
    assert record["dataset_fingerprint"] and record["method"] == method and record["edges"]["complement"] > 0


def test_metis_cuts_fewer_edges_than_random(dataset_dir, tmp_path):
    metis = partition_dataset(dataset_dir, 2, tmp_path / "m", method="metis", features="none")
    rand = partition_dataset(dataset_dir, 2, tmp_path / "r", method="random", features="none")
    assert metis.edge_cut < rand.edge_cut


def test_random_partitions_follow_the_seed(dataset_dir, tmp_path):
    a = partition_dataset(dataset_dir, 2, tmp_path / "a", method="random", features="none", seed=3)
    b = partition_dataset(dataset_dir, 2, tmp_path / "b", method="random", features="none", seed=3)
    assert a.parts == b.parts and a.edge_cut == b.edge_cut


def test_an_existing_target_is_refused_before_any_work(dataset_dir, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    with pytest.raises(DataError, match="directory for out"):
        partition_dataset(dataset_dir, 2, mine)
    assert (mine / "notes.txt").read_text() == "the user's" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    partition_dataset(dataset_dir, 2, tmp_path / "p", features="none")
    with pytest.raises(DataError, match="overwrite=True"):
        partition_dataset(dataset_dir, 2, tmp_path / "p", features="none")
    again = partition_dataset(dataset_dir, 3, tmp_path / "p", features="none", overwrite=True)
    assert len(again.parts) == 3 and (tmp_path / "p" / "part2").is_dir()
    with pytest.raises(DataError, match="parts=0"):
        partition_dataset(dataset_dir, 0, tmp_path / "q")


def test_cli_prints_sizes_and_refuses_with_exit_2(dataset_dir, tmp_path):
    cmd = [sys.executable, "-m", "mmsc_dgl", "partition", str(dataset_dir), "--parts", "2", "--out",
           str(tmp_path / "parts"), "--features", "none"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "edge cut:" in done.stdout and "inner nodes" in done.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "Traceback" not in again.stderr and "--overwrite" in again.stderr
