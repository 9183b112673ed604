"""Mapping raw relation keys (Amazon fields, edge-list tokens) to relation names."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, Mapping, Optional

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.errors import DataError, flag

IGNORE = "ignore"
"""Map a key to this name to drop its edges on purpose (they are still counted)."""

AMAZON_DEFAULT = {
    # 2014 schema, under "related"
    "also_viewed": "substitute",
    "also_bought": "complement",
    "bought_together": "complement",
    # 2018 schema
    "also_view": "substitute",
    "also_buy": "complement",
}

NAMES_DEFAULT = {
    "substitute": "substitute",
    "complement": "complement",
    "s": "substitute",
    "c": "complement",
}


@dataclass(frozen=True)
class RelationMap:
    """Raw key -> relation name (one of :data:`mmsc_dgl.RELATIONS`, or ``"ignore"``).

    Built from a spec such as ``"1=complement,2=substitute"`` with :meth:`parse`.

    Example:
        >>> RelationMap.parse("1=complement,2=substitute").mapping
        {'1': 'complement', '2': 'substitute'}

    """

    mapping: Mapping[str, str] = field(default_factory=dict)
    unknown_fix: Optional[str] = None
    """What to tell the user about a key that is not mapped (default: add it to --relation-map)."""

    def __post_init__(self) -> None:
        for key, name in self.mapping.items():
            if name not in RELATIONS and name != IGNORE:
                raise DataError(
                    f"relation map sends {key!r} to {name!r}, which is not a relation.",
                    fix=f"map each key to one of {', '.join(RELATIONS)} or {IGNORE!r}.")

    @classmethod
    def parse(cls, spec: Optional[str], base: Optional[Mapping[str, str]] = None) -> "RelationMap":
        """Parse ``key=name[,key=name...]`` on top of ``base`` (entries in ``spec`` win)."""
        mapping: Dict[str, str] = dict(base or {})
        given: Dict[str, str] = {}
        if spec:
            for part in spec.split(","):
                part = part.strip()
                if not part:
                    continue
                key, sep, name = part.partition("=")
                if not sep or not key.strip() or not name.strip():
                    raise DataError(f"cannot read {part!r} in relation map {spec!r}.",
                                    fix=f"write it as KEY=RELATION, e.g. {flag('--relation-map ', 'relation_map=')}1=complement,2=substitute")
                key, name = key.strip(), name.strip()
                if key in given:
                    raise DataError(f"relation map {spec!r} gives {key!r} twice ({key}={given[key]} and "
                                    f"{key}={name}).", fix=f"keep one {key}=RELATION in {flag('--relation-map', 'relation_map')}.")
                given[key] = mapping[key] = name
        return cls(mapping)

    @classmethod
    def amazon(cls, spec: Optional[str] = None) -> "RelationMap":
        return cls.parse(spec, AMAZON_DEFAULT)

    @classmethod
    def edgelist(cls, spec: Optional[str] = None) -> "RelationMap":
        # A user map replaces the name defaults: with "1=complement" given, a stray "s" is an error.
        return cls.parse(spec) if spec else cls(dict(NAMES_DEFAULT))

    def lookup(self, key: str, path: Optional[os.PathLike | str] = None,
               line: Optional[int] = None) -> str:
        try:
            return self.mapping[key]
        except KeyError:
            known = ", ".join(f"{k}={v}" for k, v in sorted(self.mapping.items())) or "nothing"
            raise DataError(
                f"relation {key!r} is not in the relation map (it maps {known}).",
                path=path, line=line,
                fix=self.unknown_fix or f"add it, e.g. {flag('--relation-map ', 'relation_map=')}{key}=complement (or {key}={IGNORE} to drop it).",
            ) from None

    def keys_for(self, name: str) -> Iterable[str]:
        return [k for k, v in self.mapping.items() if v == name]

    def to_dict(self) -> Dict[str, str]:
        return dict(sorted(self.mapping.items()))
