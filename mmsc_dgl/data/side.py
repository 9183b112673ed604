"""Side edges: the edge types of a user's graph that are not item relations (item-user,
user-item, item-brand, an unmapped item-item type, ...), kept so that meta-paths may pass
through them (``item -> user -> item``).

They are not split: like content features, they are known when training and when testing.
If they encode the relations themselves (a user who bought both items of a held-out
``complement`` edge), a meta-path through them sees that held-out evidence; the choice of what
to keep is the user's (``dataset_from_graph(side=False)`` keeps none).

Edge types are canonical ``(src_type, etype, dst_type)`` in this package's schema: the item
node type is called ``item`` whatever the graph called it; ``item_type`` keeps its own name
so that meta-paths may be written with either.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from mmsc_dgl.schema import NODE_TYPE
from mmsc_dgl.errors import DataError

SIDE_FILE = "side_edges.parquet"
EdgeType = Tuple[str, str, str]


@dataclass
class SideEdges:
    """Edges of the non-relation edge types, as node ids of their own node types.

    Attributes:
        num_nodes: node count of every node type the side edges touch (``item`` included).
        edges: canonical edge type -> ``(src, dst)`` int64 arrays.
        item_type: the item node type's name in the source graph (``"product"``).
    """

    num_nodes: Dict[str, int]
    edges: Dict[EdgeType, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    item_type: str = NODE_TYPE

    @property
    def etypes(self) -> List[EdgeType]:
        return list(self.edges)

    def __len__(self) -> int:
        return sum(len(s) for s, _ in self.edges.values())

    def __repr__(self) -> str:
        parts = ", ".join(f"{e}={len(s):,}" for e, (s, _) in self.edges.items())
        return f"SideEdges({parts})"

    def to_table(self) -> pa.Table:
        """One row per edge: ``src_type, etype, dst_type, src, dst``; node counts and the item
        type's own name in the schema metadata."""
        cols: Dict[str, list] = {"src_type": [], "etype": [], "dst_type": [], "src": [], "dst": []}
        for (s, e, d), (src, dst) in self.edges.items():
            n = len(src)
            cols["src_type"].append(pa.array([s] * n, pa.string()))
            cols["etype"].append(pa.array([e] * n, pa.string()))
            cols["dst_type"].append(pa.array([d] * n, pa.string()))
            cols["src"].append(pa.array(np.asarray(src, dtype=np.int64)))
            cols["dst"].append(pa.array(np.asarray(dst, dtype=np.int64)))
        types = {"src_type": pa.string(), "etype": pa.string(), "dst_type": pa.string(),
                 "src": pa.int64(), "dst": pa.int64()}
        arrays = [pa.concat_arrays(v) if v else pa.array([], types[k]) for k, v in cols.items()]
        meta = {"num_nodes": json.dumps(self.num_nodes), "item_type": self.item_type,
                "etypes": json.dumps([list(e) for e in self.edges])}
        return pa.table(dict(zip(cols, arrays))).replace_schema_metadata(meta)

    @classmethod
    def from_table(cls, table: pa.Table, path: Optional[str] = None) -> "SideEdges":
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        try:
            num_nodes = {str(k): int(v) for k, v in json.loads(meta["num_nodes"]).items()}
            etypes = [tuple(e) for e in json.loads(meta["etypes"])]
        except (KeyError, ValueError, TypeError) as err:
            raise DataError(f"side edge file without its node counts ({err}).", path=path,
                            fix="write the dataset again with dataset_from_graph(...).save(DIR).") from None
        etype_col = np.asarray(table.column("etype").to_pylist(), dtype=object)
        src_type = np.asarray(table.column("src_type").to_pylist(), dtype=object)
        dst_type = np.asarray(table.column("dst_type").to_pylist(), dtype=object)
        src_all = table.column("src").to_numpy()
        dst_all = table.column("dst").to_numpy()
        edges = {}
        for s, e, d in etypes:
            rows = (src_type == s) & (etype_col == e) & (dst_type == d)
            edges[(s, e, d)] = (src_all[rows].astype(np.int64), dst_all[rows].astype(np.int64))
        return cls(num_nodes, edges, meta.get("item_type", NODE_TYPE))

    def graph_data(self) -> Dict[EdgeType, tuple]:
        """``{canonical etype: (src, dst)}`` as torch tensors, for ``dgl.heterograph``."""
        import torch
        return {e: (torch.from_numpy(np.require(s, requirements=["C", "W"])),
                    torch.from_numpy(np.require(d, requirements=["C", "W"]))) for e, (s, d) in self.edges.items()}


__all__ = ["SIDE_FILE", "SideEdges"]
