"""Learnable attention pooling over frozen content tokens."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["MultiModalAttention"]


class MultiModalAttention(nn.Module):
    r"""Pools an item's frozen content tokens (BLIP-2's 32 query tokens, CLIP's image and text
    vectors, or a single sentence vector) into its content representation :math:`q_i`, as in
    MMSC's content branch (arXiv 2507.22268).

    .. math::
        e_{it} = c^\top \tanh(W_a x_{it} + b_a), \qquad
        \gamma_{it} = \operatorname{softmax}_{t:\,m_{it}=1} e_{it}, \qquad
        q_i = W_o \sum_t \gamma_{it} x_{it} + b_o

    Args:
        in_feats: token size.
        out_feats: output size.
        hidden_feats: size of the scoring MLP. Default: 128.
        dropout: dropout on the pooled vector. Default: 0.

    Note:
        A single token (T = 1) gets weight 1.  An item whose tokens are all masked out gets
        exactly zero and is reported through ``get_attention`` (its weights are all zero).

    Example:
        >>> layer = MultiModalAttention(32, 16)
        >>> tokens, mask = torch.randn(4, 32, 32), torch.ones(4, 32, dtype=torch.bool)
        >>> q, gamma = layer(tokens, mask, get_attention=True)
        >>> tuple(q.shape), round(gamma.sum(1)[0].item(), 5)
        ((4, 16), 1.0)
    """

    def __init__(self, in_feats: int, out_feats: int, hidden_feats: int = 128, dropout: float = 0.0):
        super().__init__()
        self.in_feats = in_feats
        self.out_feats = out_feats
        self.hidden_feats = hidden_feats
        self.score = nn.Linear(in_feats, hidden_feats)
        self.context = nn.Linear(hidden_feats, 1, bias=False)
        self.out = nn.Linear(in_feats, out_feats)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.score.weight)
        nn.init.zeros_(self.score.bias)
        nn.init.xavier_uniform_(self.context.weight)
        nn.init.xavier_uniform_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, tokens: torch.Tensor, mask: Optional[torch.Tensor] = None, get_attention: bool = False):
        """
        Args:
            tokens: [num_items, T, in_feats] (or [num_items, in_feats] for T = 1).
            mask: [num_items, T] bool, True for real tokens.  Default: all True.
            get_attention: also return the token weights [num_items, T].
        """
        if tokens.dim() == 2:
            tokens = tokens.unsqueeze(1)
        if mask is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        logits = self.context(torch.tanh(self.score(tokens))).squeeze(-1)     # [N, T]
        logits = logits.masked_fill(~mask, float("-inf"))
        any_token = mask.any(1, keepdim=True)
        gamma = torch.softmax(logits.masked_fill(~any_token, 0.0), dim=1) * mask
        pooled = (gamma.unsqueeze(-1) * tokens).sum(1)
        q = self.out(self.dropout(pooled))
        q = torch.where(any_token, q, torch.zeros_like(q))
        return (q, gamma) if get_attention else q

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_feats}, {self.out_feats}, hidden={self.hidden_feats})"
