"""Hashed bag-of-words text features: an offline content signal that needs no model.

Each item's title, category path and description are lower-cased and split into words; word
unigrams and bigrams are hashed (signed feature hashing, Weinberger et al. 2009) into ``dim``
buckets, weighted by 1 + log(tf) x idf and L2-normalised.  It is the stand-in content branch
until a foundation model's features are extracted, and the features of the content-only cosine
baseline.
"""
from __future__ import annotations

import hashlib
import re
from typing import List

import numpy as np
import pyarrow as pa
import torch

from mmsc_dgl.features.base import ContentFeatures

_WORD = re.compile(r"[a-z0-9]+")


def _bucket(token: str, dim: int) -> tuple:
    digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, 1.0 if (value >> 63) & 1 else -1.0


def hashed_text_features(items: pa.Table, dim: int = 256, bigrams: bool = True) -> ContentFeatures:
    """Hashed unigram+bigram TF-IDF of title, category and description (one token per item)."""
    titles = items.column("title").to_pylist()
    categories = items.column("category").to_pylist() if "category" in items.column_names else [None] * len(titles)
    descriptions = items.column("description").to_pylist()

    def grams_of(i: int) -> List[str]:
        text = " ".join([titles[i] or "", " ".join(categories[i] or []), descriptions[i] or ""]).lower()
        words = _WORD.findall(text)
        return words + ([f"{a} {b}" for a, b in zip(words, words[1:])] if bigrams else [])

    # Two passes over the texts instead of holding every item's grams: memory stays O(vocabulary)
    # at a million items.
    n = len(titles)
    df: dict = {}
    for i in range(n):
        for g in set(grams_of(i)):
            df[g] = df.get(g, 0) + 1
    cache: dict = {}
    matrix = np.zeros((n, dim), dtype=np.float32)
    for i in range(n):
        counts: dict = {}
        for g in grams_of(i):
            counts[g] = counts.get(g, 0) + 1
        row = matrix[i]
        for g, tf in counts.items():
            if g not in cache:
                cache[g] = _bucket(g, dim)
            bucket, sign = cache[g]
            row[bucket] += sign * (1 + np.log(tf)) * np.log((1 + n) / (1 + df[g]))
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    has = norms[:, 0] > 0
    matrix = matrix / np.maximum(norms, 1e-12)
    tokens = torch.from_numpy(matrix).unsqueeze(1)
    return ContentFeatures(tokens, torch.from_numpy(has).unsqueeze(1), source=f"hashed-text-{dim}")


