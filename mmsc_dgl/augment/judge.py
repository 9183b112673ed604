"""The edge-judge interface: ``(item_a, item_b, relation) -> probability the relation is true``."""
from __future__ import annotations

import abc

import numpy as np


class EdgeJudge(abc.ABC):
    """Scores pairs of node ids under a relation with a probability in [0, 1]."""

    name: str = "judge"

    @abc.abstractmethod
    def score(self, src: np.ndarray, dst: np.ndarray, relation: str) -> np.ndarray:
        ...

    def describe(self) -> dict:
        """What identifies the scores (they are cached under this)."""
        return {"judge": self.name}
