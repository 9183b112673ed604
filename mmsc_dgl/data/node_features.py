"""Content features handed over as tensors (a DGL node-data entry, a PyG ``x``): the one place
their shapes are read."""
from __future__ import annotations

import os
from typing import Any, Sequence, Tuple

import torch

FEATURE_FILE = "features.pt"
"""Where features that came with the data are kept (a dataset made from a graph with features, a
run given features from Python), in the torch feature-file format ``{"item_ids", "tokens", "mask"}``
that ``--features FILE`` reads."""


def write_feature_file(path: os.PathLike | str, item_ids: Sequence[str], tokens: torch.Tensor,
                       mask: torch.Tensor) -> None:
    """Write features in the torch feature-file format, atomically."""
    from mmsc_dgl.io import atomic_path
    with atomic_path(path) as tmp:
        torch.save({"item_ids": list(item_ids), "tokens": tokens, "mask": mask}, tmp)


def as_token_features(feat: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """``feat`` as frozen content tokens ``(tokens [N, T, D] float32, mask [N, T] bool)``.

    Accepts a tensor ``[N, D]`` (one token per item), ``[N, T, D]`` (every token real), a pair
    ``(tokens, mask)``, or anything with ``tokens`` and ``mask`` attributes (a
    :class:`~mmsc_dgl.features.base.ContentFeatures`).  Numpy arrays are taken as tensors.

    Example:
        >>> tokens, mask = as_token_features(torch.ones(5, 3))
        >>> tuple(tokens.shape), bool(mask.all())
        ((5, 1, 3), True)
    """
    if hasattr(feat, "tokens") and hasattr(feat, "mask"):
        tokens, mask = feat.tokens, feat.mask
    elif isinstance(feat, (tuple, list)) and len(feat) == 2:
        tokens, mask = feat
    else:
        tokens, mask = feat, None
    try:
        tokens = torch.as_tensor(tokens)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"cannot read features from a {type(feat).__name__}") from None
    if not tokens.is_floating_point():
        raise ValueError(f"features must be floating point, got {tokens.dtype}")
    if tokens.dim() == 2:
        tokens = tokens.unsqueeze(1)
    if tokens.dim() != 3:
        raise ValueError(f"features must be [N, D] or [N, T, D], got {tuple(tokens.shape)}")
    if mask is None:
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
    mask = torch.as_tensor(mask).to(torch.bool)
    if mask.dim() == 1 and tokens.shape[1] == 1:
        mask = mask.unsqueeze(1)
    if tuple(mask.shape) != tuple(tokens.shape[:2]):
        raise ValueError(f"mask must be [N, T] = {tuple(tokens.shape[:2])}, got {tuple(mask.shape)}")
    return tokens.detach().to("cpu", torch.float32), mask.cpu()
