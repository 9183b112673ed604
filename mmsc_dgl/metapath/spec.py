"""Meta-paths over the two item relations: ``s``, ``c``, ``s-c``, ``c-s``, ``s-c-s``, ...; and,
in a graph that has other node types, through them: ``item -> user -> item``."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from mmsc_dgl.schema import NODE_TYPE, RELATIONS
from mmsc_dgl.errors import DataError, flag

ABBREVIATIONS = {"s": "substitute", "c": "complement"}
MAX_HOPS = 3


Hop = Union[str, Tuple[str, str, str]]
"""A relation name, or a canonical ``(src_type, etype, dst_type)`` side edge type (the item node
type written ``item``)."""


@dataclass(frozen=True)
class MetaPath:
    """A sequence of hops; item ``j`` is a neighbour of ``i`` when a walk from ``i`` that
    follows the hops in order can end at ``j``.  A hop is a relation (``substitute``,
    ``complement``) or a side edge type of the graph (``("item", "rated_by", "user")``): a
    path through other node types must start and end at items, each hop starting where the
    last one ended.

    Example:
        >>> MetaPath.parse("s-c-s").relations
        ('substitute', 'complement', 'substitute')
        >>> MetaPath(("complement", "substitute")).name
        'c-s'
        >>> MetaPath((("item", "rated_by", "user"), ("user", "rated", "item"))).name
        'rated_by-rated'
    """

    relations: Tuple[Hop, ...]

    def __post_init__(self) -> None:
        if not self.relations:
            raise DataError("a meta-path needs at least one relation.", fix=f"e.g. {flag('--metapaths ', 'metapaths=')}s,c,s-c")
        at = NODE_TYPE
        for rel in self.relations:
            if isinstance(rel, tuple):
                if len(rel) != 3 or not all(isinstance(x, str) for x in rel):
                    raise DataError(f"meta-path hop {rel!r} is not a (src_type, etype, dst_type) edge type.",
                                    fix="e.g. [('item', 'rated_by', 'user'), ('user', 'rated', 'item')]")
                if rel[0] != at:
                    raise DataError(f"meta-path {self._text()}: hop {rel!r} starts at {rel[0]!r}, but the "
                                    f"walk is at {at!r}.", fix="chain the edge types: each starts where the "
                                                               "last one ends, from items back to items.")
                at = rel[2]
            elif rel not in RELATIONS:
                raise DataError(f"meta-path relation {rel!r} is not one of {RELATIONS}.",
                                fix="write meta-paths with s and c, e.g. s-c-s")
            elif at != NODE_TYPE:
                raise DataError(f"meta-path {self._text()}: {rel!r} joins items, but the walk is at {at!r}.",
                                fix="chain the edge types: each starts where the last one ends.")
        if at != NODE_TYPE:
            raise DataError(f"meta-path {self._text()} ends at {at!r}, not at items.",
                            fix="add the edge type that leads back to the items.")

    def _text(self) -> str:
        return "-".join(r[1] if isinstance(r, tuple) else r for r in self.relations)

    @property
    def side_hops(self) -> List[Tuple[str, str, str]]:
        """The hops that are side edge types (empty for paths over s and c only)."""
        return [r for r in self.relations if isinstance(r, tuple)]

    @classmethod
    def parse(cls, text: Union[str, "MetaPath", Sequence[Any]],
              names: Optional[Mapping[str, str]] = None, side: Any = None) -> "MetaPath":
        """``"s-c-s"``, or the form DGL and PyG users know: a list of edge types, each a name or
        a canonical ``(src_type, etype, dst_type)`` (as PyG's ``AddMetaPaths(metapaths=[[...]])``).
        Edge-type names are read through ``names`` (a dataset's relation map, e.g.
        ``{"also_viewed": "substitute"}``) besides s, c, substitute and complement; the other
        edge types of the graph come from ``side`` (a dataset's
        :class:`~mmsc_dgl.data.side.SideEdges`, or a list of its canonical edge types), by name
        where it is unique, or as a canonical tuple whose item type may be written as the graph
        wrote it (``("product", "rated_by", "user")``)."""
        if isinstance(text, MetaPath):
            return text
        lookup = {**ABBREVIATIONS, **{k: v for k, v in (names or {}).items() if v in RELATIONS}}
        side_types = [tuple(e) for e in (side.etypes if hasattr(side, "etypes") else side or [])]
        item_alias = getattr(side, "item_type", NODE_TYPE)
        parts = text.split("-") if isinstance(text, str) else list(text)
        relations: List[Hop] = []
        for part in parts:
            canonical = None
            if isinstance(part, (tuple, list)):
                if len(part) != 3:
                    raise DataError(f"cannot read meta-path {text!r}: {part!r} is not a (src_type, etype, "
                                    "dst_type) edge type.", fix="e.g. [('item', 'also_viewed', 'item'), ...]")
                canonical = tuple(NODE_TYPE if str(t) == item_alias else str(t) for t in part)
                part = part[1]
            part = str(part).strip()
            name = lookup.get(part, part)
            if name in RELATIONS:
                relations.append(name)
                continue
            found = [e for e in side_types if e[1] == part and (canonical is None or e == canonical)]
            if len(found) == 1:
                relations.append(found[0])
                continue
            if len(found) > 1:
                raise DataError(f"cannot read meta-path {text!r}: edge type {part!r} is ambiguous ({found}).",
                                fix="write it as a canonical (src_type, etype, dst_type) tuple.")
            known = ", ".join(sorted(k for k in lookup if k not in ABBREVIATIONS))
            others = ", ".join(sorted({e[1] for e in side_types}))
            raise DataError(f"cannot read meta-path {text!r}: {part!r} is not s, c, substitute or complement"
                            + (f" (nor {known})" if known else "")
                            + (f", nor a side edge type ({others})" if others else "") + ".",
                            fix="write meta-paths like s, c, s-c, c-s-c, or lists of the dataset's "
                                "edge types")
        return cls(tuple(relations))

    @property
    def name(self) -> str:
        return "-".join(r[1] if isinstance(r, tuple) else r[0] for r in self.relations)

    @property
    def hops(self) -> int:
        return len(self.relations)

    def __str__(self) -> str:
        return self.name


def default_metapaths(max_hops: int = MAX_HOPS) -> List[MetaPath]:
    """Every meta-path of 1 to ``max_hops`` hops over s and c (2 + 4 + 8 = 14 for 3 hops)."""
    out: List[MetaPath] = []
    for hops in range(1, max_hops + 1):
        out.extend(MetaPath(combo) for combo in itertools.product(RELATIONS, repeat=hops))
    return out


def parse_metapaths(spec: Union[str, Iterable[Any], None],
                    names: Optional[Mapping[str, str]] = None, side: Any = None) -> List[MetaPath]:
    """``"s,c,s-c"`` or a list of names, MetaPaths or edge-type lists (``[[("item", "also_viewed",
    "item"), ("item", "also_bought", "item")]]``, read through ``names`` and ``side``: see
    :meth:`MetaPath.parse`) -> unique MetaPaths in order.  ``None`` or ``"all"`` gives :func:`default_metapaths`.

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
            raise DataError(f"{spec!r}: hops must be 1 to {MAX_HOPS}.", fix=f"e.g. {flag('--metapaths ', 'metapaths=')}hops:2")
        return default_metapaths(hops)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: List[MetaPath] = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        path = MetaPath.parse(item, names, side)
        if path not in out:
            out.append(path)
    if not out:
        raise DataError(f"no meta-path in {spec!r}.", fix=f"e.g. {flag('--metapaths ', 'metapaths=')}s,c,s-c")
    return out
