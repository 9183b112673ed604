"""Queries against a run directory: ``mmsc-dgl recommend`` (one item, every item, new items)."""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, cast

import numpy as np
import pyarrow as pa
import torch

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.errors import DataError, flag
from mmsc_dgl.io import atomic_write_parquet, human_size
from mmsc_dgl.lock import writer_lock
from mmsc_dgl.ownership import check_output_file
from mmsc_dgl.runs.item_model import catalog_pair_term, sparse_pair_term
from mmsc_dgl.runs.load import load_run

logger = logging.getLogger(__name__)

EXPLAIN_BLOCK = 1 << 16
"""Pairs explained together by ``recommend --all --explain`` (bounds its memory)."""


def recommend(run_dir: os.PathLike | str, relation: str, k: int = 10, item: Optional[str] = None,
              device: Optional[str] = None, out: Optional[os.PathLike | str] = None, overwrite: bool = False,
              dataset: Optional[os.PathLike | str] = None, explain: bool = False,
              features: Optional[os.PathLike | str] = None, ann: bool = False) -> List[Dict]:
    """Top-``k`` items for one item (``item``) or for every item (written to ``out`` as parquet;
    an existing file is replaced only with ``overwrite``).  ``k`` is capped at the number of
    other items; the summary row of ``--all`` says how many were written per item.

    Scores are the model's own: the embedding dot product plus, for MMSC, its path-evidence
    term, over the whole catalog (exact).  ``explain`` adds, per pick, the embedding term, the
    structural term's share per meta-path, the number of paths of each meta-path and one
    intermediate item (:mod:`mmsc_dgl.eval.explain`).  From Python, :meth:`ItemModel.topk` is
    the same ranking without reading the run directory again per call.

    ``ann`` adds a candidate stage for large catalogs: a FAISS index over the embeddings
    (:func:`~mmsc_dgl.eval.retrieval.faiss_search`; ``pip install mmsc_dgl[faiss]``) gives each
    item's nearest neighbours, which, with the items its meta-paths and edges reach, are
    re-ranked by the model's exact score.  Approximate only where the index misses.

    Example:
        >>> rows = mmsc_dgl.recommend("runs/beauty-mmsc", "complement", k=5, item="B00005N7P0",
        ...                           explain=True)  # doctest: +SKIP
        >>> [(r["rank"], r["item_id"], r["score"]) for r in rows]  # doctest: +SKIP
    """
    if relation not in RELATIONS:
        raise DataError(f"unknown relation {relation!r}.", fix=f"use one of {', '.join(RELATIONS)}.")
    if item is None:
        if out is None:
            raise DataError(f"{flag('--all', 'item=None (every item)')} needs {flag('--out FILE.parquet', 'out=PATH.parquet')}.",
                            fix="pass " + flag('--out recs.parquet', "out='recs.parquet'") + ".")
        inputs = [run_dir] + ([dataset] if dataset else []) + ([features] if features else [])
        check_output_file(out, overwrite=overwrite, inputs=inputs)
        with writer_lock(out, "this output file"):  # one writer; checked again now that it is ours
            check_output_file(out, overwrite=overwrite, inputs=inputs)
            return _recommend(run_dir, relation, k, item, device, out, dataset, explain, features, ann)
    return _recommend(run_dir, relation, k, item, device, out, dataset, explain, features, ann)


def _recommend(run_dir: os.PathLike | str, relation: str, k: int, item: Optional[str], device: Optional[str],
               out: Optional[os.PathLike | str], dataset: Optional[os.PathLike | str], explain: bool,
               features: Optional[os.PathLike | str], ann: bool) -> List[Dict]:
    run = load_run(run_dir, device, dataset, features)
    if not run.model.has_embeddings:
        raise DataError(f"{run.config.architecture} scores pairs and has no item embeddings to retrieve with.",
                        path=run_dir, fix="recommend from an embedding model's run (mmsc, lightgcn, ...).")
    catalog = run.dataset.catalog
    answers = run.item_model()  # the query API of mmsc_dgl.load_model: the CLI answers through it
    model = answers.for_relation(relation)
    emb = answers.embed(relation)
    targets = answers.targets(relation)
    search = _ann_index(targets) if ann else None
    ids = catalog.ids.to_pylist()
    titles = catalog.titles()
    from mmsc_dgl.eval.explain import explain_columns, explain_pairs
    from mmsc_dgl.eval.retrieval import topk_all, topk_searched
    if item is not None:
        node = catalog.node(item)
        if k > len(ids) - 1:
            logger.warning("-k %d is more than the %d other items; showing all of them", k, len(ids) - 1)
        top = answers.topk(node, relation, k, search=search)
        picks = top.nodes[0].tolist()
        rows = [{"rank": i + 1, "item_id": ids[j], "title": titles[j], "score": float(s)}
                for i, (s, j) in enumerate(zip(top.scores[0].tolist(), picks))]
        if explain:
            for row, extra in zip(rows, explain_pairs(model, emb, relation, node, picks, ids, titles)):
                row.update(extra)
        return rows
    with torch.no_grad():
        if search is not None:
            scores, picked = topk_searched(emb, k, search, sparse_term=sparse_pair_term(answers.pair_term(relation)),
                                         targets=targets)
        else:
            term = catalog_pair_term(answers.pair_term(relation), len(catalog))
            block = 2048 if term is None else 256
            _announce_ranking(len(catalog), k, block, term is not None)
            scores, picked = topk_all(emb, k, block_size=block, pair_term=term, targets=targets)
    assert out is not None  # recommend() refuses every item without an output file
    width = picked.shape[1]
    src = torch.arange(len(ids)).repeat_interleave(width).numpy()
    dst = picked.flatten().numpy()
    id_array = pa.array(ids)
    columns = {"item_id": id_array.take(pa.array(src)),
               "rank": np.tile(np.arange(1, width + 1), len(ids)).astype(np.int32),
               "recommended_id": id_array.take(pa.array(dst)), "score": scores.flatten().numpy(),
               "relation": pa.array([relation] * len(src))}
    if explain:  # every pick at once, a block of pairs at a time (the order of the rows above)
        extras: Dict[str, list] = {}
        pairs_src, pairs_dst = torch.from_numpy(src), picked.flatten()
        for at in range(0, len(src), EXPLAIN_BLOCK):
            chunk = explain_columns(model, emb, relation, pairs_src[at: at + EXPLAIN_BLOCK],
                                    pairs_dst[at: at + EXPLAIN_BLOCK], ids, titles)
            for key, values in chunk.items():
                extras.setdefault(key, []).extend(values)
        columns.update(extras)
    table = pa.table(columns)
    atomic_write_parquet(out, table)
    return [{"items": len(ids), "rows": table.num_rows, "k": width, "out": os.fspath(out)}]


def _announce_ranking(n: int, k: int, block: int, pairwise: bool) -> None:
    """Say before the exact ranking of every item what it will hold in memory: a block of
    scores against the whole catalog (twice with a pairwise term: the term and the sum) and
    the answers; its time follows in the progress lines (top-k: ... ETA)."""
    from mmsc_dgl.progress import report
    working = block * n * 4 * (3 if pairwise else 1) + n * min(k, n) * 12
    report("recommend --all: ranking %s items against all %s, %s queries at a time; about %s of "
           "working memory (--ann ranks only candidates for large catalogs)", f"{n:,}", f"{n:,}", f"{block:,}",
           human_size(working))


def recommend_new(run_dir: os.PathLike | str, items: os.PathLike | str, relation: str, k: int = 10,
                  edges: Optional[os.PathLike | str] = None, device: Optional[str] = None,
                  out: Optional[os.PathLike | str] = None, overwrite: bool = False,
                  dataset: Optional[os.PathLike | str] = None, explain: bool = False,
                  features: Optional[os.PathLike | str] = None) -> List[Dict]:
    """Top-``k`` catalog items (and other new items) for items the run was not trained on.

    ``items``: a parquet file with the catalog's columns (``item_id``, and the title, category,
    brand, description or image columns that the run's features read); their features are
    extracted with the run's own extractor (:func:`~mmsc_dgl.features.new_items.new_item_features`).
    ``edges``: a parquet file of their known edges, columns ``src``, ``dst`` (external ids, at
    least one end new) and ``relation``.  The items join the model as
    :meth:`ItemModel.add_items` has them (placed by content, moved toward their partners, paths
    counted through them); nothing on disk changes.  One row per pick, as for ``item``; with
    ``out``, the picks of every new item are written there as ``--all`` writes them.

    Example:
        >>> rows = mmsc_dgl.recommend_new("runs/magazine", "new.parquet", "complement", k=5)  # doctest: +SKIP
        >>> [(r["query_id"], r["rank"], r["item_id"]) for r in rows][:2]                     # doctest: +SKIP
    """
    if relation not in RELATIONS:
        raise DataError(f"unknown relation {relation!r}.", fix=f"use one of {', '.join(RELATIONS)}.")
    if out is not None:
        inputs = [run_dir, items] + ([edges] if edges else []) + ([dataset] if dataset else [])
        check_output_file(out, overwrite=overwrite, inputs=inputs)
        with writer_lock(out, "this output file"):
            check_output_file(out, overwrite=overwrite, inputs=inputs)
            return _recommend_new(run_dir, items, relation, k, edges, device, out, dataset, explain, features)
    return _recommend_new(run_dir, items, relation, k, edges, device, out, dataset, explain, features)


def _read_parquet(path: os.PathLike | str, columns: List[str], what: str, fix: str) -> pa.Table:
    import pyarrow.parquet as pq
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:  # missing, not parquet, damaged (ArrowInvalid is a ValueError)
        raise DataError(f"cannot read {what} ({type(err).__name__}).", path=path, fix=fix) from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{what} have no column {missing[0]!r} (columns: {', '.join(table.column_names)}).",
                        path=path, fix=fix)
    return table


def _recommend_new(run_dir, items_path, relation: str, k: int, edges_path, device, out, dataset, explain: bool,
                   features) -> List[Dict]:
    from mmsc_dgl.data.catalog import ITEM_ID
    from mmsc_dgl.features.new_items import new_item_features
    from mmsc_dgl.eval.explain import explain_pairs
    run = load_run(run_dir, device, dataset, features)
    if not run.model.has_embeddings:
        raise DataError(f"{run.config.architecture} scores pairs and has no item embeddings to place new items with.",
                        path=run_dir, fix="recommend from an embedding model's run (mmsc, lightgcn, ...).")
    table = _read_parquet(items_path, [ITEM_ID], "the new items",
                          f"write a parquet file with an {ITEM_ID!r} column and the catalog's content columns.")
    ids = [None if i is None else str(i) for i in table.column(ITEM_ID).to_pylist()]
    if not ids:
        raise DataError("the new items file has no rows.", path=items_path, fix="add at least one new item.")
    new_edges: Dict[str, list] = {r: [] for r in RELATIONS}
    if edges_path is not None:
        e = _read_parquet(edges_path, ["src", "dst", "relation"], "the new edges",
                          "write a parquet file with columns src, dst (external ids) and relation.")
        for line, (a, b, r) in enumerate(zip(e.column("src").to_pylist(), e.column("dst").to_pylist(),
                                             e.column("relation").to_pylist())):
            if r not in RELATIONS:
                raise DataError(f"row {line}: relation {r!r} is not one of {', '.join(RELATIONS)}.", path=edges_path,
                                fix="map your edge names to substitute or complement first.")
            new_edges[r].append((str(a), str(b)))
    answers = run.item_model()
    content = new_item_features(answers.features, run.dataset.catalog.table, table, path=items_path)
    titles = [" ".join(str(t).split()) if t else None for t in table.column("title").to_pylist()] \
        if "title" in table.column_names else None
    given = cast(List[str], ids)  # a missing id is refused, with its row, by add_items
    try:
        answers.add_items(given, content, edges=new_edges, titles=titles)
    except DataError as err:
        where = edges_path if err.reason.startswith("edges") and edges_path is not None else items_path
        raise DataError(err.reason, path=where, fix=err.fix) from None
    nodes = answers.node_ids(given)
    top = answers.topk(nodes, relation, k)
    all_titles = answers.titles or [None] * answers.num_items
    rows: List[Dict] = []
    for q, (item, picks, scores) in enumerate(zip(ids, top.nodes.tolist(), top.scores.tolist())):
        mine = [{"query_id": item, "rank": i + 1, "item_id": answers.item_ids[j], "title": all_titles[j],
                 "score": float(s)} for i, (s, j) in enumerate(zip(scores, picks))]
        if explain:
            model = answers.for_relation(relation)
            for row, extra in zip(mine, explain_pairs(model, answers.embed(relation), relation, int(nodes[q]), picks,
                                                      answers.item_ids, all_titles, answers.evidence(relation),
                                                      answers.targets(relation))):
                row.update(extra)
        rows += mine
    if out is None:
        return rows
    columns = {"item_id": [r["query_id"] for r in rows], "rank": np.array([r["rank"] for r in rows], dtype=np.int32),
               "recommended_id": [r["item_id"] for r in rows], "score": [r["score"] for r in rows],
               "relation": [relation] * len(rows)}
    for key in (rows[0] if explain and rows else {}):
        if key not in ("query_id", "rank", "item_id", "title", "score"):
            columns[key] = [r.get(key) for r in rows]
    result = pa.table(columns)
    atomic_write_parquet(out, result)
    return [{"items": len(ids), "rows": result.num_rows, "k": top.nodes.shape[1], "out": os.fspath(out)}]


def _ann_index(embedding: torch.Tensor):
    """The FAISS candidate stage of ``recommend --ann``, or a one-line error without FAISS."""
    from mmsc_dgl.eval.retrieval import faiss_search
    try:
        return faiss_search(embedding)
    except ImportError:
        raise DataError(f"{flag('--ann', 'ann=True')} needs FAISS, which is not installed.",
                        fix=f"pip install 'mmsc_dgl[faiss]', or drop {flag('--ann', 'ann=True')} (the exact ranking).") from None
