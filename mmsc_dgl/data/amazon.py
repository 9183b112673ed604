"""Streaming reader for Amazon product metadata, 2014 and 2018 schemas (McAuley et al.).

* 2014: one Python-literal dict per line (single quotes), parsed with :func:`ast.literal_eval`
  (never ``eval``).  Edges under ``related``: ``also_viewed``, ``also_bought``,
  ``bought_together``.  Text in ``title``, ``description``, ``categories``; image in ``imUrl``.
* 2018: one JSON object per line.  Edges in ``also_view`` and ``also_buy``.  Text in ``title``,
  ``description`` (a list), ``category``, ``brand``; images in ``imageURLHighRes``/``imageURL``.
"""
from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Literal, Optional, Sequence, Tuple

import pyarrow as pa

from mmsc_dgl.data.catalog import CatalogBuilder, ItemCatalog
from mmsc_dgl.data.edges import EdgeCollector, concat_edges
from mmsc_dgl.data.lines import iter_lines
from mmsc_dgl.data.relations import IGNORE, RelationMap
from mmsc_dgl.data.report import SkipReport
from mmsc_dgl.data.text import clean_text, clean_title, first_nonempty
from mmsc_dgl.errors import DataError, flag

logger = logging.getLogger(__name__)

Schema = Literal["auto", "2014", "2018"]

_KEYS_2014 = {"related", "categories", "imUrl", "salesRank"}
_KEYS_2018 = {"also_buy", "also_view", "category", "imageURL", "imageURLHighRes", "main_cat"}


@dataclass
class AmazonRead:
    """What :func:`read_amazon` returns: the catalog, raw edges and the skip report."""

    catalog: ItemCatalog
    edges: pa.Table
    report: SkipReport
    schemas: Dict[str, str]


def parse_record(text: str) -> Optional[dict]:
    """One line -> dict, trying strict JSON first, then a Python literal.  ``None`` if neither."""
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            return None
    return value if isinstance(value, dict) else None


def detect_schema(record: dict) -> Optional[str]:
    keys = set(record)
    if keys & _KEYS_2014:
        return "2014"
    if keys & _KEYS_2018:
        return "2018"
    return None


def _relation_lists(record: dict, schema: str) -> Iterable[Tuple[str, object]]:
    if schema == "2014":
        related = record.get("related") or {}
        if not isinstance(related, dict):
            yield "related", related  # reported as malformed by the caller
            return
        yield from related.items()
    else:
        for key in ("also_view", "also_buy"):
            if key in record:
                yield key, record[key]


def _fields(record: dict, schema: str) -> Tuple[object, str, List[str], Optional[str], Optional[str]]:
    """(raw title, description, category path, brand, image) of one record."""
    description = clean_text(record.get("description"))
    brand = clean_text(record.get("brand")) or None
    if schema == "2014":
        categories = record.get("categories") or []
        # A list of category paths; the first is the item's main path.
        path = categories[0] if categories and isinstance(categories[0], list) else categories
        image = first_nonempty(record.get("imUrl"))
    else:
        path = record.get("category") or []
        image = first_nonempty(record.get("imageURLHighRes")) or first_nonempty(record.get("imageURL"))
    category = [clean_text(c) for c in path if isinstance(c, str) and clean_text(c)] \
        if isinstance(path, list) else []
    return record.get("title"), description, category, brand, image


def read_amazon(paths: Sequence[os.PathLike | str], relation_map: Optional[RelationMap] = None,
                schema: Schema = "auto", strict: bool = False, progress: bool = True) -> AmazonRead:
    """Stream Amazon metadata files into a catalog and raw edges.

    Args:
        paths: ``.json`` or ``.json.gz`` files; items from all of them form one catalog.
        relation_map: field name -> relation (default: also_view(ed) -> substitute,
            also_buy/also_bought/bought_together -> complement).  Map a field to ``ignore`` to
            drop its edges; they are counted.
        schema: ``"2014"``, ``"2018"`` or ``"auto"`` (decided per file from its first record).
        strict: raise at the first malformed line instead of counting it as skipped.
        progress: show a progress bar for large files.

    Raises:
        DataError: an empty or cut-off file, a file that is not Amazon metadata, a file with no
            usable record, or (with ``strict``) any malformed line.

    Example:
        >>> read = read_amazon(["meta_Magazine_Subscriptions.json.gz"])  # doctest: +SKIP
        >>> read.catalog.num_items, read.report.format()                # doctest: +SKIP

    """
    relation_map = relation_map or RelationMap.amazon()
    report = SkipReport()
    catalog = CatalogBuilder()
    edges = EdgeCollector()
    seen: Dict[str, str] = {}  # asin -> digest of its first record
    schemas: Dict[str, str] = {}

    def bad(reason: str, path, line_no: int, fix: str) -> None:
        if strict:
            raise DataError(reason, path=path, line=line_no, fix=fix)
        report.skip(reason, f"{os.fspath(path)}:{line_no}")

    for path in paths:
        forced = None if schema == "auto" else schema
        file_schema: Optional[str] = None
        records_here = 0
        for line_no, text in iter_lines(path, progress=progress):
            if not text.strip():
                report.note("blank lines ignored")
                continue
            record = parse_record(text)
            if record is None:
                bad("malformed line (neither JSON nor a Python dict literal)", path, line_no,
                    "repair or delete the line; each line must hold one record.")
                continue
            if file_schema is None:
                detected = detect_schema(record)
                if "asin" not in record or (detected is None and forced is None):
                    raise DataError(
                        f"the first record has keys {sorted(record)[:8]}, not those of Amazon "
                        "metadata (asin plus related/also_buy/also_view).", path=path, line=line_no,
                        fix=f"for other data use {flag('--format', 'PrepareConfig(format=...)')} edgelist or parquet; "
                            f"or pass {flag('--schema', 'PrepareConfig(schema=...)')} 2014/2018 if this really is Amazon metadata.")
                if forced and detected and detected != forced:
                    raise DataError(f"{flag('--schema', 'schema=')} {forced} was given, but the first record has the "
                                    f"{detected} schema's keys.", path=path, line=line_no,
                                    fix=f"pass {flag('--schema', 'schema=')} {detected} or auto.")
                file_schema = forced or detected
                assert file_schema is not None  # refused above when neither is known
                schemas[os.fspath(path)] = file_schema
            asin = record.get("asin")
            if not isinstance(asin, str) or not asin.strip():
                bad("record without an 'asin'", path, line_no, "give every record an asin.")
                continue
            asin = asin.strip()
            digest = hashlib.blake2b(text.strip().encode(), digest_size=12).hexdigest()
            first = seen.get(asin)
            if first is not None:
                if first == digest:
                    report.skip("duplicate item record, identical to an earlier one",
                                f"{os.fspath(path)}:{line_no} {asin}")
                    continue
                # Same item, different content: keep the first metadata, merge its edges.
                report.skip("duplicate item record with different content (metadata of the first "
                            "kept, edges merged)", f"{os.fspath(path)}:{line_no} {asin}")
            else:
                seen[asin] = digest
                raw_title, description, category, brand, image = _fields(record, file_schema)
                title, source = clean_title(raw_title, description, fallbacks=(brand or "",))
                if source != "title":
                    report.note(f"titles taken from {source}" if source != "cleaned"
                                else "titles cleaned of HTML")
                catalog.add(asin, title, source, description, category, brand, image)
            records_here += 1
            for key, targets in _relation_lists(record, file_schema):
                if key not in relation_map.mapping:
                    if targets:
                        report.skip(f"edges under field {key!r}, which the relation map does not name",
                                    f"{os.fspath(path)}:{line_no}",
                                    count=len(targets) if isinstance(targets, list) else 1)
                    continue
                if not isinstance(targets, list):
                    bad(f"field {key!r} is not a list", path, line_no, f"make {key!r} a list of asins.")
                    continue
                name = relation_map.mapping[key]
                clean = [t.strip() for t in targets if isinstance(t, str) and t.strip()]
                if len(clean) != len(targets):
                    report.skip(f"empty or non-string ids under {key!r}", f"{os.fspath(path)}:{line_no}",
                                count=len(targets) - len(clean))
                if name == IGNORE:
                    report.skip(f"edges under {key!r} (mapped to ignore)", count=len(clean))
                    continue
                edges.add_many(name, asin, clean)
        if records_here == 0:
            raise DataError("no usable Amazon record in the file.", path=path,
                            fix="check that this is Amazon product metadata, one record per line.")
        logger.info("read %s: %d records (%s schema)", path, records_here, schemas.get(os.fspath(path)))
    return AmazonRead(catalog.build(), concat_edges([edges.build()]), report, schemas)
