"""Hashed bag-of-words text features: an offline content signal that needs no model.

Each item's text (title, category path, description: :func:`~mmsc_dgl.data.catalog.item_texts`)
is lower-cased and split into words; word unigrams and bigrams are hashed into ``dim`` buckets
(scikit-learn's ``HashingVectorizer``, Weinberger et al. 2009), weighted by TF-IDF
(``TfidfTransformer`` with its defaults: term count times the smoothed idf of the bucket) and
L2-normalised.  Against the hand-written version it replaced (sublinear tf, idf without the +1,
Python loops): content-cosine test NDCG@10 0.0495 / 0.0391 on Magazine (was 0.0432 / 0.0353),
0.1467 / 0.0005 on the synthetic 10k catalog (was 0.1488 / 0.0005); 3.0 s at 100k items
(was 11.8 s).
It is the stand-in content branch until a foundation model's features are extracted, and the
features of the content-only cosine baseline.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from mmsc_dgl.data.catalog import item_texts
from mmsc_dgl.features.base import ContentFeatures

TOKEN_PATTERN = r"[a-z0-9]+"


def hashed_text_features(items: pa.Table, dim: int = 256, bigrams: bool = True) -> ContentFeatures:
    """Hashed unigram+bigram TF-IDF of each item's text (one token per item; items without text
    have a zero vector and a masked token).

    The vectoriser is stateless and sparse, so memory stays O(nonzeros) before the dense
    ``[items, dim]`` result.
    """
    return hashed_text_features_of_new(items, items, dim, bigrams)


def hashed_text_features_of_new(catalog: pa.Table, new: pa.Table, dim: int = 256,
                                bigrams: bool = True) -> ContentFeatures:
    """:func:`hashed_text_features` of the items of ``new``, weighted by the inverse document
    frequencies of ``catalog`` (the items a run was trained on): new items land in the space
    of the catalog's features."""
    from sklearn.feature_extraction.text import TfidfTransformer
    fitted = TfidfTransformer().fit(_counts(catalog, dim, bigrams))
    counts = _counts(new, dim, bigrams)
    matrix = fitted.transform(counts).astype(np.float32).toarray()
    has = np.asarray(counts.getnnz(axis=1) > 0)
    return ContentFeatures(torch.from_numpy(matrix).unsqueeze(1), torch.from_numpy(has).unsqueeze(1),
                           source=f"hashed-text-{dim}")


def _counts(items: pa.Table, dim: int, bigrams: bool):
    from sklearn.feature_extraction.text import HashingVectorizer
    texts = item_texts(items, max_chars=None, separator=" ")
    return HashingVectorizer(n_features=dim, ngram_range=(1, 2 if bigrams else 1), token_pattern=TOKEN_PATTERN,
                             lowercase=True, alternate_sign=False, norm=None, dtype=np.float32).transform(texts)
