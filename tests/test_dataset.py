import json

import numpy as np
import pytest

from mmsc_dgl.config import PrepareConfig, SplitConfig, SyntheticConfig
from mmsc_dgl.data.dataset import load_dataset
from mmsc_dgl.data.prepare import detect_format, prepare
from mmsc_dgl.errors import DataError
from conftest import write_lines


def test_save_load_round_trip(tmp_path):
    ds = prepare(synthetic=SyntheticConfig(num_items=800, seed=2), out=tmp_path / "ds")
    back = load_dataset(tmp_path / "ds")
    assert back.catalog.table.equals(ds.catalog.table)
    for name in ("substitute", "complement"):
        assert np.array_equal(back.edges[name].src, ds.edges[name].src)
        assert np.array_equal(back.edges[name].data["is_noise"], ds.edges[name].data["is_noise"])
        assert np.array_equal(back.splits.test[name].dst, ds.splits.test[name].dst)
    g = back.graph()
    assert g.num_edges("substitute") == len(ds.edges["substitute"])
    assert back.train_graph().num_edges("complement") == len(ds.splits.train["complement"])
    info = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert info["summary"]["items"] == 800
    assert back.summary()["relations"]["substitute"]["edges"] == len(ds.edges["substitute"])
    assert "Dataset(800 items" in repr(back)


def test_directory_is_written_atomically_and_not_overwritten(tmp_path):
    out = tmp_path / "ds"
    prepare(synthetic=SyntheticConfig(num_items=200), out=out)
    with pytest.raises(DataError, match="already holds an mmsc_dgl dataset.*overwrite=True"):
        prepare(synthetic=SyntheticConfig(num_items=200), out=out)
    prepare(synthetic=SyntheticConfig(num_items=300), out=out, overwrite=True)
    assert load_dataset(out).num_items == 300
    # Nothing but the dataset and its writer lock (no partial or old copies).
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", "ds"]


def test_missing_pieces_are_named(tmp_path):
    out = tmp_path / "ds"
    prepare(synthetic=SyntheticConfig(num_items=200), out=out)
    (out / "edges.parquet").unlink()
    with pytest.raises(DataError, match=r"lacks edges\.parquet.*Fix: re-run mmsc-dgl prepare"):
        load_dataset(out)
    with pytest.raises(DataError, match="not a dataset directory"):
        load_dataset(tmp_path / "nothing")


def test_magazine_end_to_end(tmp_path, magazine_path):
    ds = prepare([magazine_path], out=tmp_path / "mag", progress=False)
    s = ds.summary()
    assert s["items"] == 2320
    # also_view / also_buy edges inside the catalog, made symmetric.
    assert s["relations"]["substitute"]["edges"] == 14060
    assert s["relations"]["complement"]["edges"] == 10916
    skipped = s["report"]["skipped"]
    assert skipped["duplicate item record, identical to an earlier one"] == 1065
    assert skipped["substitute: edge with an endpoint not in the catalog"] == 26939
    assert skipped["complement: edge with an endpoint not in the catalog"] == 33093
    assert ds.graph().num_nodes() == 2320


def test_edgelist_with_pairs_and_item_table(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    edges = write_lines(tmp_path / "e.txt", [f"{1 + i % 2} {i} {(i * 7 + 1) % 50}" for i in range(200)])
    pairs = write_lines(tmp_path / "p.txt", ["1 1 8 1", "1 1 30 0", "2 999 1 1"])
    pq.write_table(pa.table({"item_id": [str(i) for i in range(60)]}), tmp_path / "items.parquet")
    config = PrepareConfig(relation_map="1=complement,2=substitute", split=SplitConfig(num_negatives=5))
    ds = prepare([edges], config=config, items=tmp_path / "items.parquet", pairs=pairs)
    assert ds.num_items == 60
    assert ds.splits.pairs.num_rows == 2
    assert ds.report.counts["labelled pairs with an item not in the catalog"] == 1
    ds.save(tmp_path / "ds")
    assert load_dataset(tmp_path / "ds").splits.pairs.num_rows == 2


def test_prepare_errors(tmp_path):
    with pytest.raises(DataError, match="no input files"):
        prepare()
    with pytest.raises(DataError, match="mix formats"):
        detect_format(["a.json", "b.txt"])
    assert detect_format(["a.json.gz"]) == "amazon" and detect_format(["x.parquet"]) == "parquet"
    lonely = write_lines(tmp_path / "e.txt", ["1 a b"])
    with pytest.raises(DataError, match="no edges at all"):
        prepare([lonely], config=PrepareConfig(relation_map="1=complement"),
                items=_items(tmp_path, ["x", "y"]))


def _items(tmp_path, ids):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_id": ids}), path)
    return path


def test_dataset_from_your_own_heterograph():
    import dgl
    import torch

    from mmsc_dgl.data.prepare import dataset_from_graph
    src = torch.arange(0, 40)
    g = dgl.heterograph({("item", "substitute", "item"): (src, (src + 1) % 40),
                         ("item", "complement", "item"): (src, (src + 7) % 40)}, num_nodes_dict={"item": 40})
    ds = dataset_from_graph(g, titles=[f"item {i}" for i in range(40)],
                            config=PrepareConfig(split=SplitConfig(num_negatives=5)))
    assert ds.num_items == 40 and len(ds.edges["substitute"]) == 80  # made symmetric
    assert ds.catalog.titles()[3] == "item 3"
    assert len(ds.splits.test["complement"]) > 0
    # the only node type is taken as the items; an edge type that maps to no relation is refused
    with pytest.raises(DataError, match="relations="):
        dataset_from_graph(dgl.heterograph({("user", "buys", "user"): (src, src)}))
