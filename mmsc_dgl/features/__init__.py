"""Content features for items: a token matrix [N, T, D] and a mask [N, T] per item."""
from mmsc_dgl.features.hashed import ContentFeatures, hashed_text_features

__all__ = ["ContentFeatures", "hashed_text_features"]
