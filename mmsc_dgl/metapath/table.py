"""Meta-path neighbour tables: CSR in plain torch tensors, saved and loaded without DGL."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional

import torch

from mmsc_dgl.errors import DataError
from mmsc_dgl.io import atomic_path
from mmsc_dgl.metapath.spec import MetaPath
from mmsc_dgl.ops.csr import CSR

FORMAT_VERSION = 1


@dataclass
class MetaPathTable:
    """Neighbours of every item under one meta-path: a :class:`~mmsc_dgl.ops.csr.CSR` (row ``i``
    lists item ``i``'s meta-path neighbours) plus a weight per pair.

    Attributes:
        metapath: the meta-path.
        adjacency: the neighbour lists; ``indptr``, ``indices``, ``degrees`` and ``nonempty``
            are its own (neighbour ids sorted within each row).
        weight: [num_pairs] float32: the number of paths (``exact``, ``topk``) or the share of
            walks that ended there (``walk``).
        strategy: ``exact``, ``topk`` or ``walk``.
        max_neighbors: the cap ``k`` per row (``None`` for ``exact``).
    """

    metapath: MetaPath
    adjacency: CSR
    weight: torch.Tensor
    strategy: str
    max_neighbors: Optional[int] = None

    @classmethod
    def from_arrays(cls, metapath: MetaPath, indptr: torch.Tensor, indices: torch.Tensor, weight: torch.Tensor,
                    strategy: str, max_neighbors: Optional[int] = None) -> "MetaPathTable":
        return cls(metapath, CSR(indptr, indices), weight, strategy, max_neighbors)

    @property
    def indptr(self) -> torch.Tensor:
        return self.adjacency.indptr

    @property
    def indices(self) -> torch.Tensor:
        return self.adjacency.indices

    @property
    def num_items(self) -> int:
        return self.adjacency.num_rows

    @property
    def num_pairs(self) -> int:
        return self.adjacency.num_edges

    @property
    def degrees(self) -> torch.Tensor:
        return self.adjacency.degrees

    @property
    def nonempty(self) -> torch.Tensor:
        """Items with at least one neighbour under this meta-path; the rest must fall back."""
        return self.adjacency.nonempty

    def csr(self, device: Optional[torch.device | str] = None) -> CSR:
        return self.adjacency if device is None else self.adjacency.to(device)

    def __repr__(self) -> str:
        empty = int((~self.nonempty).sum())
        return (f"MetaPathTable({self.metapath.name}, {self.strategy}, pairs={self.num_pairs:,}, "
                f"empty_items={empty:,})")

    def state(self) -> dict:
        return {"relations": list(self.metapath.relations), "indptr": self.indptr, "indices": self.indices,
                "weight": self.weight, "strategy": self.strategy,
                "max_neighbors": -1 if self.max_neighbors is None else int(self.max_neighbors)}

    @classmethod
    def from_state(cls, state: dict) -> "MetaPathTable":
        k = int(state["max_neighbors"])
        hops = tuple(tuple(r) if isinstance(r, (list, tuple)) else r for r in state["relations"])
        return cls.from_arrays(MetaPath(hops), state["indptr"], state["indices"],
                               state["weight"], state["strategy"], None if k < 0 else k)


class MetaPathTables(Mapping[str, MetaPathTable]):
    """The tables of several meta-paths over one item set, keyed by name (``"s-c"``).

    Example:
        >>> tables = MetaPathTables.load("runs/synthetic-10k/metapaths.pt")  # doctest: +SKIP
        >>> tables["s-c"].indptr[:3], tables.format_summary()               # doctest: +SKIP
    """

    def __init__(self, tables: List[MetaPathTable], info: Optional[dict] = None):
        if not tables:
            raise ValueError("no meta-path tables")
        sizes = {t.num_items for t in tables}
        if len(sizes) != 1:
            raise ValueError(f"tables cover different item counts: {sorted(sizes)}")
        self._tables: Dict[str, MetaPathTable] = {t.metapath.name: t for t in tables}
        self.num_items = sizes.pop()
        self.info = dict(info or {})

    def __getitem__(self, name: str) -> MetaPathTable:
        try:
            return self._tables[name]
        except KeyError:
            raise KeyError(f"no table for meta-path {name!r}; have {list(self._tables)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)

    def __repr__(self) -> str:
        return f"MetaPathTables({self.num_items:,} items, {', '.join(self._tables)})"

    def nonempty_mask(self) -> torch.Tensor:
        """[num_items, num_metapaths] bool, in this collection's order."""
        return torch.stack([t.nonempty for t in self._tables.values()], dim=1)

    def summary(self) -> List[dict]:
        rows = []
        for name, t in self._tables.items():
            deg = t.degrees
            rows.append({"metapath": name, "strategy": t.strategy, "max_neighbors": t.max_neighbors,
                         "pairs": t.num_pairs, "empty_items": int((deg == 0).sum()),
                         "mean_neighbors": float(deg.float().mean()) if t.num_items else 0.0,
                         "max_row": int(deg.max()) if t.num_items else 0})
        return rows

    def format_summary(self) -> List[str]:
        w = max([10, *(len(name) + 2 for name in self._tables)])
        lines = [f"{'meta-path':<{w}}{'strategy':<9}{'k':>5}{'pairs':>14}{'mean':>8}{'max':>8}{'empty items':>13}"]
        for r in self.summary():
            k = "-" if r["max_neighbors"] is None else r["max_neighbors"]
            lines.append(f"{r['metapath']:<{w}}{r['strategy']:<9}{k:>5}{r['pairs']:>14,}{r['mean_neighbors']:>8.1f}"
                         f"{r['max_row']:>8,}{r['empty_items']:>13,}")
        return lines

    def save(self, path: os.PathLike | str) -> None:
        """One file (``torch.save``), written atomically; loads with ``weights_only=True``."""
        state = {"format_version": FORMAT_VERSION, "num_items": self.num_items, "info": self.info,
                 "tables": [t.state() for t in self._tables.values()]}
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: os.PathLike | str, map_location: Optional[str] = "cpu") -> "MetaPathTables":
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise DataError("no meta-path tables here.", path=path,
                            fix="run mmsc-dgl metapaths DATASET_DIR first.") from None
        except Exception as err:  # a corrupt or foreign file
            raise DataError(f"cannot read meta-path tables: {err}", path=path,
                            fix="re-run mmsc-dgl metapaths to write them again.") from err
        if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
            raise DataError("not a meta-path table file of this version.", path=path,
                            fix="re-run mmsc-dgl metapaths to write it again.")
        return cls([MetaPathTable.from_state(s) for s in state["tables"]], info=state.get("info"))
