"""Path-level (semantic) attention across meta-paths."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["SemanticAttention"]


class SemanticAttention(nn.Module):
    r"""Semantic-level attention of HAN (Wang et al., WWW 2019): weighs the meta-path-specific
    embeddings of every item and sums them, as in MMSC's behaviour branch.

    .. math::
        w_\Phi = \frac{1}{|\mathcal{V}_\Phi|} \sum_{i \in \mathcal{V}_\Phi}
                 q^\top \tanh(W z_i^\Phi + b), \qquad
        \beta_\Phi = \operatorname{softmax}_\Phi(w_\Phi), \qquad
        p_i = \sum_\Phi \frac{\beta_\Phi m_i^\Phi}{\sum_{\Phi'} \beta_{\Phi'} m_i^{\Phi'}} z_i^\Phi

    where :math:`m_i^\Phi` is 1 when item :math:`i` has neighbours under :math:`\Phi` and
    :math:`\mathcal{V}_\Phi` is the set of such items.

    With ``per_item=True`` the weights are item-specific,
    :math:`\beta_{i\Phi} = \operatorname{softmax}_\Phi(q^\top \tanh(W z_i^\Phi + b))`: an item's
    output then does not depend on which other items share its mini-batch.

    Args:
        in_feats: size of each meta-path embedding.
        hidden_feats: size of the scoring MLP. Default: 128.
        per_item: item-specific weights instead of HAN's weights averaged over the items given.
            Default: False.

    Note:
        A meta-path with no neighbours for an item does not vote for it: the weights are
        renormalised over the item's non-empty meta-paths.  An item empty under every meta-path
        gets zero, and its row of the returned weights is all zero.

    Example:
        >>> layer = SemanticAttention(16)
        >>> z = torch.randn(5, 3, 16)
        >>> mask = torch.tensor([[1, 1, 0]] * 5, dtype=torch.bool)
        >>> out, beta = layer(z, mask, get_attention=True)
        >>> tuple(out.shape), beta[:, 2].abs().sum().item()
        ((5, 16), 0.0)
    """

    def __init__(self, in_feats: int, hidden_feats: int = 128, per_item: bool = False):
        super().__init__()
        self.in_feats = in_feats
        self.hidden_feats = hidden_feats
        self.per_item = per_item
        self.project = nn.Linear(in_feats, hidden_feats)
        self.query = nn.Linear(hidden_feats, 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.project.weight)
        nn.init.zeros_(self.project.bias)
        nn.init.xavier_uniform_(self.query.weight)

    def forward(self, z: torch.Tensor, mask: Optional[torch.Tensor] = None, get_attention: bool = False):
        """
        Args:
            z: [num_items, num_metapaths, in_feats].
            mask: [num_items, num_metapaths] bool, True where the item has neighbours under the
                meta-path.  Default: all True.
            get_attention: also return the per-item weights [num_items, num_metapaths].

        Returns:
            [num_items, in_feats], and the weights if asked.
        """
        if z.dim() != 3:
            raise ValueError(f"z must be [items, metapaths, feats], got {tuple(z.shape)}")
        if mask is None:
            mask = torch.ones(z.shape[:2], dtype=torch.bool, device=z.device)
        score = self.query(torch.tanh(self.project(z))).squeeze(-1)            # [N, P]
        weight = mask.to(score.dtype)
        if self.per_item:
            logits = score.masked_fill(~mask, float("-inf"))
            beta = torch.softmax(logits.masked_fill(~mask.any(1, keepdim=True), 0.0), dim=1) * weight
        else:
            count = weight.sum(0)
            path_score = (score * weight).sum(0) / count.clamp(min=1)  # mean over items with the path
            path_score = path_score.masked_fill(count == 0, float("-inf"))
            if torch.isinf(path_score).all():
                beta = torch.zeros_like(weight)
            else:
                beta = torch.softmax(path_score, dim=0).unsqueeze(0) * weight  # [N, P]
                beta = beta / beta.sum(1, keepdim=True).clamp(min=torch.finfo(beta.dtype).tiny)
        out = (beta.unsqueeze(-1) * z).sum(1)
        return (out, beta) if get_attention else out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_feats}, hidden={self.hidden_feats}"
                + (", per_item=True)" if self.per_item else ")"))
