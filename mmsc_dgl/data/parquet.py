"""Parquet item and edge tables, read in record batches and written with pyarrow.

* Item table: an ``item_id`` column (any type; stored as string) and optional metadata columns
  (``title``, ``description``, ``category`` (list of strings), ``brand``, ``image``, others kept).
* Edge table: ``relation``, ``src``, ``dst`` and optional ``label`` (0/1).  ``relation`` holds
  names or numeric ids, mapped through the relation map like an edge list's first field.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmsc_dgl.data.catalog import ITEM_ID, ItemCatalog
from mmsc_dgl.data.edges import RAW_EDGE_SCHEMA, concat_edges
from mmsc_dgl.data.relations import IGNORE, RelationMap
from mmsc_dgl.data.report import SkipReport
from mmsc_dgl.errors import DataError
from mmsc_dgl.io import atomic_write_parquet, check_input_file

logger = logging.getLogger(__name__)

EDGE_COLUMNS = ("relation", "src", "dst")


@dataclass
class ParquetRead:
    catalog: Optional[ItemCatalog]
    edges: pa.Table
    report: SkipReport


def _open(path: os.PathLike | str) -> pq.ParquetFile:
    path = Path(path)
    check_input_file(path, fix="pass a parquet file that holds data.")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"not a readable parquet file: {err}", path=path,
                        fix="write it with pyarrow or pandas .to_parquet().") from err


def _as_string(column: pa.Array, name: str, path: os.PathLike | str) -> pa.Array:
    """An id column as strings: integers and strings are ids; anything else (floats, lists,
    structs, binary) is a one-line error naming the column."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column.cast(pa.string()) if kind != pa.string() else column
    what = "floating point" if pa.types.is_floating(kind) else f"of type {kind}"
    raise DataError(f"column {name!r} is {what}, not integer or string ids.", path=path,
                    fix=f"store {name!r} as integers or strings (one id per row).")


def read_item_table(path: os.PathLike | str) -> ItemCatalog:
    """Read a parquet item table into an :class:`ItemCatalog` (row order kept)."""
    handle = _open(path)
    names = handle.schema_arrow.names
    if ITEM_ID not in names:
        raise DataError(f"the item table has no {ITEM_ID!r} column (columns: {names}).", path=path,
                        fix=f"rename the id column to {ITEM_ID!r}.")
    batches = list(handle.iter_batches())
    table = pa.Table.from_batches(batches, schema=handle.schema_arrow) if batches else handle.schema_arrow.empty_table()
    if table.num_rows == 0:
        raise DataError("the item table has no rows.", path=path, fix="pass a table with items.")
    table = table.set_column(names.index(ITEM_ID), ITEM_ID, _as_string(table.column(ITEM_ID), ITEM_ID, path))
    try:
        return ItemCatalog(table)
    except DataError as err:
        raise DataError(err.reason, path=path, fix=err.fix) from err


def read_edge_table(path: os.PathLike | str, relation_map: Optional[RelationMap] = None,
                    report: Optional[SkipReport] = None) -> pa.Table:
    """Read a parquet edge table as raw edges (:data:`RAW_EDGE_SCHEMA`)."""
    relation_map = relation_map or RelationMap.edgelist()
    report = report if report is not None else SkipReport()
    handle = _open(path)
    names = handle.schema_arrow.names
    missing = [c for c in EDGE_COLUMNS if c not in names]
    if missing:
        raise DataError(f"the edge table lacks columns {missing} (columns: {names}).", path=path,
                        fix="name the columns relation, src, dst (and optionally label).")
    columns = list(EDGE_COLUMNS) + (["label"] if "label" in names else [])
    out: List[pa.Table] = []
    row = 0
    for batch in handle.iter_batches(columns=columns):
        for name in EDGE_COLUMNS:
            if batch.column(name).null_count:
                raise DataError(f"column {name!r} has nulls in rows {row}..{row + batch.num_rows - 1}.",
                                path=path, fix="drop or fill those rows.")
        rel_raw = _as_string(batch.column("relation"), "relation", path)
        mapped = []
        for token in pc.unique(rel_raw).to_pylist():
            mapped.append((token, relation_map.lookup(token, path=path)))
        rel = rel_raw
        for token, name in mapped:
            rel = pc.if_else(pc.equal(rel_raw, token), name, rel)
        label = batch.column("label").cast(pa.int8()) if "label" in columns else \
            pa.array([1] * batch.num_rows, pa.int8())
        table = pa.table([rel, _as_string(batch.column("src"), "src", path), _as_string(batch.column("dst"), "dst", path), label],
                         schema=RAW_EDGE_SCHEMA)
        ignored = pc.equal(table.column("relation"), IGNORE)
        n_ignored = pc.sum(ignored).as_py() or 0
        if n_ignored:
            report.skip("edges with a relation mapped to ignore", os.fspath(path), count=n_ignored)
            table = table.filter(pc.invert(ignored))
        out.append(table)
        row += batch.num_rows
    if row == 0:
        raise DataError("the edge table has no rows.", path=path, fix="pass a table with edges.")
    logger.info("read %s: %d edges", path, row)
    return concat_edges(out)


def read_parquet_inputs(paths: Sequence[os.PathLike | str],
                        relation_map: Optional[RelationMap] = None) -> ParquetRead:
    """Read parquet inputs, telling item tables (``item_id``) from edge tables (``src``/``dst``).

    Example:
        >>> read = read_parquet_inputs(["items.parquet", "edges.parquet"],
        ...                            RelationMap.parse("also_viewed=substitute,also_bought=complement"))  # doctest: +SKIP
    """
    report = SkipReport()
    catalog: Optional[ItemCatalog] = None
    edges: List[pa.Table] = []
    for path in paths:
        names = _open(path).schema_arrow.names
        if all(c in names for c in EDGE_COLUMNS):
            edges.append(read_edge_table(path, relation_map, report))
        elif ITEM_ID in names:
            if catalog is not None:
                raise DataError("a second item table was given.", path=path,
                                fix="merge the item tables into one file.")
            catalog = read_item_table(path)
        else:
            raise DataError(f"neither an item table ({ITEM_ID!r}) nor an edge table "
                            f"(relation, src, dst); columns: {names}.", path=path,
                            fix="rename the columns as docs/data-formats.md describes.")
    return ParquetRead(catalog, concat_edges(edges), report)


def write_edge_table(path: os.PathLike | str, relation, src, dst, **extra) -> None:
    """Write node-id edges (``relation``, ``src``, ``dst`` and extra columns) atomically."""
    table = pa.table({"relation": relation, "src": src, "dst": dst, **extra})
    atomic_write_parquet(path, table)
