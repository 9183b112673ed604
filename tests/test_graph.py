import numpy as np
import pyarrow as pa
import pytest
import torch

from mmsc_dgl.data.catalog import ItemCatalog
from mmsc_dgl.data.edges import RelationEdges, canonical_edges
from mmsc_dgl.data.graph import build_graph, edges_from_raw, graph_edges
from mmsc_dgl.data.report import SkipReport
from mmsc_dgl.errors import DataError


def _raw(rows):
    rel, src, dst = zip(*rows)
    return pa.table({"relation": list(rel), "src": list(src), "dst": list(dst),
                     "label": pa.array([1] * len(rows), pa.int8())})


def test_unknown_items_self_loops_duplicates_are_counted():
    catalog = ItemCatalog.from_ids(["a", "b", "c"])
    raw = _raw([("substitute", "a", "b"), ("substitute", "a", "b"), ("substitute", "a", "a"),
                ("substitute", "a", "zz"), ("complement", "b", "c"), ("complement", "c", "b")])
    report = SkipReport()
    edges = edges_from_raw(catalog, raw, report, symmetric=False)
    assert list(zip(edges["substitute"].src, edges["substitute"].dst)) == [(0, 1)]
    assert list(zip(edges["complement"].src, edges["complement"].dst)) == [(1, 2), (2, 1)]
    assert report.counts["substitute: duplicate edge"] == 1
    assert report.counts["substitute: self-loop"] == 1
    assert report.counts["substitute: edge with an endpoint not in the catalog"] == 1
    assert report.examples["substitute: edge with an endpoint not in the catalog"] == ["a->zz"]

    report = SkipReport()
    sym = edges_from_raw(catalog, raw, report, symmetric=True)
    assert list(zip(sym["substitute"].src, sym["substitute"].dst)) == [(0, 1), (1, 0)]
    assert list(zip(sym["complement"].src, sym["complement"].dst)) == [(1, 2), (2, 1)]
    assert report.notes["substitute: reverse edges added (--symmetric)"] == 1
    assert "complement: reverse edges added (--symmetric)" not in report.notes


def test_canonical_edges_keep_data_of_first_and_sort():
    report = SkipReport()
    e = canonical_edges(np.array([2, 0, 2]), np.array([1, 1, 1]), 3, "substitute", report,
                        data={"is_noise": np.array([True, False, False])}, symmetric=True)
    assert list(zip(e.src, e.dst)) == [(0, 1), (1, 0), (1, 2), (2, 1)]
    assert e.data["is_noise"].tolist() == [False, False, True, True]
    indptr, indices = e.csr(3)
    assert indptr.tolist() == [0, 1, 3, 4] and indices.tolist() == [1, 0, 2, 1]


def test_build_graph_types_and_features():
    edges = {"substitute": RelationEdges(np.array([0, 1]), np.array([1, 0]), {"is_noise": np.array([True, False])}),
             "complement": RelationEdges(np.array([2]), np.array([3]))}
    g = build_graph(5, edges)
    assert g.ntypes == ["item"] and g.num_nodes("item") == 5
    assert set(g.canonical_etypes) == {("item", "substitute", "item"), ("item", "complement", "item")}
    assert g.idtype == torch.int64
    assert g.edges["substitute"].data["is_noise"].tolist() == [True, False]
    back = graph_edges(g, "substitute")
    assert back.src.tolist() == [0, 1] and back.data["is_noise"].tolist() == [True, False]


def test_no_edges_at_all_is_an_error():
    empty = {"substitute": RelationEdges(np.zeros(0), np.zeros(0)), "complement": RelationEdges(np.zeros(0), np.zeros(0))}
    with pytest.raises(DataError, match=r"has no edges at all.*Fix: check PrepareConfig\(relation_map="):
        build_graph(4, empty)
    assert build_graph(4, empty, require_edges=False).num_edges() == 0


def test_catalog_lookup():
    catalog = ItemCatalog.from_ids(["x", "y"])
    assert catalog.index_of(["y", "nope", "x"]).tolist() == [1, -1, 0]
    assert catalog.node("y") == 1
    with pytest.raises(DataError, match="item 'q' is not in the catalog"):
        catalog.node("q")
    assert "ItemCatalog(2 items" in repr(catalog)
