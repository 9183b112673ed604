"""The item heterograph: node type ``item``; edge types ``substitute`` and ``complement``."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Dict, Mapping, Optional

import dgl
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from mmsc_dgl.schema import NODE_TYPE, RELATIONS
from mmsc_dgl.data.catalog import ItemCatalog
from mmsc_dgl.data.edges import RelationEdges, canonical_edges
from mmsc_dgl.data.report import SkipReport
from mmsc_dgl.errors import DataError, flag

if TYPE_CHECKING:
    from mmsc_dgl.data.side import SideEdges

logger = logging.getLogger(__name__)


def canonical_etype(relation: str) -> tuple:
    return (NODE_TYPE, relation, NODE_TYPE)


def edges_from_raw(catalog: ItemCatalog, raw: pa.Table, report: SkipReport,
                   symmetric: bool = True) -> Dict[str, RelationEdges]:
    """Map raw edges (string item ids) to node ids and make them canonical, per relation.

    Rows with ``label == 0`` are labelled non-edges: they are counted, not added.
    """
    if "label" in raw.column_names:
        negative = pc.equal(raw.column("label"), 0)
        report.skip("labelled non-edges (label 0) in the input are not graph edges",
                    count=int(pc.sum(negative).as_py() or 0))
        raw = raw.filter(pc.invert(negative))
    unknown = sorted(set(pc.unique(raw.column("relation")).to_pylist()) - set(RELATIONS))
    if unknown:
        raise DataError(f"edges carry relation names {unknown}; the graph has {list(RELATIONS)}.",
                        fix=f"map them with {flag('--relation-map', 'PrepareConfig(relation_map=...)')}.")
    num_nodes = len(catalog)
    out: Dict[str, RelationEdges] = {}
    for relation in RELATIONS:
        part = raw.filter(pc.equal(raw.column("relation"), relation))
        src = catalog.index_of(part.column("src"))
        dst = catalog.index_of(part.column("dst"))
        _example_missing(part, src, dst, relation, report)
        out[relation] = canonical_edges(src, dst, num_nodes, relation, report, symmetric=symmetric)
    return out


def _example_missing(part: pa.Table, src: np.ndarray, dst: np.ndarray, relation: str,
                     report: SkipReport) -> None:
    missing = np.flatnonzero((src < 0) | (dst < 0))[: report.max_examples]
    reason = f"{relation}: edge with an endpoint not in the catalog"
    for i in missing:
        report.examples.setdefault(reason, [])
        if len(report.examples[reason]) < report.max_examples:
            report.examples[reason].append(f"{part.column('src')[i]}->{part.column('dst')[i]}")


def _tensor(array: np.ndarray) -> torch.Tensor:
    # Arrays read from parquet are read-only; torch needs a writable buffer.
    return torch.from_numpy(np.require(array, requirements=["C", "W"]))


def build_graph(num_items: int, edges: Mapping[str, RelationEdges],
                require_edges: bool = True, side: Optional["SideEdges"] = None) -> dgl.DGLGraph:
    """A ``dgl.heterograph`` with one node type ``item`` and one edge type per relation, plus
    the edge types of ``side`` (:class:`~mmsc_dgl.data.side.SideEdges`) when given.

    Per-edge arrays in ``RelationEdges.data`` become edge features (``g.edges[rel].data``).

    Raises:
        DataError: when no relation has an edge (with ``require_edges``).

    Example:
        >>> import numpy as np
        >>> g = build_graph(3, {"substitute": RelationEdges(np.array([0, 1]), np.array([1, 2]))})
        >>> g.num_edges("substitute"), g.num_edges("complement")
        (2, 0)

    """
    if require_edges and sum(len(e) for e in edges.values()) == 0:
        raise DataError(f"the catalog of {num_items:,} items has no edges at all after cleaning.",
                        fix=f"check {flag('--relation-map', 'PrepareConfig(relation_map=...)')} and that edge ids match item ids; "
                            "the skip report says where edges went.")
    data = {}
    for relation in RELATIONS:
        rel = edges.get(relation) or RelationEdges(np.zeros(0), np.zeros(0))
        data[canonical_etype(relation)] = (_tensor(rel.src), _tensor(rel.dst))
    counts = {NODE_TYPE: num_items}
    if side is not None:
        data.update(side.graph_data())
        counts.update({t: n for t, n in side.num_nodes.items() if t != NODE_TYPE})
    graph = dgl.heterograph(data, num_nodes_dict=counts, idtype=torch.int64)
    for relation in RELATIONS:
        given = edges.get(relation)
        if given is None:
            continue
        for key, values in given.data.items():
            graph.edges[canonical_etype(relation)].data[key] = _tensor(values)
    return graph


def graph_edges(graph: dgl.DGLGraph, relation: str, data_keys: Optional[list] = None) -> RelationEdges:
    """The edges of one relation of a heterograph, back as :class:`RelationEdges`."""
    etype = canonical_etype(relation)
    src, dst = graph.edges(etype=etype, order="srcdst")
    keys = list(graph.edges[etype].data.keys()) if data_keys is None else data_keys
    ids = graph.edge_ids(src, dst, etype=etype) if keys else None
    data = {k: graph.edges[etype].data[k][ids].numpy() for k in keys}
    return RelationEdges(src.numpy(), dst.numpy(), data)


def item_edges_of(graph, ntype: Optional[str] = None, relations: Optional[Mapping] = None,
                  report: Optional[SkipReport] = None, side: bool = False):
    """A DGL graph in its own schema, read as this package's: the item node type and, per
    relation, the edges of every item-item edge type mapped to it.

    Args:
        graph: a ``DGLGraph``.
        ntype: the item node type (default: ``"item"``, or the graph's only node type).
        relations: edge-type name or canonical tuple -> ``substitute`` / ``complement`` /
            ``s`` / ``c`` / ``"ignore"`` (default: those names and Amazon's, as edge-type names).
        report: counts every node type and edge type left out.
        side: keep every other edge type (not mapped to a relation, not ``"ignore"``) as side
            edges for meta-paths through them (``item -> user -> item``); left out otherwise.

    Returns:
        ``(ntype, {relation: (src, dst)}, {etype name: relation}, side)``: the third for the
        edge types used, ``side`` a :class:`~mmsc_dgl.data.side.SideEdges` (``None`` without
        ``side`` or when there is none).
    """
    from mmsc_dgl.data.relations import AMAZON_DEFAULT, IGNORE, NAMES_DEFAULT
    from mmsc_dgl.data.side import SideEdges
    report = report if report is not None else SkipReport()
    if not hasattr(graph, "canonical_etypes"):
        raise DataError(f"expected a DGLGraph, got {type(graph).__name__}.",
                        fix="build one with dgl.graph or dgl.heterograph.")
    if ntype is None:
        ntype = NODE_TYPE if NODE_TYPE in graph.ntypes else (graph.ntypes[0] if len(graph.ntypes) == 1 else None)
        if ntype is None:
            raise DataError(f"the graph has node types {graph.ntypes}, none of them {NODE_TYPE!r}.",
                            fix="name the item node type: ntype='product'.")
    elif ntype not in graph.ntypes:
        raise DataError(f"ntype={ntype!r} is not a node type of the graph ({graph.ntypes}).",
                        fix="pass one of the graph's node types.")
    if side and NODE_TYPE in graph.ntypes and ntype != NODE_TYPE:
        raise DataError(f"the graph has a node type {NODE_TYPE!r} that is not the item type {ntype!r}; "
                        "side edges would mix the two.", fix="rename that node type, or pass side=False.")
    default = {**NAMES_DEFAULT, **AMAZON_DEFAULT}
    wanted = {}
    for key, name in (relations or {}).items():
        name = NAMES_DEFAULT.get(name, name)
        if name not in RELATIONS and name != IGNORE:
            raise DataError(f"relations maps {key!r} to {name!r}.",
                            fix=f"map each edge type to one of {', '.join(RELATIONS)} or {IGNORE!r}.")
        wanted[key] = name
    names = {c[1] for c in graph.canonical_etypes} | set(graph.canonical_etypes)
    unknown = [key for key in wanted if key not in names]
    if unknown:  # a misspelt key would leave its relation silently empty
        import difflib
        key = unknown[0]
        close = difflib.get_close_matches(str(key), sorted(str(c[1]) for c in graph.canonical_etypes), n=1)
        raise DataError(f"relations names {key!r}, which is not an edge type of the graph"
                        + (f" (did you mean {close[0]!r}?)" if close else "")
                        + f"; its edge types: {sorted({c[1] for c in graph.canonical_etypes})}.",
                        fix="key relations= by the graph's edge-type names or canonical (src, etype, dst) tuples.")
    parts: Dict[str, list] = {r: [] for r in RELATIONS}
    used: Dict[str, str] = {}
    rename = (lambda t: NODE_TYPE if t == ntype else t)  # noqa: E731
    kept: Dict[tuple, tuple] = {}
    for canonical in graph.canonical_etypes:
        src_type, etype, dst_type = canonical
        count = graph.num_edges(canonical)
        between_items = src_type == ntype and dst_type == ntype
        name = wanted.get(canonical, wanted.get(etype)) if between_items else None
        if between_items and name is None and relations is None:
            name = default.get(etype)
        if name in RELATIONS:
            parts[name].append(graph.edges(etype=canonical))
            used[etype] = name
        elif side and name != IGNORE:
            src, dst = graph.edges(etype=canonical)
            kept[(rename(src_type), etype, rename(dst_type))] = (src.numpy().astype(np.int64),
                                                                 dst.numpy().astype(np.int64))
        elif not between_items:
            report.skip(f"edge type {canonical} left out (not between {ntype!r} nodes)", count=count)
        else:
            report.skip(f"edge type {canonical} left out ("
                        + ("ignored" if name == IGNORE else "not in relations") + ")", count=count)
    touched = {t for e in kept for t in (e[0], e[2])}
    for other in graph.ntypes:
        if other != ntype and rename(other) not in touched:
            report.skip(f"node type {other!r} left out (not the item type {ntype!r})", count=graph.num_nodes(other)
                        or 1, example=f"{graph.num_nodes(other)} nodes")
    if not used:
        item_types = [c for c in graph.canonical_etypes if c[0] == ntype and c[2] == ntype]
        raise DataError(f"no edge type of the graph maps to {' or '.join(RELATIONS)} "
                        f"(item-item edge types: {[c[1] for c in item_types] or 'none'}).",
                        fix="pass relations={'also_viewed': 'substitute', 'also_bought': 'complement'} "
                            "with your edge-type names.")
    empty = torch.zeros(0, dtype=torch.int64)
    edges = {r: (torch.cat([e[0] for e in v]) if v else empty, torch.cat([e[1] for e in v]) if v else empty)
             for r, v in parts.items()}
    side_edges = None
    if kept:
        counts = {t: graph.num_nodes(ntype if t == NODE_TYPE else t) for t in touched | {NODE_TYPE}}
        side_edges = SideEdges(counts, kept, item_type=ntype)
        for etype, (src, _) in kept.items():
            logger.info("edge type %s kept as side edges for meta-paths (%d)", etype, len(src))
    return ntype, edges, used, side_edges
