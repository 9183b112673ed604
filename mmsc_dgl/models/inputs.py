"""What every learned model starts from: content tokens pooled by attention, or id embeddings.

Baselines use the same input as MMSC, so a comparison measures what is built on top of it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, cast

import torch
from torch import nn

from mmsc_dgl.nn import MultiModalAttention

if TYPE_CHECKING:  # torch alone at run time: the GPU hosts have no pyarrow
    from mmsc_dgl.features.base import ContentFeatures, ItemFeatures
    from mmsc_dgl.features.categorical import CategoricalFeatures


class ItemInput(nn.Module):
    """:math:`q_i`: ``MultiModalAttention`` over item ``i``'s content tokens (frozen features, or
    learnable embeddings of its category and brand tokens), or a learnable id embedding when
    ``features`` is None, or both summed (``id_embeddings=True``).

    Args:
        num_items: number of items.
        out_feats: size of :math:`q_i`.
        features: frozen content tokens, or None.
        id_embeddings: with ``features``, add a learnable id embedding (as MMSC's default).
    """

    def __init__(self, num_items: int, out_feats: int, features: Optional["ItemFeatures"] = None,
                 id_embeddings: bool = False):
        super().__init__()
        self.num_items = num_items
        self.out_feats = out_feats
        if features is not None:
            if features.num_items != num_items:
                raise ValueError(f"features cover {features.num_items} items, the dataset {num_items}")
            if getattr(features, "learnable", False):
                # category / brand tokens: a learnable embedding per token, pooled as frozen tokens are
                categorical = cast("CategoricalFeatures", features)  # the kind that says learnable
                self.register_buffer("token_ids", categorical.ids, persistent=False)
                self.register_buffer("tokens", None, persistent=False)
                self.token_embedding = nn.Embedding(len(categorical.vocabulary) + 1, out_feats, padding_idx=0)
                in_feats = out_feats
            else:
                self.register_buffer("token_ids", None, persistent=False)
                self.register_buffer("tokens", cast("ContentFeatures", features).tokens.float(), persistent=False)
                self.register_module("token_embedding", None)
                in_feats = features.dim
            self.register_buffer("token_mask", features.mask, persistent=False)
            self.content = MultiModalAttention(in_feats, out_feats, hidden_feats=out_feats)
            if id_embeddings:
                self.item_embedding = nn.Embedding(num_items, out_feats)
            else:
                self.register_module("item_embedding", None)
        else:
            self.register_buffer("tokens", None, persistent=False)
            self.register_buffer("token_ids", None, persistent=False)
            self.register_buffer("token_mask", None, persistent=False)
            self.register_module("token_embedding", None)
            self.register_module("content", None)
            self.item_embedding = nn.Embedding(num_items, out_feats)
        # What the model was built on, saved with its weights, so a state trained on content never
        # loads into a model without it (or with other content): [items, tokens, width, kind].
        if features is None:
            signature = [num_items, 0, 0, 0]
        elif getattr(features, "learnable", False):
            categorical = cast("CategoricalFeatures", features)
            signature = [num_items, categorical.ids.shape[1], len(categorical.vocabulary), 2]
        else:
            signature = [num_items, cast("ContentFeatures", features).tokens.shape[1], features.dim, 1]
        self.register_buffer("content_signature", torch.tensor(signature, dtype=torch.int64))
        self._register_load_state_dict_pre_hook(self._check_signature)
        self.reset_parameters()

    def _check_signature(self, state_dict, prefix, *args) -> None:
        key = prefix + "content_signature"
        if key not in state_dict:  # saved before the signature existed: nothing to compare
            state_dict[key] = self.content_signature.clone()
            return
        theirs, ours = state_dict[key].tolist(), self.content_signature.tolist()
        if theirs != ours:
            raise RuntimeError(f"the weights were trained on {_describe(theirs)}, this model is built on "
                               f"{_describe(ours)}: build it with the same content features")

    def reset_parameters(self) -> None:
        if self.item_embedding is not None:
            nn.init.normal_(self.item_embedding.weight, std=0.1)
        if self.content is not None:
            self.content.reset_parameters()
        if self.token_embedding is not None:
            nn.init.normal_(self.token_embedding.weight, std=0.1)
            with torch.no_grad():
                self.token_embedding.weight[0].zero_()

    def _tokens(self, nodes: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.token_embedding is not None:
            return self.token_embedding(self.token_ids if nodes is None else self.token_ids[nodes])
        return self.tokens if nodes is None else self.tokens[nodes]

    def forward(self) -> torch.Tensor:
        """:math:`q` of every item [num_items, out_feats]."""
        if self.content is None:
            return self.item_embedding.weight
        q = self.content(self._tokens(), self.token_mask)
        return q + self.item_embedding.weight if self.item_embedding is not None else q

    def of(self, nodes: torch.Tensor) -> torch.Tensor:
        """:math:`q` of ``nodes`` only [len(nodes), out_feats]: a step touches a small part of a
        large catalog."""
        if self.content is None:
            return self.item_embedding(nodes)
        q = self.content(self._tokens(nodes), self.token_mask[nodes])
        return q + self.item_embedding(nodes) if self.item_embedding is not None else q

    def kind(self) -> str:
        """``id-embeddings``, ``features(dim=D)`` or ``features(dim=D)+id-embeddings``."""
        if self.content is None:
            return "id-embeddings"
        if self.token_embedding is not None:
            kind = f"categories(vocabulary={self.token_embedding.num_embeddings - 1})"
        else:
            kind = f"features(dim={self.tokens.shape[-1]})"
        return kind + ("+id-embeddings" if self.item_embedding is not None else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_items:,}, {self.out_feats}, {self.kind()})"


def _describe(signature) -> str:
    items, tokens, width, kind = signature
    if kind == 0:
        return f"no content features (id embeddings of {items} items)"
    if kind == 1:
        return f"frozen features [{items}, {tokens}, {width}]"
    return f"category tokens of {items} items ({width} in the vocabulary)"


def adjacency(src, dst, num_items: int, self_loops: bool = False):
    """Row ``i`` of the result lists the items with an edge to ``i`` (training edges, deduplicated;
    ``self_loops`` adds ``i`` itself, as GAT's neighbourhood does)."""
    from mmsc_dgl.ops import CSR
    src = torch.as_tensor(src, dtype=torch.int64)
    dst = torch.as_tensor(dst, dtype=torch.int64)
    if self_loops:
        loops = torch.arange(num_items)
        keep = src != dst
        src, dst = torch.cat([src[keep], loops]), torch.cat([dst[keep], loops])
    code = torch.unique(dst * num_items + src)
    return CSR.from_edges(code // num_items, code % num_items, num_items)


def score_head(x: torch.Tensor, score: str) -> torch.Tensor:
    """The representation whose dot products are the scores: L2-normalised for ``"cosine"``, as
    it is for ``"dot"`` (where the norm can carry popularity)."""
    return torch.nn.functional.normalize(x, dim=-1) if score == "cosine" else x
