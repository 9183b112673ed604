"""The dataset directory written by ``mmsc-dgl prepare`` and read by everything after it.

Layout (docs/data-formats.md has the details)::

    DATASET_DIR/
      dataset.json        summary, counts, skip report, sources, config, format version
      relation_map.json   the raw key -> relation map that was used
      items.parquet       the catalog; row i is node i
      edges.parquet       every edge as node ids (relation, src, dst, extra columns)
      graph.bin           the same edges as a DGL heterograph (dgl.save_graphs)
      splits/             train/val/test/cold edge tables, cold_items, pairs, meta.json

``edges.parquet`` duplicates ``graph.bin`` on purpose: a machine without DGL (the GPU hosts)
can load a dataset with :meth:`Dataset.load` and ``with_graph=False``.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pyarrow.parquet as pq

from mmsc_dgl import RELATIONS, __version__
from mmsc_dgl.data.catalog import ItemCatalog
from mmsc_dgl.data.edges import RelationEdges, edges_from_table, edges_to_table
from mmsc_dgl.data.report import SkipReport
from mmsc_dgl.data.splits import Splits
from mmsc_dgl.errors import DataError
from mmsc_dgl.eval.negatives import NegativeSampler
from mmsc_dgl.io import atomic_directory, atomic_write_json, atomic_write_parquet, atomic_write_with

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
REQUIRED_FILES = ("dataset.json", "relation_map.json", "items.parquet", "edges.parquet",
                  "splits/meta.json")


@dataclass
class Dataset:
    """A prepared dataset: catalog, every edge, splits, and what happened on the way.

    Attributes:
        catalog: item metadata; row ``i`` is node ``i``.
        edges: every edge per relation as node ids (held-out ones included).
        splits: train/val/test/cold edges and the negative-sampling settings.
        relation_map: the raw key -> relation map used to read the inputs.
        report: what the readers and the graph builder skipped, and why.
        info: sources, configs and anything else recorded in ``dataset.json``.
    """

    catalog: ItemCatalog
    edges: Dict[str, RelationEdges]
    splits: Splits
    relation_map: Dict[str, str] = field(default_factory=dict)
    report: SkipReport = field(default_factory=SkipReport)
    info: dict = field(default_factory=dict)
    root: Optional[Path] = None
    _graph: object = None

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    def __repr__(self) -> str:
        counts = ", ".join(f"{r}={len(self.edges[r]):,}" for r in RELATIONS)
        return f"Dataset({self.num_items:,} items, {counts})"

    def graph(self):
        """The full heterograph (DGL; imported here, not at module load)."""
        if self._graph is None:
            graph_path = self.root / "graph.bin" if self.root else None
            if graph_path is not None and graph_path.exists():
                import dgl
                graphs, _ = dgl.load_graphs(str(graph_path))
                self._graph = graphs[0]
            else:
                from mmsc_dgl.data.graph import build_graph
                self._graph = build_graph(self.num_items, self.edges)
        return self._graph

    def train_graph(self):
        """A heterograph of the training edges only: what a model may see while it learns."""
        from mmsc_dgl.data.graph import build_graph
        return build_graph(self.num_items, self.splits.train, require_edges=False)

    def negative_sampler(self) -> NegativeSampler:
        return self.splits.negative_sampler(self.edges)

    # --- summary --------------------------------------------------------------------------
    def summary(self) -> dict:
        out = {"items": self.num_items, "relations": {}}
        for relation in RELATIONS:
            rel = self.edges[relation]
            degree = rel.degrees(self.num_items)
            pct = np.percentile(degree, [50, 90, 99]) if self.num_items else np.zeros(3)
            out["relations"][relation] = {
                "edges": len(rel),
                "items_with_edges": int((degree > 0).sum()),
                "degree_p50": float(pct[0]), "degree_p90": float(pct[1]), "degree_p99": float(pct[2]),
                "degree_max": int(degree.max()) if len(degree) else 0,
                "noise_edges": int(rel.data["is_noise"].sum()) if "is_noise" in rel.data else None,
                "split": self.splits.stats.get(relation, {}),
            }
        out["cold_items"] = self.splits.stats.get("cold_items", {})
        out["negatives"] = self.splits.stats.get("negatives", {})
        out["report"] = self.report.to_dict()
        return out

    def format_summary(self) -> List[str]:
        s = self.summary()
        lines = [f"items: {s['items']:,}"]
        header = f"{'relation':<11}{'edges':>11}{'items':>9}{'p50':>6}{'p90':>6}{'p99':>7}{'max':>7}" \
                 f"{'train':>11}{'val':>8}{'test':>8}{'cold':>8}"
        lines.append(header)
        for relation, r in s["relations"].items():
            sp = r["split"]
            lines.append(f"{relation:<11}{r['edges']:>11,}{r['items_with_edges']:>9,}{r['degree_p50']:>6.0f}"
                         f"{r['degree_p90']:>6.0f}{r['degree_p99']:>7.0f}{r['degree_max']:>7,}"
                         f"{sp.get('train', 0):>11,}{sp.get('val', 0):>8,}{sp.get('test', 0):>8,}"
                         f"{sp.get('cold', 0):>8,}")
        lines.append("(edges are directed rows of the graph; 'items' have at least one edge; "
                     "p50..max are out-degree percentiles)")
        noise = {r: v["noise_edges"] for r, v in s["relations"].items() if v["noise_edges"] is not None}
        if noise:
            lines.append("planted noise edges: " + ", ".join(f"{r} {n:,}" for r, n in noise.items()))
        cold = s["cold_items"]
        lines.append(f"cold-start items: {cold.get('count', 0):,} ({cold.get('source', '-')})")
        neg = s["negatives"]
        lines.append(f"negatives per held-out edge: {neg.get('used')} (requested {neg.get('requested')}; "
                     "regenerated from the seed, not stored)")
        lines.extend(self.report.format())
        return lines

    # --- save / load ----------------------------------------------------------------------
    def save(self, directory: os.PathLike | str, overwrite: bool = False, with_graph: bool = True) -> Path:
        """Write the dataset directory atomically (built under a temporary name, then renamed)."""
        directory = Path(directory)
        with atomic_directory(directory, overwrite=overwrite) as tmp:
            self.catalog.save(tmp / "items.parquet")
            atomic_write_parquet(tmp / "edges.parquet", edges_to_table(self.edges))
            if with_graph:
                import dgl
                graph = self.graph()
                atomic_write_with(tmp / "graph.bin", lambda p: dgl.save_graphs(str(p), [graph]))
            self.splits.save(tmp / "splits")
            atomic_write_json(tmp / "relation_map.json", self.relation_map)
            atomic_write_json(tmp / "dataset.json", {
                "format_version": FORMAT_VERSION,
                "mmsc_dgl_version": __version__,
                "info": self.info,
                "summary": self.summary(),
            })
        self.root = directory
        logger.info("wrote dataset to %s", directory)
        return directory

    @classmethod
    def load(cls, directory: os.PathLike | str) -> "Dataset":
        """Read a dataset directory.  Needs no DGL; :meth:`graph` imports it when called."""
        directory = Path(directory)
        if not directory.is_dir():
            raise DataError("not a dataset directory.", path=directory,
                            fix="run mmsc-dgl prepare ... --out DIR first.")
        missing = [name for name in REQUIRED_FILES if not (directory / name).exists()]
        if missing:
            raise DataError(f"the dataset directory lacks {', '.join(missing)}.", path=directory,
                            fix="re-run mmsc-dgl prepare with --out pointing here (and --overwrite).")
        meta = json.loads((directory / "dataset.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(f"dataset format {meta.get('format_version')} is not the supported "
                            f"{FORMAT_VERSION}.", path=directory / "dataset.json",
                            fix="re-run mmsc-dgl prepare with this version of mmsc_dgl.")
        catalog = ItemCatalog.load(directory / "items.parquet")
        edges = edges_from_table(pq.read_table(directory / "edges.parquet"))
        splits = Splits.load(directory / "splits")
        if splits.num_items != len(catalog):
            raise DataError(f"splits are for {splits.num_items} items but items.parquet has "
                            f"{len(catalog)}.", path=directory,
                            fix="re-run mmsc-dgl prepare; the directory mixes two datasets.")
        relation_map = json.loads((directory / "relation_map.json").read_text())
        report = SkipReport.from_dict(meta.get("summary", {}).get("report", {}))
        return cls(catalog=catalog, edges=edges, splits=splits, relation_map=relation_map,
                   report=report, info=meta.get("info", {}), root=directory)


def load_dataset(directory: os.PathLike | str) -> Dataset:
    """Shorthand for :meth:`Dataset.load`."""
    return Dataset.load(directory)

