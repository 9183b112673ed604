"""Sigmoid gating of two representations."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["NeuralGate"]


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
