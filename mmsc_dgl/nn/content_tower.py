"""A content tower: an item's frozen content in, a row of a trained model's embedding space out.

It is what places an item that has no edges (cold start, a new product): trained after the
behaviour model, against that model's fixed rows (:mod:`mmsc_dgl.train.cold_start`), in the
spirit of ALDI (SIGIR 2023) and CLCRec (MM 2021), which align a content encoder with the warm
embeddings instead of borrowing its neighbours' (MMSC's Eq. 12).
"""
from __future__ import annotations

import torch
from torch import nn


class ContentTower(nn.Module):
    """Two layers, ``Linear -> GELU -> dropout -> Linear``, from pooled content ``[N, in_dim]``
    to ``[N, out_dim]``.

    Args:
        in_dim: the content's width (the pooled features').
        out_dim: the width of the embedding rows it predicts.
        hidden: the hidden width.
        dropout: dropout on the hidden layer while training.

    Example:
        >>> tower = ContentTower(8, 4, hidden=16)
        >>> tower(torch.randn(3, 8)).shape
        torch.Size([3, 4])
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.in_dim, self.out_dim, self.hidden = in_dim, out_dim, hidden
        self.fc_in = nn.Linear(in_dim, hidden)
        self.fc_out = nn.Linear(hidden, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier weights, zero biases."""
        nn.init.xavier_uniform_(self.fc_in.weight)
        nn.init.xavier_uniform_(self.fc_out.weight)
        nn.init.zeros_(self.fc_in.bias)
        nn.init.zeros_(self.fc_out.bias)

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        """``[N, in_dim]`` -> ``[N, out_dim]``."""
        if content.shape[-1] != self.in_dim:
            raise ValueError(f"content of width {self.in_dim} expected, got {tuple(content.shape)}")
        return self.fc_out(self.dropout(torch.nn.functional.gelu(self.fc_in(content))))

    def extra_repr(self) -> str:
        return f"{self.in_dim} -> {self.hidden} -> {self.out_dim}"
