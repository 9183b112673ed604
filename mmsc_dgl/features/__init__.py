"""Content features for items: a token matrix [N, T, D] and a mask [N, T] per item.

Backends (``mmsc-dgl features --backend``): ``text`` (the offline default, bundled MiniLM),
``clip`` (open_clip, extra ``[clip]``), ``blip2`` (LAVIS, its own venv).  ``hashed`` TF-IDF text
features need no model at all.  Backends are imported only when used, and so is everything that
reads item tables (pyarrow): :class:`ContentFeatures` alone needs only torch, which is what the
GPU trainer (:mod:`mmsc_dgl.bench.gpu_train`) builds on a host without pyarrow.
"""
from typing import TYPE_CHECKING, Any

from mmsc_dgl.features.base import ContentFeatures

if TYPE_CHECKING:
    from mmsc_dgl.features.cache import BACKENDS, extract_features, load_feature_cache, make_extractor
    from mmsc_dgl.features.hashed import hashed_text_features

__all__ = ["BACKENDS", "ContentFeatures", "extract_features", "hashed_text_features", "load_feature_cache",
           "make_extractor"]

_LAZY = {"BACKENDS": "cache", "extract_features": "cache", "load_feature_cache": "cache",
         "make_extractor": "cache", "hashed_text_features": "hashed"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
