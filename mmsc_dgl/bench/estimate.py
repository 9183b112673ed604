"""What a training run must hold at least, from the catalog's size alone: the figure a
benchmark compares with the memory at hand before it prepares a catalog it could not train
(``mmsc-dgl bench train --sizes 10000000`` refuses in one line instead of being killed).

It is a floor, not a forecast: it counts only what grows with the catalog and is held from the
first step to the last (edges, meta-path tables, the item-sized weights with Adam's two moments
and each relation's best copy), never a step's activations or the features.  docs/benchmarks.md
sets it beside the peak measured at 1M items.
"""
from __future__ import annotations

from typing import Dict, Optional

from mmsc_dgl.schema import RELATIONS as _RELATIONS

RELATIONS = len(_RELATIONS)
"""Relations a run trains (:data:`mmsc_dgl.schema.RELATIONS`)."""


def training_floor_bytes(items: int, degree: float, *, hidden: int, metapaths: int, max_neighbors: int,
                         graph_branch: bool = True) -> Dict[str, int]:
    """The smallest memory a single-machine MMSC run on ``items`` items needs, by part.

    Args:
        items: catalog size.
        degree: mean edges per item and relation (all splits).
        hidden: width of the item-sized tables (``model.hidden``).
        metapaths: meta-paths with a neighbour table.
        max_neighbors: neighbours kept per item and meta-path.
        graph_branch: whether the model has the graph branch (one shared and one table per
            relation, besides the id embeddings).

    Returns:
        bytes per part (``edges``, ``metapath_tables``, ``weights``) and their ``total``.
    """
    edges = int(items * degree * RELATIONS) * 2 * 8                    # (src, dst) int64 of every edge
    tables = items * metapaths * max_neighbors * 8                       # int64 neighbour ids
    per_item_tables = 1 + ((1 + RELATIONS) if graph_branch else 0)       # id rows (+ shared, per relation)
    copies = 1 + 2 + RELATIONS                                           # weights, Adam's moments, best per relation
    weights = items * hidden * 4 * per_item_tables * copies
    parts = {"edges": edges, "metapath_tables": tables, "weights": weights}
    parts["total"] = sum(parts.values())
    return parts


def available_bytes() -> Optional[int]:
    """``MemAvailable`` of ``/proc/meminfo`` (Linux); ``None`` where it cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def refusal(items: int, floor: Dict[str, int], available: Optional[int]) -> Optional[str]:
    """One line saying why ``items`` cannot be trained here, or ``None`` where the floor fits."""
    if available is None or floor["total"] <= available:
        return None
    gib = 2**30
    parts = ", ".join(f"{name.replace('_', ' ')} {value / gib:.1f}" for name, value in floor.items() if name != "total")
    return (f"{items:,} items need at least {floor['total'] / gib:.1f} GiB ({parts} GiB), {available / gib:.1f} GiB "
            "available: train it with DistDGL (docs/distributed.md) or on a larger machine")
