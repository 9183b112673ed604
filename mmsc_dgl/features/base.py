"""The extractor interface: items in, frozen content tokens [N, T, D] and a mask [N, T] out."""
from __future__ import annotations

import abc
import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Tuple, Union

import numpy as np
import torch

if TYPE_CHECKING:
    import pyarrow as pa  # annotations only: the GPU hosts' trainer builds ContentFeatures without pyarrow

    from mmsc_dgl.features.categorical import CategoricalFeatures


@dataclass
class ContentFeatures:
    """Frozen content tokens per item: ``tokens`` [N, T, D] float32, ``mask`` [N, T] bool.

    Example:
        >>> f = ContentFeatures(torch.ones(3, 2, 4), torch.tensor([[True, False]] * 3), source="mine")
        >>> f.num_items, f.dim, tuple(f.pooled().shape)
        (3, 4, (3, 4))
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    source: str

    def __post_init__(self) -> None:
        if self.tokens.dim() != 3 or self.mask.shape != self.tokens.shape[:2]:
            raise ValueError(f"tokens [N, T, D] and mask [N, T] expected, got {tuple(self.tokens.shape)} "
                             f"and {tuple(self.mask.shape)}")
        if not torch.isfinite(self.tokens).all():
            bad = torch.nonzero(~torch.isfinite(self.tokens).all(-1).all(-1)).flatten()[:5].tolist()
            raise ValueError(f"content features hold NaN or inf (items {bad}); re-extract them")

    @property
    def num_items(self) -> int:
        return self.tokens.shape[0]

    @property
    def dim(self) -> int:
        return self.tokens.shape[2]

    def pooled(self) -> torch.Tensor:
        """Mean of each item's real tokens, L2-normalised: [N, D]."""
        m = self.mask.unsqueeze(-1).to(self.tokens.dtype)
        mean = (self.tokens * m).sum(1) / m.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(mean, dim=1)


ItemFeatures = Union[ContentFeatures, "CategoricalFeatures"]
"""What a model's content can be: frozen tokens (:class:`ContentFeatures`), or category and brand
tokens whose embeddings are learnt (:class:`~mmsc_dgl.features.categorical.CategoricalFeatures`)."""


def item_sources(items: pa.Table) -> List[str]:
    """Per item, a digest of what its features are made from (the text the extractors read and
    the image reference): a feature cache records these, so features made for other content are
    never used silently."""
    from mmsc_dgl.data.catalog import item_texts  # pyarrow: imported where used, not by the models
    texts = item_texts(items)
    images = items.column("image").to_pylist() if "image" in items.column_names else [None] * items.num_rows
    return [hashlib.blake2b(f"{t}\x1f{i or ''}".encode(), digest_size=8).hexdigest() for t, i in zip(texts, images)]


def file_digest(path: os.PathLike | str, chunk: int = 1 << 20) -> str:
    """sha256 of a weights file (recorded in the cache so another checkpoint is never mixed in)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class FeatureExtractor(abc.ABC):
    """One backend.  ``extract`` turns a batch of catalog rows into ``(tokens, mask)`` with
    ``tokens`` float32 [B, tokens, dim] and ``mask`` bool [B, tokens]; a single vector per item
    is ``tokens == 1``."""

    backend: str = "base"
    model: str = ""
    checkpoint_hash: str = ""
    tokens: int = 1
    dim: int = 0

    @abc.abstractmethod
    def extract(self, items: pa.Table) -> Tuple[np.ndarray, np.ndarray]:
        ...

    def describe(self) -> dict:
        """What the cache records about the features."""
        return {"backend": self.backend, "model": self.model, "checkpoint_hash": self.checkpoint_hash,
                "tokens": int(self.tokens), "dim": int(self.dim)}

    def report(self) -> dict:
        """Counts worth telling the user (images that could not be read, say)."""
        return {}

