"""Sigmoid gating of two representations."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn

__all__ = ["NeuralGate", "TaskGate"]


class NeuralGate(nn.Module):
    r"""Element-wise sigmoid gate that mixes two representations of the same item.  MMSC uses it
    twice: content :math:`q_i` vs behaviour :math:`p_i` (semantic level), and the substitute vs
    complement representations (task level).

    .. math::
        g_i = \sigma(W_a a_i + W_b b_i + c), \qquad h_i = g_i \odot a_i + (1 - g_i) \odot b_i

    Args:
        in_feats: size of ``a`` and ``b`` (and of the output).

    Note:
        Where ``mask_b`` is False (``b`` is missing, e.g. an item with no behaviour neighbours),
        the output is ``a`` itself and the gate reads 1: an empty neighbourhood falls back to the
        content embedding on purpose.

    Example:
        >>> gate = NeuralGate(8)
        >>> a, b = torch.randn(3, 8), torch.randn(3, 8)
        >>> h, g = gate(a, b, mask_b=torch.tensor([True, True, False]), get_gate=True)
        >>> torch.equal(h[2], a[2]), bool((g[2] == 1).all())
        (True, True)
    """

    def __init__(self, in_feats: int):
        super().__init__()
        self.in_feats = in_feats
        self.proj_a = nn.Linear(in_feats, in_feats, bias=True)
        self.proj_b = nn.Linear(in_feats, in_feats, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.proj_a.weight)
        nn.init.zeros_(self.proj_a.bias)
        nn.init.xavier_uniform_(self.proj_b.weight)

    def forward(self, a: torch.Tensor, b: torch.Tensor, mask_b: Optional[torch.Tensor] = None,
                get_gate: bool = False):
        if a.shape != b.shape:
            raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} must have one shape")
        gate = torch.sigmoid(self.proj_a(a) + self.proj_b(b))
        if mask_b is not None:
            gate = torch.where(mask_b.view(-1, *([1] * (a.dim() - 1))), gate, torch.ones_like(gate))
        out = gate * a + (1 - gate) * b
        return (out, gate) if get_gate else out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_feats})"


class TaskGate(nn.ModuleDict):
    r"""MMSC's task-level gate over two relations :math:`r, \bar r`:
    :math:`z^r = \mathrm{Gate}^{task}_r(h^r, h^{\bar r})`, a :class:`NeuralGate` each (what one
    relation's representation takes from the other's).

    Example:
        >>> gate = TaskGate(8, ["substitute", "complement"])
        >>> h = {"substitute": torch.randn(3, 8), "complement": torch.randn(3, 8)}
        >>> sorted(gate(h)), tuple(gate(h)["complement"].shape)
        (['complement', 'substitute'], (3, 8))
    """

    def __init__(self, in_feats: int, relations: Sequence[str]):
        if len(relations) != 2:
            raise ValueError(f"the task gate mixes two relations, got {list(relations)}")
        super().__init__({r: NeuralGate(in_feats) for r in relations})
        self.relations = tuple(relations)

    def forward(self, h: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        a, b = self.relations
        return {a: self[a](h[a], h[b]), b: self[b](h[b], h[a])}
