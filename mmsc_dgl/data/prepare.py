"""``prepare``: any supported input (or the synthetic catalog) -> a saved dataset directory."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa

from mmsc_dgl.config import PrepareConfig, SyntheticConfig
from mmsc_dgl.data.catalog import ItemCatalog
from mmsc_dgl.data.dataset import Dataset
from mmsc_dgl.data.graph import edges_from_raw, item_edges_of
from mmsc_dgl.data.relations import RelationMap
from mmsc_dgl.data.report import SkipReport
from mmsc_dgl.data.splits import make_given_splits, make_splits
from mmsc_dgl.errors import DataError, flag
from mmsc_dgl.lock import writer_lock
from mmsc_dgl.ownership import check_dir_parent, check_output_dir

if TYPE_CHECKING:
    from mmsc_dgl.data.edgelist import IdType

logger = logging.getLogger(__name__)


def detect_format(paths: Sequence[os.PathLike | str]) -> str:
    """``amazon`` for ``.json``/``.json.gz``, ``parquet`` for ``.parquet``, else ``edgelist``."""
    kinds = set()
    for path in paths:
        name = Path(path).name.lower()
        if name.endswith(".gz"):
            name = name[:-3]
        if name.endswith((".json", ".jsonl")):
            kinds.add("amazon")
        elif name.endswith((".parquet", ".pq")):
            kinds.add("parquet")
        else:
            kinds.add("edgelist")
    if len(kinds) > 1:
        raise DataError(f"the inputs mix formats ({', '.join(sorted(kinds))}).",
                        fix=f"prepare one format at a time, or pass {flag('--format', 'PrepareConfig(format=...)')} explicitly.")
    return kinds.pop()


def _read_held_out(path: os.PathLike | str, relation_map: RelationMap, id_type: IdType) -> pa.Table:
    """``relation src dst [label]`` rows with their line (edge list) or row number (parquet)."""
    if Path(path).name.lower().endswith((".parquet", ".pq")):
        from mmsc_dgl.io import read_parquet_table
        table = read_parquet_table(path, ("relation", "src", "dst"), what="parquet pair table",
                                   fix="write relation, src, dst (and optionally label) columns.")
        relation = [relation_map.lookup(str(k), path=path) for k in table.column("relation").to_pylist()]
        label = (table.column("label").cast(pa.int64()) if "label" in table.column_names
                 else pa.array(np.ones(table.num_rows, np.int64)))
        if not set(label.to_pylist()) <= {0, 1}:
            raise DataError("the label column holds values other than 0 and 1.", path=path, fix="write 0 or 1.")
        return pa.table({"relation": relation, "src": table.column("src").cast(pa.string()),
                         "dst": table.column("dst").cast(pa.string()), "label": label,
                         "line": pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64))})
    from mmsc_dgl.data.edgelist import read_pairs
    return read_pairs(path, relation_map=relation_map, id_type=id_type)


def pairs_as_nodes(path: os.PathLike | str, catalog: ItemCatalog, relation_map: RelationMap,
                    id_type: IdType, report: SkipReport, what: str = "labelled pairs",
                    need_both_labels: bool = True) -> pa.Table:
    """A pair file (edge list or parquet; ``relation src dst [label]``, label 1 when absent) as
    node ids.  Pairs with an item outside the catalog, and self-loops, are counted skips."""
    raw = _read_held_out(path, relation_map, id_type)
    src = catalog.index_of(raw.column("src"))
    dst = catalog.index_of(raw.column("dst"))
    known = (src >= 0) & (dst >= 0)
    loops = known & (src == dst)
    lines = raw.column("line").to_numpy()
    for reason, bad in ((f"{what} with an item not in the catalog", ~known),
                        (f"{what} that are self-loops", loops)):
        where = np.flatnonzero(bad)
        for row in where[:report.max_examples]:
            report.skip(reason, f"{os.fspath(path)}:{lines[row]}")
        report.skip(reason, count=len(where) - min(len(where), report.max_examples))
    keep = known & ~loops
    if not keep.any():
        raise DataError(f"no pair of the {what} refers to two catalog items.", path=path,
                        fix="check that the file uses the same item ids as the inputs.")
    relation = raw.column("relation").filter(pa.array(keep))
    labels = raw.column("label").filter(pa.array(keep))
    if need_both_labels and len(set(labels.to_pylist())) < 2:
        raise DataError(f"every usable labelled pair has label {labels[0].as_py()}; ROC-AUC, PR-AUC and F1 "
                        "need positive and negative pairs.", path=path,
                        fix="add pairs labelled 0 (non-related) and 1 (related).")
    return pa.table({
        "relation": relation.cast(pa.string()).dictionary_encode().combine_chunks(),
        "src": src[keep], "dst": dst[keep],
        "label": raw.column("label").filter(pa.array(keep)).cast(pa.int64()),
    })


def prepare(inputs: Sequence[os.PathLike | str] = (), out: Optional[os.PathLike | str] = None,
            config: Optional[PrepareConfig] = None, items: Optional[os.PathLike | str] = None,
            pairs: Optional[os.PathLike | str] = None, synthetic: Optional[SyntheticConfig] = None,
            overwrite: bool = False, progress: bool = True, valid: Optional[os.PathLike | str] = None,
            test: Optional[os.PathLike | str] = None) -> Dataset:
    """Read inputs (or generate the synthetic catalog), build the graph and the splits, and
    write the dataset directory to ``out`` (if given).  ``mmsc-dgl prepare`` is this function.

    Args:
        inputs: Amazon metadata, edge lists or parquet tables (one format at a time).
        out: the dataset directory to write; ``None`` keeps the dataset in memory only.
        config: reading and splitting settings (:class:`~mmsc_dgl.config.PrepareConfig`).
        items: a parquet item table for edge-list inputs (otherwise the catalog is the set of
            ids in the edges).
        pairs: a labelled pair file (``relation src dst label``) kept as a given test set.
        valid, test: the validation and test files a benchmark ships (``relation src dst
            [label]`` edge lists or parquet): every edge of ``inputs`` then trains, and these
            positives are the held-out edges (``config.holdout`` is ``"none"``); a labelled
            ``test`` also gives ROC-AUC / PR-AUC / F1.
        synthetic: generate the synthetic catalog with these settings instead of reading files.
        overwrite: replace ``out`` if it exists.
        progress: show progress bars on large inputs.

    Example:
        >>> from mmsc_dgl.config import SyntheticConfig
        >>> ds = prepare(synthetic=SyntheticConfig(num_items=500, seed=0))
        >>> ds.num_items
        500
    """
    config = config or PrepareConfig()
    given_inputs = [p for p in (*inputs, items, pairs, valid, test) if p is not None]
    _check_holdout(config, synthetic, valid, test)
    if out is not None:  # check first: refuse before reading a byte
        check_dir_parent(out)
        check_output_dir(out, "dataset", overwrite=overwrite, inputs=given_inputs)
    dataset = _prepare(inputs, config, items, pairs, synthetic, progress, valid, test)
    if out is not None:  # the work is in memory; the directory is written under the lock, checked again
        with writer_lock(out, "this dataset"):
            dataset.save(out, overwrite=overwrite)
    return dataset


def _check_holdout(config: PrepareConfig, synthetic, valid, test) -> None:
    """The split protocol's options must agree before anything is read."""
    given = valid is not None or test is not None
    if given and (valid is None or test is None):
        missing = 'valid' if valid is None else 'test'
        raise DataError(f"{flag('--' + missing, missing + '=')} is missing: given splits need both files.",
                        fix=f"pass {flag('--valid VALID and --test TEST', 'valid= and test=')} (or neither, for the per-item hold-out).")
    if given and synthetic is not None:
        raise DataError(f"{flag('--valid/--test', 'valid=/test=')} were given with {flag('--synthetic', 'synthetic=')}.", fix="given splits are for files you read.")
    holdout = config.holdout or ("none" if given else "per-item")
    if holdout == "per-item" and given:
        raise DataError(f"{flag('--holdout', 'holdout=')} per-item carves its own validation and test edges, but "
                        f"{flag('--valid and --test', 'valid= and test=')} were given.",
                        fix=f"drop {flag('--holdout', 'holdout=')} (given splits hold nothing out) or the two files.")
    if holdout == "none" and not given:
        raise DataError(f"{flag('--holdout', 'holdout=')} none holds nothing out, so there is nothing to validate or test on.",
                        fix=f"pass {flag('--valid VALID --test TEST', 'valid= and test=')}, or use {flag('--holdout', 'holdout=')} per-item.")
    if config.drop_overlap and not given:
        raise DataError(f"{flag('--drop-overlap', 'drop_overlap=True')} is for given splits.",
                        fix=f"pass {flag('--valid and --test', 'valid= and test=')}, or drop it.")
    if given and config.split.cold_fraction:
        raise DataError(f"{flag('--cold-fraction', 'split.cold_fraction')} with given splits: they have no cold-start split.",
                        fix=f"drop {flag('--cold-fraction', 'split.cold_fraction')}, or use the per-item hold-out.")


def _prepare(inputs, config: PrepareConfig, items, pairs, synthetic: Optional[SyntheticConfig],
             progress: bool, valid=None, test=None) -> Dataset:
    started = time.perf_counter()
    report = SkipReport()
    info: dict = {"config": config.model_dump(by_alias=True)}
    cold_mask = None
    if synthetic is not None:
        from mmsc_dgl.data.synthetic import generate_synthetic
        if inputs:
            raise DataError(f"both input files and {flag('--synthetic', 'synthetic=')} were given.", fix="pass one or the other.")
        data = generate_synthetic(synthetic)
        catalog, edges = data.catalog, data.edges
        report.merge(data.report)
        relation_map = RelationMap.edgelist(config.relation_map)
        cold_mask = catalog.table.column("is_cold_start").to_numpy()
        info["source"] = {"synthetic": synthetic.model_dump()}
    else:
        if not inputs:
            raise DataError("no input files were given.",
                            fix=f"pass files to read, or {flag('--synthetic N', 'synthetic=SyntheticConfig(...)')} for the built-in catalog.")
        fmt = config.format or detect_format(inputs)
        info["source"] = {"format": fmt, "files": [os.fspath(p) for p in inputs]}
        if fmt == "amazon":
            from mmsc_dgl.data.amazon import read_amazon
            relation_map = RelationMap.amazon(config.relation_map)
            amazon = read_amazon(inputs, relation_map, schema=config.schema_, strict=config.strict,
                                 progress=progress)
            catalog, raw = amazon.catalog, amazon.edges
            report.merge(amazon.report)
            info["source"]["schemas"] = amazon.schemas
        elif fmt == "edgelist":
            from mmsc_dgl.data.edgelist import read_edgelist
            relation_map = RelationMap.edgelist(config.relation_map)
            read = read_edgelist(inputs, relation_map, id_type=config.id_type, strict=config.strict,
                                 progress=progress)
            report.merge(read.report)
            raw = read.edges
            if items is not None:
                from mmsc_dgl.data.parquet import read_item_table
                catalog = read_item_table(items)
            else:
                catalog = read.implied_catalog()
        elif fmt == "parquet":
            from mmsc_dgl.data.parquet import read_item_table, read_parquet_inputs
            relation_map = RelationMap.edgelist(config.relation_map)
            tables = read_parquet_inputs(inputs, relation_map)
            report.merge(tables.report)
            raw = tables.edges
            found = tables.catalog
            if items is not None:
                if found is not None:
                    raise DataError(f"an item table was given twice (an input and {flag('--items', 'items=')}).", path=items,
                                    fix="pass it once.")
                found = read_item_table(items)
            catalog = found if found is not None else ItemCatalog.from_edges(raw)
        else:
            raise DataError(f"unknown format {fmt!r}.", fix="use amazon, edgelist or parquet.")
        if items is not None:
            info["source"]["items"] = os.fspath(items)
        if len(catalog) == 0:
            ignored = sum(n for reason, n in report.counts.items() if "mapped to ignore" in reason)
            if ignored:
                raise DataError(f"{flag('--relation-map', 'PrepareConfig(relation_map=...)')} maps every relation to ignore ({ignored:,} edges ignored), "
                                "so no item is left.", path=inputs[0],
                                fix="map at least one relation to substitute or complement, "
                                    "e.g. " + flag("--relation-map 1=complement,2=substitute",
                                                   "relation_map='1=complement,2=substitute'") + ".")
            raise DataError("the catalog is empty.", path=inputs[0], fix="pass inputs that hold items.")
        edges = edges_from_raw(catalog, raw, report, symmetric=config.symmetric)
        if "is_cold_start" in catalog.table.column_names:
            cold_mask = catalog.table.column("is_cold_start").to_numpy(zero_copy_only=False).astype(bool)

    if sum(len(e) for e in edges.values()) == 0:
        raise DataError(f"the catalog of {len(catalog):,} items has no edges at all after cleaning.",
                        path=inputs[0] if inputs else None,
                        fix=f"check {flag('--relation-map', 'PrepareConfig(relation_map=...)')} and that edge ids match item ids; "
                            "the skip report: " + "; ".join(report.format()))
    pair_table = None
    if pairs is not None:
        pair_table = pairs_as_nodes(pairs, catalog, RelationMap.edgelist(config.relation_map),
                                     config.id_type, report)
        info["pairs"] = os.fspath(pairs)
    if valid is not None:
        held = {}
        for name, path in (("valid", valid), ("test", test)):
            held[name] = pairs_as_nodes(path, catalog, RelationMap.edgelist(config.relation_map), config.id_type,
                                        report, what=f"{'validation' if name == 'valid' else 'test'} pairs",
                                        need_both_labels=False)
        info["given_splits"] = {"valid": os.fspath(valid), "test": os.fspath(test),
                                "drop_overlap": config.drop_overlap}
        splits, edges = make_given_splits(edges, len(catalog), held["valid"], held["test"], config.split,
                                          drop_overlap=config.drop_overlap, pairs=pair_table)
    else:
        splits = make_splits(edges, len(catalog), config.split, cold_mask=cold_mask, pairs=pair_table)
    dataset = Dataset(catalog=catalog, edges=edges, splits=splits, relation_map=relation_map.to_dict(),
                      report=report, info=info)
    info["prepare_seconds"] = round(time.perf_counter() - started, 3)
    logger.info("prepared %s in %.1fs", dataset, info["prepare_seconds"])
    for warning in dataset.warnings():
        logger.warning("%s", warning)
    return dataset


def dataset_from_graph(graph: Any, item_ids: Optional[Sequence[Any]] = None, titles: Optional[Sequence[str]] = None,
                       config: Optional[PrepareConfig] = None, *, ntype: Optional[str] = None,
                       relations: Optional[Mapping[Any, str]] = None, feat: Any = None,
                       side: bool = True) -> Dataset:
    """A :class:`Dataset` (with splits) from your own DGL graph, in your own schema.

    Args:
        graph: a ``DGLGraph`` (homogeneous or heterogeneous).
        item_ids: one external id per item node (default: ``"0"``, ``"1"``, ...).
        titles: one title per item node, used by content features and ``recommend``.
        config: split settings (``config.split``) and ``symmetric``.
        ntype: the node type of the items (default: ``"item"``, or the graph's only node type).
        relations: which item-item edge types are substitutes and which complements, by edge-type
            name or canonical ``(src, etype, dst)``: ``{"also_viewed": "substitute",
            "also_bought": "complement"}``; ``"ignore"`` leaves one out on purpose.  Default:
            ``substitute`` / ``complement`` / ``s`` / ``c`` and Amazon's names (``also_viewed``,
            ``also_bought``, ``bought_together``, ``also_view``, ``also_buy``).  The map is kept as
            the dataset's relation map, so meta-paths may be written with your names.
        feat: content features: a node-data key of ``ntype`` (``"feat"``), or a tensor ``[N, D]``
            or ``[N, T, D]``, or ``(tokens [N, T, D], mask [N, T])``.  Training uses them with
            ``features="auto"`` (the default).
        side: keep the graph's other edge types (those touching other node types, and item-item
            types not in ``relations``; not the ``"ignore"`` ones) as ``dataset.side``, so that
            meta-paths may pass through them: ``metapaths=[[("product", "rated_by", "user"),
            ("user", "rated", "product")], "s", "c"]``.  They are not split: like content, they are
            seen when training and when testing (docs/api.md says what that means for leakage).

    Every node type, edge type and edge left out is counted in ``dataset.report`` (and logged):
    with ``side=False``, other node types, edge types that touch them, and item-item edge types
    not in ``relations``; always, the ``"ignore"`` ones.

    Example:
        >>> import dgl, torch
        >>> g = dgl.heterograph({("product", "also_viewed", "product"): ([0, 1, 2, 3], [1, 2, 3, 0]),
        ...                      ("product", "also_bought", "product"): ([0, 2], [3, 1])})
        >>> g.nodes["product"].data["feat"] = torch.randn(4, 8)
        >>> ds = dataset_from_graph(g, ntype="product", relations={"also_viewed": "substitute",
        ...                         "also_bought": "complement"}, feat="feat")
        >>> ds.num_items, tuple(ds.features["tokens"].shape)
        (4, (4, 1, 8))
    """
    from mmsc_dgl.schema import RELATIONS
    from mmsc_dgl.data.edges import canonical_edges

    config = config or PrepareConfig()
    report = SkipReport()
    ntype, sources, used, side_edges = item_edges_of(graph, ntype, relations, report, side=side)
    n = graph.num_nodes(ntype)
    for line in report.format():
        logger.info("dataset_from_graph: %s", line)
    ids = [str(i) for i in range(n)] if item_ids is None else [str(i) for i in item_ids]
    if len(ids) != n:
        raise DataError(f"item_ids has {len(ids)} ids for {n} {ntype!r} nodes.", fix="give one id per node.")
    columns = {"item_id": ids}
    if titles is not None:
        columns["title"] = list(titles)
    catalog = ItemCatalog(pa.table(columns))
    edges = {}
    for rel in RELATIONS:
        src, dst = sources[rel]
        edges[rel] = canonical_edges(src.numpy(), dst.numpy(), n, rel, report, symmetric=config.symmetric)
    splits = make_splits(edges, n, config.split)
    features = _graph_features(graph, ntype, feat, n) if feat is not None else None
    return Dataset(catalog=catalog, edges=edges, splits=splits, relation_map=used, report=report,
                   info={"source": {"dgl_graph": repr(graph), "ntype": ntype}}, features=features,
                   side=side_edges)


def _graph_features(graph: Any, ntype: str, feat: Any, n: int) -> dict:
    """``feat`` (a node-data key, a tensor or ``(tokens, mask)``) as ``{"tokens": [N, T, D], "mask": [N, T]}``."""
    if isinstance(feat, str):
        data = graph.nodes[ntype].data
        if feat not in data:
            raise DataError(f"feat={feat!r} is not in the {ntype!r} node data ({sorted(data.keys())}).",
                            fix="name a key of g.nodes[ntype].data, or pass the tensor itself.")
        feat = data[feat]
    from mmsc_dgl.data.node_features import as_token_features
    try:
        tokens, mask = as_token_features(feat)
    except (TypeError, ValueError) as err:
        raise DataError(f"feat: {err}.", fix="pass [N, D], [N, T, D] or (tokens, mask).") from None
    if tokens.shape[0] != n:
        raise DataError(f"feat has {tokens.shape[0]} rows for {n} {ntype!r} nodes.", fix="give one row per node.")
    import torch
    finite = torch.isfinite(tokens.float()).reshape(n, -1).all(1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten()[:5].tolist()
        raise DataError(f"feat holds NaN or inf for {int((~finite).sum()):,} of {n:,} nodes (e.g. nodes {bad}).",
                        fix="fill or drop them (torch.nan_to_num), or mark those nodes as without content "
                            "with (tokens, mask).")
    return {"tokens": tokens, "mask": mask}
