"""The contract every model answers, so baselines share the training and evaluation harness."""
from __future__ import annotations

import abc
from typing import Dict

import torch


class Recommender(abc.ABC):
    """``loss(batch)`` for training, ``score`` for pairs, ``embed`` for ranking and retrieval."""

    @abc.abstractmethod
    def loss(self, batch: dict) -> Dict[str, torch.Tensor]:
        """Loss parts for a training batch; ``"total"`` is what the optimiser minimises."""

    @abc.abstractmethod
    def score(self, src: torch.Tensor, dst: torch.Tensor, relation: str) -> torch.Tensor:
        """Scores of item pairs under ``relation`` (higher: more likely related)."""

    @abc.abstractmethod
    def embed(self, relation: str) -> torch.Tensor:
        """Every item's representation for ``relation`` [num_items, dim]; ``score`` of two items
        is the dot product of their rows."""
