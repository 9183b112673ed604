import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmsc_dgl.data.parquet import read_edge_table, read_item_table, read_parquet_inputs
from mmsc_dgl.data.relations import RelationMap
from mmsc_dgl.errors import DataError


def test_item_and_edge_tables(tmp_path):
    pq.write_table(pa.table({"item_id": [10, 20, 30], "title": ["a", "b", "c"], "extra": [1, 2, 3]}),
                   tmp_path / "items.parquet")
    pq.write_table(pa.table({"relation": [1, 2, 1], "src": [10, 20, 30], "dst": [20, 30, 10],
                             "label": [1, 1, 0]}), tmp_path / "edges.parquet")
    read = read_parquet_inputs([tmp_path / "edges.parquet", tmp_path / "items.parquet"],
                               RelationMap.edgelist("1=complement,2=substitute"))
    assert read.catalog.ids.to_pylist() == ["10", "20", "30"]
    assert "extra" in read.catalog.table.column_names and "description" in read.catalog.table.column_names
    assert read.edges.column("relation").to_pylist() == ["complement", "substitute", "complement"]
    assert read.edges.column("label").to_pylist() == [1, 1, 0]


def test_parquet_errors(tmp_path):
    pq.write_table(pa.table({"a": [1]}), tmp_path / "odd.parquet")
    with pytest.raises(DataError, match=r"odd\.parquet: neither an item table"):
        read_parquet_inputs([tmp_path / "odd.parquet"])
    pq.write_table(pa.table({"relation": ["x"], "src": ["a"], "dst": ["b"]}), tmp_path / "e.parquet")
    with pytest.raises(DataError, match=r"e\.parquet: relation 'x' is not in the relation map"):
        read_edge_table(tmp_path / "e.parquet")
    pq.write_table(pa.table({"src": ["a"], "dst": ["b"]}), tmp_path / "norel.parquet")
    with pytest.raises(DataError, match="neither an item table"):
        read_parquet_inputs([tmp_path / "norel.parquet"])
    with pytest.raises(DataError, match=r"lacks columns \['relation'\]"):
        read_edge_table(tmp_path / "norel.parquet")
    pq.write_table(pa.table({"item_id": ["a", "a"]}), tmp_path / "dup.parquet")
    with pytest.raises(DataError, match=r"dup\.parquet: the item table repeats 1 item ids"):
        read_item_table(tmp_path / "dup.parquet")
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="the file is empty"):
        read_item_table(tmp_path / "empty.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable parquet file"):
        read_item_table(tmp_path / "bad.parquet")
    pq.write_table(pa.table({"item_id": pa.array([], pa.string())}), tmp_path / "none.parquet")
    with pytest.raises(DataError, match="has no rows"):
        read_item_table(tmp_path / "none.parquet")
