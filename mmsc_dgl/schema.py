"""The graph schema every floor shares: the item node type and the two relations, in canonical
order, and the package version.  The package root re-exports these names; modules import them
from here, so no import climbs to the root."""
from __future__ import annotations

__version__ = "0.1.0"

RELATIONS = ("substitute", "complement")
"""The two item-item relations, in canonical order (edge types of the heterograph)."""

NODE_TYPE = "item"
"""The node type of items in the heterograph."""

__all__ = ["NODE_TYPE", "RELATIONS", "__version__"]
