"""Category and brand as content tokens, for catalogs without text or images (Amazon 2014
Beauty as a knowledge graph has only these).

Unlike the frozen features of the other backends, each category and brand gets a *learnable*
embedding (:class:`~mmsc_dgl.models.inputs.ItemInput`); an item's tokens are then pooled by the
same multi-modal attention as frozen tokens.  A token seen on fewer than ``min_count`` items
says nothing beyond the item's own id embedding and is left out.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import List

import torch


@dataclass
class CategoricalFeatures:
    """Per item, the vocabulary ids of its category and brand tokens: ``ids`` [N, T] int64
    (0 is padding), ``mask`` [N, T] bool; ``vocabulary[k - 1]`` names id ``k``."""

    ids: torch.Tensor
    mask: torch.Tensor
    vocabulary: List[str]
    source: str = "categories"
    learnable: bool = True

    @property
    def num_items(self) -> int:
        return self.ids.shape[0]

    @property
    def dim(self) -> int:
        """Vocabulary size (the width of :meth:`pooled`)."""
        return len(self.vocabulary)

    @property
    def has_content(self) -> torch.Tensor:
        """[N] bool: items with at least one token."""
        return self.mask.any(1)

    def pooled(self) -> torch.Tensor:
        """Multi-hot rows over the vocabulary, L2-normalised [N, V] (cosine = shared tokens):
        the content space of cold start and of the content-cosine baseline."""
        out = torch.zeros(self.num_items, len(self.vocabulary) + 1)
        out.scatter_(1, self.ids, self.mask.float())
        return torch.nn.functional.normalize(out[:, 1:], dim=1)


def categorical_features(items, min_count: int = 2) -> CategoricalFeatures:
    """Tokens ``category:NAME`` (every level of the item's category path) and ``brand:NAME``
    from a catalog table (columns ``category``, a list of names, and ``brand``; either may be
    missing).  Raises ``ValueError`` when no item has a token."""
    n = items.num_rows
    per_item = item_tokens(items)
    counts = Counter(t for tokens in per_item for t in tokens)
    vocabulary = sorted(t for t, c in counts.items() if c >= min_count)
    if not vocabulary:
        raise ValueError(f"no category or brand is shared by {min_count} or more items")
    index = {t: k + 1 for k, t in enumerate(vocabulary)}
    kept = [[index[t] for t in tokens if t in index] for tokens in per_item]
    width = max(1, max(len(k) for k in kept))
    ids = torch.zeros(n, width, dtype=torch.int64)
    for row, tokens in enumerate(kept):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
    return CategoricalFeatures(ids, ids > 0, vocabulary)


def item_tokens(items) -> List[List[str]]:
    """Each item's token names, ``category:NAME`` per level of its category path and
    ``brand:NAME`` (columns ``category``, a list of names, and ``brand``; either may be
    missing): what :func:`categorical_features` counts, and what a new item of a run trained on
    them is described by (:meth:`ItemModel.add_items <mmsc_dgl.runs.item_model.ItemModel.add_items>`)."""
    n = items.num_rows
    cats = items.column("category").to_pylist() if "category" in items.column_names else [None] * n
    brands = items.column("brand").to_pylist() if "brand" in items.column_names else [None] * n
    per_item = []
    for cat, brand in zip(cats, brands):
        tokens = [f"category:{c}" for c in dict.fromkeys(cat or []) if c]
        if brand:
            tokens.append(f"brand:{brand}")
        per_item.append(tokens)
    return per_item
