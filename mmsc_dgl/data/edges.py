"""Raw edges as readers find them: item ids as strings, relations already mapped to names."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.data.report import SkipReport

RAW_EDGE_SCHEMA = pa.schema([
    pa.field("relation", pa.string(), nullable=False),
    pa.field("src", pa.string(), nullable=False),
    pa.field("dst", pa.string(), nullable=False),
    pa.field("label", pa.int8(), nullable=False),
])
"""What every reader hands to the graph builder: one row per edge as written in the input.
``label`` is 1 for an edge and 0 for a labelled non-edge (pair files)."""


class EdgeCollector:
    """Accumulates raw edges in compact Arrow chunks while a reader streams."""

    def __init__(self, chunk_rows: int = 1 << 18):
        self.chunk_rows = chunk_rows
        self._chunks: List[pa.RecordBatch] = []
        self._cols: Dict[str, list] = {f.name: [] for f in RAW_EDGE_SCHEMA}

    def add(self, relation: str, src: str, dst: str, label: int = 1) -> None:
        cols = self._cols
        cols["relation"].append(relation)
        cols["src"].append(src)
        cols["dst"].append(dst)
        cols["label"].append(label)
        if len(cols["src"]) >= self.chunk_rows:
            self._flush()

    def add_many(self, relation: str, src: str, dsts: List[str]) -> None:
        n = len(dsts)
        cols = self._cols
        cols["relation"].extend([relation] * n)
        cols["src"].extend([src] * n)
        cols["dst"].extend(dsts)
        cols["label"].extend([1] * n)
        if len(cols["src"]) >= self.chunk_rows:
            self._flush()

    def _flush(self) -> None:
        if self._cols["src"]:
            self._chunks.append(pa.RecordBatch.from_pydict(self._cols, schema=RAW_EDGE_SCHEMA))
            self._cols = {f.name: [] for f in RAW_EDGE_SCHEMA}

    def __len__(self) -> int:
        return sum(b.num_rows for b in self._chunks) + len(self._cols["src"])

    def build(self) -> pa.Table:
        self._flush()
        return pa.Table.from_batches(self._chunks, schema=RAW_EDGE_SCHEMA)


def concat_edges(tables: List[Optional[pa.Table]]) -> pa.Table:
    tables = [t for t in tables if t is not None]
    if not tables:
        return RAW_EDGE_SCHEMA.empty_table()
    return pa.concat_tables(tables)


class RelationEdges:
    """The edges of one relation as node ids: ``src``, ``dst`` (int64) and per-edge ``data``.

    Kept sorted by ``(src, dst)`` and free of duplicates and self-loops once made by
    :func:`canonical_edges`.  Plain numpy: usable without DGL.
    """

    def __init__(self, src: np.ndarray, dst: np.ndarray, data: Optional[Dict[str, np.ndarray]] = None):
        # Writable copies where needed: arrays read from parquet are read-only, and torch wants
        # writable buffers.
        self.src = np.require(np.asarray(src, dtype=np.int64), requirements=["C", "W"])
        self.dst = np.require(np.asarray(dst, dtype=np.int64), requirements=["C", "W"])
        if self.src.shape != self.dst.shape:
            raise ValueError(f"src has {self.src.shape} ids but dst has {self.dst.shape}")
        self.data = {k: np.asarray(v) for k, v in (data or {}).items()}

    def __len__(self) -> int:
        return int(self.src.shape[0])

    def __repr__(self) -> str:
        return f"RelationEdges({len(self):,} edges, data={sorted(self.data)})"

    def codes(self, num_nodes: int) -> np.ndarray:
        """One int64 per edge, ``src * num_nodes + dst``: sortable, comparable edge keys."""
        return self.src * np.int64(num_nodes) + self.dst

    def select(self, mask_or_index: np.ndarray) -> "RelationEdges":
        return RelationEdges(self.src[mask_or_index], self.dst[mask_or_index],
                             {k: v[mask_or_index] for k, v in self.data.items()})

    def degrees(self, num_nodes: int) -> np.ndarray:
        return np.bincount(self.src, minlength=num_nodes)

    def csr(self, num_nodes: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(indptr, indices)`` of the out-neighbours; requires sorted edges."""
        indptr = np.zeros(num_nodes + 1, dtype=np.int64)
        np.cumsum(self.degrees(num_nodes), out=indptr[1:])
        return indptr, self.dst


def canonical_edges(src: np.ndarray, dst: np.ndarray, num_nodes: int, relation: str,
                    report: SkipReport, data: Optional[Dict[str, np.ndarray]] = None,
                    symmetric: bool = True) -> RelationEdges:
    """Drop (and count) edges to unknown nodes (``-1``), self-loops and duplicates; optionally
    add reverse edges; sort by ``(src, dst)``.  The first of duplicate edges keeps its data.
    """
    edges = RelationEdges(src, dst, data)
    unknown = (edges.src < 0) | (edges.dst < 0)
    report.skip(f"{relation}: edge with an endpoint not in the catalog", count=int(unknown.sum()))
    edges = edges.select(~unknown)
    loops = edges.src == edges.dst
    report.skip(f"{relation}: self-loop", count=int(loops.sum()))
    edges = edges.select(~loops)
    codes = edges.codes(num_nodes)
    _, first = np.unique(codes, return_index=True)
    report.skip(f"{relation}: duplicate edge", count=len(edges) - len(first))
    edges = edges.select(first)  # np.unique sorts: edges are now in (src, dst) order
    if symmetric and len(edges):
        both = RelationEdges(np.concatenate([edges.src, edges.dst]),
                             np.concatenate([edges.dst, edges.src]),
                             {k: np.concatenate([v, v]) for k, v in edges.data.items()})
        _, first = np.unique(both.codes(num_nodes), return_index=True)
        report.note(f"{relation}: reverse edges added (--symmetric)", len(first) - len(edges))
        edges = both.select(first)
    return edges


def edges_to_table(edges: Dict[str, RelationEdges]) -> pa.Table:
    """Per-relation node-id edges -> one table: ``relation`` (dictionary of the relation names),
    ``src``, ``dst`` and every per-edge data column (null where a relation lacks it)."""
    empty = RelationEdges(np.zeros(0), np.zeros(0))
    parts = [edges.get(name) or empty for name in RELATIONS]
    types = {k: pa.array(v[:0]).type for rel in parts for k, v in rel.data.items()}
    columns = {
        "relation": pa.DictionaryArray.from_arrays(
            pa.array(np.concatenate([np.full(len(rel), i, np.int8) for i, rel in enumerate(parts)])),
            pa.array(list(RELATIONS))),
        "src": np.concatenate([rel.src for rel in parts]),
        "dst": np.concatenate([rel.dst for rel in parts]),
    }
    for k in sorted(types):
        columns[k] = pa.concat_arrays([pa.array(rel.data[k]) if k in rel.data else pa.nulls(len(rel), types[k])
                                       for rel in parts])
    return pa.table(columns)


def edges_from_table(table: pa.Table) -> Dict[str, RelationEdges]:
    """The inverse of :func:`edges_to_table` (all-null data columns of a relation are dropped)."""
    relation = table.column("relation").cast(pa.string())
    keys = [c for c in table.column_names if c not in ("relation", "src", "dst")]
    out = {}
    for name in RELATIONS:
        part = table.filter(pc.equal(relation, name))
        data = {k: part.column(k).to_numpy(zero_copy_only=False) for k in keys
                if part.column(k).null_count < part.num_rows}
        out[name] = RelationEdges(part.column("src").to_numpy(), part.column("dst").to_numpy(), data)
    return out
