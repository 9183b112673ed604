"""Meta-paths over the two item relations: ``s``, ``c``, ``s-c``, ``c-s``, ``s-c-s``, ..."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from mmsc_dgl import RELATIONS
from mmsc_dgl.errors import DataError

ABBREVIATIONS = {"s": "substitute", "c": "complement"}
MAX_HOPS = 3


@dataclass(frozen=True)
class MetaPath:
    """A sequence of relations; item ``j`` is a neighbour of ``i`` when a walk from ``i`` that
    follows the relations in order can end at ``j``.

    Example:
        >>> MetaPath.parse("s-c-s").relations
        ('substitute', 'complement', 'substitute')
        >>> MetaPath(("complement", "substitute")).name
        'c-s'
    """

    relations: Tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.relations:
            raise DataError("a meta-path needs at least one relation.", fix="e.g. --metapaths s,c,s-c")
        for rel in self.relations:
            if rel not in RELATIONS:
                raise DataError(f"meta-path relation {rel!r} is not one of {RELATIONS}.",
                                fix="write meta-paths with s and c, e.g. s-c-s")

    @classmethod
    def parse(cls, text: Union[str, "MetaPath", Sequence[Any]],
              names: Optional[Mapping[str, str]] = None) -> "MetaPath":
        """``"s-c-s"``, or the form DGL and PyG users know: a list of edge types, each a name or
        a canonical ``(src_type, etype, dst_type)`` (as PyG's ``AddMetaPaths(metapaths=[[...]])``).
        Edge-type names are read through ``names`` (a dataset's relation map, e.g.
        ``{"also_viewed": "substitute"}``) besides s, c, substitute and complement."""
        if isinstance(text, MetaPath):
            return text
        lookup = {**ABBREVIATIONS, **{k: v for k, v in (names or {}).items() if v in RELATIONS}}
        parts = text.split("-") if isinstance(text, str) else list(text)
        relations = []
        for part in parts:
            if isinstance(part, (tuple, list)):
                if len(part) != 3:
                    raise DataError(f"cannot read meta-path {text!r}: {part!r} is not a (src_type, etype, "
                                    "dst_type) edge type.", fix="e.g. [('item', 'also_viewed', 'item'), ...]")
                part = part[1]
            part = str(part).strip()
            name = lookup.get(part, part)
            if name not in RELATIONS:
                known = ", ".join(sorted(k for k in lookup if k not in ABBREVIATIONS))
                raise DataError(f"cannot read meta-path {text!r}: {part!r} is not s, c, substitute or complement"
                                + (f" (nor {known})" if known else "") + ".",
                                fix="write meta-paths like s, c, s-c, c-s-c, or lists of the dataset's "
                                    "item-item edge types")
            relations.append(name)
        return cls(tuple(relations))

    @property
    def name(self) -> str:
        return "-".join(r[0] for r in self.relations)

    @property
    def hops(self) -> int:
        return len(self.relations)

    def __str__(self) -> str:
        return self.name


def default_metapaths(max_hops: int = MAX_HOPS) -> List[MetaPath]:
    """Every meta-path of 1 to ``max_hops`` hops over s and c (2 + 4 + 8 = 14 for 3 hops)."""
    out = []
    for hops in range(1, max_hops + 1):
        out.extend(MetaPath(combo) for combo in itertools.product(RELATIONS, repeat=hops))
    return out


def parse_metapaths(spec: Union[str, Iterable[Any], None],
                    names: Optional[Mapping[str, str]] = None) -> List[MetaPath]:
    """``"s,c,s-c"`` or a list of names, MetaPaths or edge-type lists (``[[("item", "also_viewed",
    "item"), ("item", "also_bought", "item")]]``, read through ``names``) -> unique MetaPaths in
    order.  ``None`` or ``"all"`` gives :func:`default_metapaths`.

    Example:
        >>> [p.name for p in parse_metapaths([["also_viewed"], [("item", "also_viewed", "item"),
        ...     ("item", "also_bought", "item")]], {"also_viewed": "substitute", "also_bought": "complement"})]
        ['s', 's-c']
    """
    if spec is None or spec == "all":
        return default_metapaths()
    if isinstance(spec, str) and spec.startswith("hops:"):
        try:
            hops = int(spec[5:])
        except ValueError:
            hops = 0
        if not 1 <= hops <= MAX_HOPS:
            raise DataError(f"{spec!r}: hops must be 1 to {MAX_HOPS}.", fix="e.g. --metapaths hops:2")
        return default_metapaths(hops)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: List[MetaPath] = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        path = MetaPath.parse(item, names)
        if path not in out:
            out.append(path)
    if not out:
        raise DataError(f"no meta-path in {spec!r}.", fix="e.g. --metapaths s,c,s-c")
    return out
