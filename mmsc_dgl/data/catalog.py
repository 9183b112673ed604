"""The item catalog: an Arrow table whose row ``i`` describes node ``i`` of the graph."""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmsc_dgl.errors import DataError
from mmsc_dgl.io import atomic_write_parquet

ITEM_ID = "item_id"

CORE_SCHEMA = pa.schema([
    pa.field(ITEM_ID, pa.string(), nullable=False),
    pa.field("title", pa.string()),
    pa.field("title_source", pa.string()),
    pa.field("description", pa.string()),
    pa.field("category", pa.list_(pa.string())),
    pa.field("brand", pa.string()),
    pa.field("image", pa.string()),
])
"""Columns every catalog has, in this order.  Extra columns (``product_type`` in the synthetic
catalog, say) follow them."""


MAX_TEXT_CHARS = 1000


def item_texts(items: pa.Table, max_chars: Optional[int] = MAX_TEXT_CHARS, separator: str = ". ",
               description_chars: Optional[int] = None) -> List[str]:
    """Each item's text, the one way it is assembled: ``title``, the category path joined by
    `` > ``, and the ``description`` (cleaned by the readers), joined by ``separator``; empty
    parts are left out.  Every text consumer uses it: the feature extractors, the hashed text
    features and the E_LLM judge's prompts.

    Args:
        items: a catalog table (missing columns count as empty).
        max_chars: cut each text to this many characters (``None``: keep it whole).
        separator: between the parts.
        description_chars: cut the description to this many characters first.
    """
    n = items.num_rows

    def column(name: str) -> list:
        return items.column(name).to_pylist() if name in items.column_names else [None] * n

    out = []
    for title, cat, desc in zip(column("title"), column("category"), column("description")):
        if desc and description_chars is not None:
            desc = desc[:description_chars]
        text = separator.join(p for p in (title, " > ".join(cat or []), desc) if p)
        out.append(text[:max_chars] if max_chars is not None else text)
    return out


class ItemCatalog:
    """Item metadata aligned with node ids: row ``i`` is node ``i``.

    Args:
        table: an Arrow table with at least an ``item_id`` string column of unique ids.  Missing
            core columns are added as nulls, so every catalog has :data:`CORE_SCHEMA`'s columns.

    Example:
        >>> import pyarrow as pa
        >>> catalog = ItemCatalog(pa.table({"item_id": ["a", "b"], "title": ["razor", "blades"]}))
        >>> catalog.index_of(["b", "z"]).tolist(), len(catalog)
        ([1, -1], 2)

    """

    def __init__(self, table: pa.Table):
        if ITEM_ID not in table.column_names:
            raise DataError(f"the item table has no {ITEM_ID!r} column (it has {table.column_names}).",
                            fix=f"name the id column {ITEM_ID!r}.")
        table = _conform(table)
        ids = table.column(ITEM_ID)
        if ids.null_count:
            raise DataError(f"the item table has {ids.null_count} null item ids.",
                            fix="give every item an id.")
        blank = pc.sum(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(ids)), 0)).as_py() or 0
        if blank:
            raise DataError(f"the item table has {blank:,} empty item ids ('' or only spaces): such an item "
                            f"could never be asked about.", fix="give every item a non-empty id, or drop those rows.")
        unique = pc.count_distinct(ids).as_py()
        if unique != len(table):
            counts = pc.value_counts(ids)
            dup = [v["values"].as_py() for v in counts if v["counts"].as_py() > 1][:3]
            raise DataError(f"the item table repeats {len(table) - unique} item ids, e.g. {dup}.",
                            fix="make item ids unique (drop or merge the repeated rows).")
        self.table = table
        self._index: Optional[Dict[str, int]] = None

    def __len__(self) -> int:
        return self.table.num_rows

    def __repr__(self) -> str:
        return f"ItemCatalog({len(self):,} items, columns={self.table.column_names})"

    @property
    def ids(self) -> pa.ChunkedArray:
        return self.table.column(ITEM_ID)

    def index_of(self, ids: Iterable[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Node ids of ``ids`` as int64, with ``-1`` for ids that are not in the catalog."""
        if not isinstance(ids, (pa.Array, pa.ChunkedArray)):
            ids = pa.array(list(ids), type=pa.string())
        if ids.type != pa.string():
            ids = ids.cast(pa.string())
        found = pc.index_in(ids, value_set=self.ids.combine_chunks())
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

    def node(self, item_id: str) -> int:
        """Node id of one item; a clear error when it is not in the catalog."""
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self.ids.to_pylist())}
        try:
            return self._index[item_id]
        except KeyError:
            fix = "use an item_id from items.parquet."
            text = str(item_id).strip()
            if text.lstrip("+-").isdigit() and str(int(text)) in self._index:
                # ids read as integers are stored as their value: 007 became 7
                fix = (f"integer ids are stored without leading zeros or signs: use {int(text)} (or prepare "
                       f"with --id-type str to keep ids as written).")
            raise DataError(f"item {item_id!r} is not in the catalog ({len(self):,} items).", fix=fix) from None

    def titles(self) -> List[str]:
        return self.table.column("title").to_pylist()

    def save(self, path: os.PathLike | str) -> None:
        atomic_write_parquet(path, self.table)

    @classmethod
    def load(cls, path: os.PathLike | str) -> "ItemCatalog":
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as err:
            raise DataError(f"cannot read the item table: {err}", path=path,
                            fix="re-run mmsc-dgl prepare to write it again.") from err
        return cls(table)

    @classmethod
    def from_ids(cls, ids: Sequence[str]) -> "ItemCatalog":
        """A catalog with ids and no metadata (edge lists without an item table)."""
        return cls(pa.table({ITEM_ID: pa.array(list(ids), type=pa.string())}))

    @classmethod
    def from_edges(cls, edges: pa.Table, numeric: bool = False) -> "ItemCatalog":
        """The catalog implied by raw edges: every id that appears as ``src`` or ``dst``, sorted
        (numerically when ``numeric``)."""
        if edges.num_rows == 0:
            return cls.from_ids([])
        ids = pc.unique(pa.concat_arrays([edges.column("src").combine_chunks(),
                                          edges.column("dst").combine_chunks()]))
        if numeric:
            ids = ids.take(pc.sort_indices(ids.cast(pa.int64())))
        else:
            ids = ids.take(pc.sort_indices(ids))
        return cls(pa.table({ITEM_ID: ids}))


def _conform(table: pa.Table) -> pa.Table:
    """Cast/add the core columns so every catalog has the same leading schema."""
    columns, names = [], []
    for field in CORE_SCHEMA:
        if field.name in table.column_names:
            column = table.column(field.name)
            if column.type != field.type:
                try:
                    column = column.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                    raise DataError(f"item column {field.name!r} has type {column.type}, "
                                    f"expected {field.type}: {err}",
                                    fix=f"store {field.name!r} as {field.type}.") from err
        else:
            column = pa.nulls(table.num_rows, field.type)
        columns.append(column)
        names.append(field.name)
    for name in table.column_names:
        if name not in names:
            columns.append(table.column(name))
            names.append(name)
    return pa.table(columns, names=names)


class CatalogBuilder:
    """Collects item rows while a reader streams, then builds one :class:`ItemCatalog`."""

    def __init__(self) -> None:
        self._rows: Dict[str, List] = {field.name: [] for field in CORE_SCHEMA}
        self._chunks: List[pa.Table] = []

    def add(self, item_id: str, title: str = "", title_source: str = "title", description: str = "",
            category: Optional[List[str]] = None, brand: Optional[str] = None,
            image: Optional[str] = None) -> None:
        row = self._rows
        row[ITEM_ID].append(item_id)
        row["title"].append(title)
        row["title_source"].append(title_source)
        row["description"].append(description)
        row["category"].append(category or [])
        row["brand"].append(brand)
        row["image"].append(image)
        if len(row[ITEM_ID]) >= 65536:
            self._flush()

    def _flush(self) -> None:
        if self._rows[ITEM_ID]:
            self._chunks.append(pa.table(self._rows, schema=CORE_SCHEMA))
            self._rows = {field.name: [] for field in CORE_SCHEMA}

    def __len__(self) -> int:
        return sum(t.num_rows for t in self._chunks) + len(self._rows[ITEM_ID])

    def build(self) -> ItemCatalog:
        self._flush()
        if not self._chunks:
            return ItemCatalog(CORE_SCHEMA.empty_table())
        return ItemCatalog(pa.concat_tables(self._chunks))
