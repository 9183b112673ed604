"""How MMSC mixes an item's content :math:`q` and behaviour :math:`p` into :math:`h`, per relation:
the paper's semantic gate, or one of its two ablations.  Pick one by name from :data:`FUSIONS`."""
from __future__ import annotations

from typing import Dict, Sequence, Type

import torch
from torch import nn

from mmsc_dgl.nn.gate import NeuralGate

__all__ = ["GateFusion", "ConcatFusion", "BehaviourFusion", "FUSIONS"]


class GateFusion(nn.ModuleDict):
    r""":math:`h^r = \mathrm{Gate}^{sem}_r(q, p^r)`, a :class:`~mmsc_dgl.nn.NeuralGate` per relation
    (MMSC's semantic gate); an item without any meta-path neighbour keeps :math:`q`.

    Example:
        >>> fuse = GateFusion(8, ["substitute"])
        >>> q, p = torch.randn(2, 8), torch.randn(2, 8)
        >>> torch.equal(fuse("substitute", q, p, torch.tensor([True, False]))[1], q[1])
        True
    """

    def __init__(self, hidden: int, relations: Sequence[str]):
        super().__init__({r: NeuralGate(hidden) for r in relations})

    def forward(self, relation: str, q: torch.Tensor, p: torch.Tensor, any_path: torch.Tensor) -> torch.Tensor:
        return self[relation](q, p, mask_b=any_path)


class ConcatFusion(nn.ModuleDict):
    r""":math:`h^r = W_r [q; p^r]` (the "w/o semantic gate" ablation); :math:`p^r` is exactly zero
    for an item without a meta-path neighbour (:class:`~mmsc_dgl.nn.MetaPathAttention`'s contract)."""

    def __init__(self, hidden: int, relations: Sequence[str]):
        super().__init__({r: nn.Linear(2 * hidden, hidden) for r in relations})

    def forward(self, relation: str, q: torch.Tensor, p: torch.Tensor, any_path: torch.Tensor) -> torch.Tensor:
        return self[relation](torch.cat([q, p], dim=-1))


class BehaviourFusion(nn.Module):
    r""":math:`h^r = p^r`, behaviour only (HAN); an item without a meta-path neighbour falls back to
    its content.  Nothing to learn."""

    def __init__(self, hidden: int, relations: Sequence[str]):
        super().__init__()

    def forward(self, relation: str, q: torch.Tensor, p: torch.Tensor, any_path: torch.Tensor) -> torch.Tensor:
        return torch.where(any_path.unsqueeze(-1), p, q)


FUSIONS: Dict[str, Type[nn.Module]] = {"gate": GateFusion, "concat": ConcatFusion, "none": BehaviourFusion}
"""``semantic_fusion`` name -> fusion class, each built as ``cls(hidden, relations)``."""
