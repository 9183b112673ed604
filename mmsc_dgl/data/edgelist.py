"""Streaming reader for generic edge lists: ``relation src dst [label]`` per line.

Fields are separated by spaces or tabs.  Lines starting with ``#`` are comments.  A first line
whose ids read ``src dst`` (or ``source target``/``head tail``) is taken as a header.  Relation
tokens (names or numeric ids) map to relation names through a :class:`RelationMap`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import pyarrow as pa

from mmsc_dgl.data.catalog import ItemCatalog
from mmsc_dgl.data.edges import EdgeCollector, concat_edges
from mmsc_dgl.data.lines import iter_lines
from mmsc_dgl.data.relations import IGNORE, RelationMap
from mmsc_dgl.data.report import SkipReport
from mmsc_dgl.errors import DataError, flag

logger = logging.getLogger(__name__)

IdType = Literal["auto", "int", "str"]

_HEADER_WORDS = {("src", "dst"), ("source", "target"), ("head", "tail"), ("u", "v"),
                 ("from", "to"), ("src_id", "dst_id"), ("node1", "node2")}
_LABELS = {"1": 1, "0": 0, "1.0": 1, "0.0": 0, "true": 1, "false": 0}


@dataclass
class EdgeListRead:
    """What :func:`read_edgelist` returns."""

    edges: pa.Table
    report: SkipReport
    id_type: str

    def implied_catalog(self) -> ItemCatalog:
        """The catalog when no item table is given: every id that appears."""
        return ItemCatalog.from_edges(self.edges, numeric=self.id_type == "int")


def _is_int(token: str) -> bool:
    return token.lstrip("+-").isdigit()


def read_edgelist(paths: Sequence[os.PathLike | str], relation_map: Optional[RelationMap] = None,
                  id_type: IdType = "auto", strict: bool = False,
                  progress: bool = True, keep_lines: bool = False) -> EdgeListRead:
    """Stream whitespace- or tab-separated edge lists.

    Args:
        paths: edge-list files, plain or ``.gz``.
        relation_map: relation token -> name.  Without one, the tokens must be
            ``substitute``/``complement`` (or ``s``/``c``).
        id_type: ``"int"`` ids are parsed as integers and stored in canonical decimal form
            (``007`` is item ``7``); ``"str"`` keeps them verbatim; ``"auto"`` decides from the
            first data line.
        strict: raise at the first malformed line instead of counting it.
        keep_lines: add a ``line`` column (the 1-based line of each edge in its file).

    Raises:
        DataError: an empty file, a relation not in the map, a non-numeric id in a numeric
            list, a bad label, or (with ``strict``) a line with the wrong number of fields.

    Example:
        >>> read = read_edgelist(["edges.txt"], RelationMap.parse("1=complement,2=substitute"))  # doctest: +SKIP

    """
    relation_map = relation_map or RelationMap.edgelist()
    report = SkipReport()
    edges = EdgeCollector()
    lines = []
    resolved: Optional[str] = None if id_type == "auto" else id_type
    for path in paths:
        data_lines = 0
        seen_any = False
        for line_no, text in iter_lines(path, progress=progress):
            stripped = text.strip()
            if not stripped:
                report.note("blank lines ignored")
                continue
            if stripped.startswith("#"):
                report.note("comment lines ignored")
                continue
            tokens = stripped.split()
            first_line = not seen_any
            seen_any = True
            if first_line and len(tokens) >= 3 and (tokens[1].lower(), tokens[2].lower()) in _HEADER_WORDS:
                report.note("header lines ignored")
                continue
            if len(tokens) not in (3, 4):
                if strict:
                    raise DataError(f"expected 3 or 4 fields (relation src dst [label]), found {len(tokens)}.",
                                    path=path, line=line_no, fix="repair or delete the line.")
                report.skip("malformed line (not 3 or 4 fields)", f"{os.fspath(path)}:{line_no}")
                continue
            rel_token, src, dst = tokens[:3]
            name = relation_map.lookup(rel_token, path=path, line=line_no)
            label = 1
            if len(tokens) == 4:
                label = _LABELS.get(tokens[3].lower(), -1)
                if label < 0:
                    raise DataError(f"label {tokens[3]!r} is not 0 or 1.", path=path, line=line_no,
                                    fix="write labels as 0 or 1.")
            if resolved is None:
                resolved = "int" if _is_int(src) and _is_int(dst) else "str"
                logger.info("%s: ids read as %s (from line %d)", path, resolved, line_no)
            if resolved == "int":
                for token in (src, dst):
                    if not _is_int(token):
                        raise DataError(f"id {token!r} is not an integer, but this edge list has integer ids"
                                        + (" (decided from its first line)." if id_type == "auto" else "."),
                                        path=path, line=line_no,
                                        fix="pass " + flag('--id-type str', "PrepareConfig(id_type='str')") + " if the ids are names, or repair the line.")
                src, dst = str(int(src)), str(int(dst))
                for token in (src, dst):
                    if not -2**63 <= int(token) < 2**63:
                        raise DataError(f"id {token} does not fit a 64-bit integer.", path=path, line=line_no,
                                        fix="pass " + flag('--id-type str', "PrepareConfig(id_type='str')") + " to read the ids as names.")
            data_lines += 1
            if name == IGNORE:
                report.skip(f"edges with relation {rel_token!r} (mapped to ignore)")
                continue
            edges.add(name, src, dst, label)
            if keep_lines:
                lines.append(line_no)
        if not seen_any:
            raise DataError("the file holds no edges (only blank or comment lines).", path=path,
                            fix="pass a file with lines 'relation src dst [label]'.")
        logger.info("read %s: %d edge lines", path, data_lines)
    table = concat_edges([edges.build()])
    if keep_lines:
        table = table.append_column("line", pa.array(lines, pa.int64()))
    return EdgeListRead(table, report, resolved or "str")


def read_pairs(path: os.PathLike | str, relation_map: Optional[RelationMap] = None,
               id_type: IdType = "auto") -> pa.Table:
    """A labelled pair file (``relation src dst label``), as raw edges with labels and the line
    of each pair kept."""
    read = read_edgelist([path], relation_map=relation_map, id_type=id_type, strict=True,
                         progress=False, keep_lines=True)
    return read.edges


