"""The dataset directory written by ``mmsc-dgl prepare`` and read by everything after it.

Layout (docs/data-formats.md has the details)::

    DATASET_DIR/
      dataset.json        summary, counts, skip report, sources, config, format version
      relation_map.json   the raw key -> relation map that was used
      items.parquet       the catalog; row i is node i
      edges.parquet       every edge as node ids (relation, src, dst, extra columns)
      graph.bin           the same edges as a DGL heterograph (dgl.save_graphs)
      splits/             train/val/test/cold edge tables, cold_items, pairs, meta.json
      side_edges.parquet  (only from a graph with other edge types) edges for meta-paths
                          through other node types: src_type, etype, dst_type, src, dst

``edges.parquet`` duplicates ``graph.bin`` on purpose: a machine without DGL (the GPU hosts)
can load a dataset with :meth:`Dataset.load` and ``with_graph=False``.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pyarrow.parquet as pq

from mmsc_dgl.schema import RELATIONS, __version__
from mmsc_dgl.data.catalog import ItemCatalog
from mmsc_dgl.data.edges import RelationEdges, edges_from_table, edges_to_table
from mmsc_dgl.data.node_features import FEATURE_FILE, write_feature_file
from mmsc_dgl.data.report import SkipReport
from mmsc_dgl.data.side import SIDE_FILE, SideEdges
from mmsc_dgl.data.splits import Splits
from mmsc_dgl.errors import DataError, flag
from mmsc_dgl.data.negatives import NegativeSampler
from mmsc_dgl.io import atomic_directory, atomic_write_json, atomic_write_parquet, atomic_write_with
from mmsc_dgl.ownership import check_output_dir, write_marker

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
REQUIRED_FILES = ("dataset.json", "relation_map.json", "items.parquet", "edges.parquet",
                  "splits/meta.json")
CONTENT_FILES = ("items.parquet", "edges.parquet", "relation_map.json")
"""With ``splits/*`` (and the features that came with a graph, if any), the files whose bytes
make a dataset's fingerprint (``dataset.json`` holds timings and ``graph.bin`` is derived, so
neither counts)."""


def dataset_files(directory: os.PathLike | str) -> List[Path]:
    """The files and folders a dataset directory is made of: the inputs that a command writing
    next to them (features, E_LLM edges, meta-path tables) must never replace."""
    directory = Path(directory)
    return [directory / name for name in ("dataset.json", *CONTENT_FILES, FEATURE_FILE, SIDE_FILE, "graph.bin",
                                          "splits")]


def content_fingerprint(directory: os.PathLike | str) -> str:
    """The fingerprint of a dataset directory's content: its tables and its splits."""
    from mmsc_dgl.fingerprint import files_fingerprint
    directory = Path(directory)
    splits = sorted(f"splits/{p.name}" for p in (directory / "splits").glob("*") if p.is_file())
    extra = [name for name in (FEATURE_FILE, SIDE_FILE) if (directory / name).exists()]
    return files_fingerprint(directory, list(CONTENT_FILES) + extra + splits)


def dataset_fingerprint(directory: os.PathLike | str) -> str:
    """The fingerprint recorded in ``dataset.json`` when it was written (computed from the files
    for datasets written before fingerprints were recorded).  Runs record it to know their data."""
    directory = Path(directory)
    try:
        recorded = json.loads((directory / "dataset.json").read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        recorded = None
    return recorded or content_fingerprint(directory)


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

    Example:
        >>> ds = Dataset.load("runs/beauty")                     # doctest: +SKIP
        >>> ds.num_items, ds.splits.train["complement"].src[:3]  # doctest: +SKIP

    """

    catalog: ItemCatalog
    edges: Dict[str, RelationEdges]
    splits: Splits
    relation_map: Dict[str, str] = field(default_factory=dict)
    report: SkipReport = field(default_factory=SkipReport)
    info: dict = field(default_factory=dict)
    root: Optional[Path] = None
    features: Optional[dict] = None
    """Content features that came with the graph (``dataset_from_graph(feat=...)``):
    ``{"tokens": [N, T, D], "mask": [N, T]}``, saved as ``features.pt``; ``None`` otherwise."""
    side: Optional[SideEdges] = None
    """The graph's other edge types (``dataset_from_graph``), for meta-paths through other
    node types; not split (docs/api.md); ``None`` for datasets without them."""
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

    def train_graph(self, side: bool = False):
        """A heterograph of the training edges only: what a model may see while it learns; with
        ``side``, plus the side edge types (:attr:`side`), which are not split."""
        from mmsc_dgl.data.graph import build_graph
        return build_graph(self.num_items, self.splits.train, require_edges=False,
                           side=self.side if side else None)

    def negative_sampler(self) -> NegativeSampler:
        return self.splits.negative_sampler(self.edges)

    # --- summary --------------------------------------------------------------------------
    def warnings(self) -> List[str]:
        """Why this dataset cannot train or evaluate a relation: one line per relation whose
        training, validation or test edges are missing (``train`` refuses such a dataset)."""
        out = []
        min_degree = self.splits.config.min_degree
        for relation in RELATIONS:
            sizes = {"train": len(self.splits.train[relation]), "val": len(self.splits.val[relation]),
                     "test": len(self.splits.test[relation])}
            empty = [part for part, size in sizes.items() if size == 0]
            if not empty:
                continue
            if len(self.edges[relation]) == 0:
                why = f"it has no edges at all (check {flag('--relation-map', 'relation_map')} and the inputs)"
            else:
                why = (f"no item has {min_degree} or more {relation} edges, so none holds out a validation "
                       f"and a test edge (the split keeps an item's last edge for training; {flag('--min-degree', 'split.min_degree')})")
                if "train" in empty:
                    why = "every edge of it was held out (too few edges for a split)"
            out.append(f"{relation}: no {', no '.join(empty)} edges: {why}.")
        return out

    def summary(self) -> dict:
        out: Dict[str, Any] = {"items": self.num_items, "relations": {}}
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
        if self.side is not None:
            out["side_edges"] = {"/".join(e): len(src) for e, (src, _) in self.side.edges.items()}
        out["cold_items"] = self.splits.stats.get("cold_items", {})
        out["negatives"] = self.splits.stats.get("negatives", {})
        out["report"] = self.report.to_dict()
        out["warnings"] = self.warnings()
        return out

    def format_summary(self) -> List[str]:
        s = self.summary()
        lines = [f"items: {s['items']:,}"]
        header = f"{'relation':<11}{'edges':>11} {'items':>9} {'p50':>6} {'p90':>6} {'p99':>7} {'max':>8}" \
                 f" {'train':>11} {'val':>8} {'test':>8} {'cold':>8}"
        lines.append(header)
        for relation, r in s["relations"].items():
            sp = r["split"]
            # a space between columns: a wide figure pushes the row out, never into its neighbour
            lines.append(f"{relation:<11}{r['edges']:>11,} {r['items_with_edges']:>9,} {r['degree_p50']:>6.0f} "
                         f"{r['degree_p90']:>6.0f} {r['degree_p99']:>7.0f} {r['degree_max']:>8,} "
                         f"{sp.get('train', 0):>11,} {sp.get('val', 0):>8,} {sp.get('test', 0):>8,} "
                         f"{sp.get('cold', 0):>8,}")
        lines.append("(edges are directed rows of the graph; 'items' have at least one edge; "
                     "p50..max are out-degree percentiles)")
        noise = {r: v["noise_edges"] for r, v in s["relations"].items() if v["noise_edges"] is not None}
        if noise:
            lines.append("planted noise edges: " + ", ".join(f"{r} {n:,}" for r, n in noise.items()))
        if self.splits.stats.get("protocol") == "given":
            for relation, r in s["relations"].items():
                sp = r["split"]
                lines.append(f"given splits, {relation}: {sp['training_edges_that_are_val_pairs']:,} training edges "
                             f"are validation pairs and {sp['training_edges_that_are_test_pairs']:,} are test "
                             f"pairs ({sp['overlap']})")
        if s.get("side_edges"):
            lines.append("side edges (meta-paths only, not split): "
                         + ", ".join(f"{e} {n:,}" for e, n in s["side_edges"].items()))
        cold = s["cold_items"]
        lines.append(f"cold-start items: {cold.get('count', 0):,} ({cold.get('source', '-')})")
        neg = s["negatives"]
        lines.append(f"negatives per held-out edge: {neg.get('used')} (requested {neg.get('requested')}; "
                     "regenerated from the seed, not stored)")
        lines.extend(self.report.format())
        lines.extend(f"warning: {w}" for w in s["warnings"])
        return lines

    # --- save / load ----------------------------------------------------------------------
    def save(self, directory: os.PathLike | str, overwrite: bool = False, with_graph: bool = True) -> Path:
        """Write the dataset directory atomically (built under a temporary name, then renamed)."""
        directory = Path(directory)
        check_output_dir(directory, "dataset", overwrite=overwrite)
        with atomic_directory(directory, overwrite=overwrite) as tmp:
            self.catalog.save(tmp / "items.parquet")
            atomic_write_parquet(tmp / "edges.parquet", edges_to_table(self.edges))
            if with_graph:
                import dgl
                graph = self.graph()
                atomic_write_with(tmp / "graph.bin", lambda p: dgl.save_graphs(str(p), [graph]))
            self.splits.save(tmp / "splits")
            atomic_write_json(tmp / "relation_map.json", self.relation_map)
            if self.side is not None:
                atomic_write_parquet(tmp / SIDE_FILE, self.side.to_table())
            if self.features is not None:
                write_feature_file(tmp / FEATURE_FILE, self.catalog.ids.to_pylist(), self.features["tokens"],
                                   self.features["mask"])
            atomic_write_json(tmp / "dataset.json", {
                "format_version": FORMAT_VERSION,
                "mmsc_dgl_version": __version__,
                "fingerprint": content_fingerprint(tmp),
                "info": self.info,
                "summary": self.summary(),
            })
            write_marker(tmp, "dataset")
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
            raise _not_a_dataset(directory, missing)
        try:
            meta = json.loads((directory / "dataset.json").read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
            relation_map = json.loads((directory / "relation_map.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise DataError(f"a dataset file is damaged ({err}).", path=directory,
                            fix="prepare the dataset again (mmsc-dgl prepare ... --out DIR --overwrite).") from None
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
        report = SkipReport.from_dict(meta.get("summary", {}).get("report", {}))
        side = None
        if (directory / SIDE_FILE).exists():
            side = SideEdges.from_table(pq.read_table(directory / SIDE_FILE), path=str(directory / SIDE_FILE))
        return cls(catalog=catalog, edges=edges, splits=splits, relation_map=relation_map,
                   report=report, info=meta.get("info", {}), root=directory, side=side)

    def features_file(self) -> Optional[Path]:
        """The saved content features of a dataset made from a graph with features (``None``
        when there are none)."""
        if self.root is None:
            return None
        path = self.root / FEATURE_FILE
        return path if path.exists() else None


def _not_a_dataset(directory: Path, missing: List[str]) -> DataError:
    """Why ``directory`` is no dataset, with a fix that works there: another kind of mmsc_dgl
    directory, what an interrupted prepare left, or files of the user's."""
    from mmsc_dgl.ownership import read_marker
    marker = read_marker(directory) or {}
    kind = marker.get("kind")
    if kind == "run":
        trained_on = ""
        try:
            trained_on = json.loads((directory / "run.json").read_text(encoding="utf-8")).get("dataset") or ""
        except (OSError, ValueError, AttributeError):
            pass
        return DataError("this is an mmsc_dgl run directory, not a dataset.", path=directory,
                         fix=f"pass the dataset it was trained on{f' ({trained_on})' if trained_on else ''}; "
                             f"evaluate and recommend take the run directory itself.")
    if kind is not None and kind != "dataset":
        return DataError(f"this is an mmsc_dgl {kind} directory, not a dataset.", path=directory,
                         fix="pass a directory written by mmsc-dgl prepare.")
    if ".partial-" in directory.name:
        final = directory.name.split(".partial-")[0]
        return DataError("this is what an interrupted mmsc-dgl prepare left behind, not a dataset.", path=directory,
                         fix=f"delete it (rm -r {directory}) and run mmsc-dgl prepare ... --out "
                             f"{directory.parent / final} again.")
    if kind == "dataset":
        return DataError(f"the dataset directory lacks {', '.join(missing)}.", path=directory,
                         fix="re-run mmsc-dgl prepare with --out pointing here and --overwrite.")
    return DataError(f"not a dataset directory (it lacks {', '.join(missing)}).", path=directory,
                     fix="run mmsc-dgl prepare ... --out NEW_DIR, and pass NEW_DIR.")


def load_dataset(directory: os.PathLike | str) -> Dataset:
    """Shorthand for :meth:`Dataset.load`.

    Example:
        >>> ds = mmsc_dgl.load_dataset("runs/beauty")            # doctest: +SKIP
        >>> ds.splits.train["complement"].src[:3], ds.catalog.ids[:3]  # doctest: +SKIP
    """
    return Dataset.load(directory)

