"""Content features for items: a token matrix [N, T, D] and a mask [N, T] per item.

Backends (``mmsc-dgl features --backend``): ``text`` (the offline default, bundled MiniLM),
``clip`` (open_clip, extra ``[clip]``), ``blip2`` (LAVIS, its own venv).  ``hashed`` TF-IDF text
features need no model at all.  Backends are imported only when used.
"""
from mmsc_dgl.features.cache import BACKENDS, extract_features, load_feature_cache, make_extractor
from mmsc_dgl.features.base import ContentFeatures
from mmsc_dgl.features.hashed import hashed_text_features

__all__ = ["BACKENDS", "ContentFeatures", "extract_features", "hashed_text_features", "load_feature_cache",
           "make_extractor"]
