"""Content features for a run, from what the user names: ``auto``, ``hashed``, ``none``, a
feature cache or a torch file.  One place, used by training and by the E_LLM judge."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch

from mmsc_dgl.errors import DataError, flag
from mmsc_dgl.features.base import ContentFeatures, ItemFeatures
from mmsc_dgl.features.hashed import hashed_text_features

logger = logging.getLogger(__name__)


def load_features(spec: Any, dataset, dim: int, base: Optional[Path] = None) -> Optional[ItemFeatures]:
    """Content features for ``dataset`` from ``spec`` (:func:`_load`), refused when no item has
    any (an all-False mask would train on nothing while looking multi-modal); the items without
    content are counted in a warning."""
    features = _load(spec, dataset, dim, base)
    if features is not None and features.num_items:
        has = features.mask.any(1)
        where = getattr(dataset, "root", None) if features.source in ("memory", "graph") else features.source
        if not bool(has.any()):
            raise DataError(f"no item has content in these features: the mask is False for all "
                            f"{features.num_items:,} items.", path=where,
                            fix="re-extract the features, or train with " + flag('--features none', "features='none'") + " (id embeddings).")
        missing = int((~has).sum())
        if missing:
            logger.warning("%s of %s items have no content in the features (%s): they rely on their id "
                           "and edges", f"{missing:,}", f"{features.num_items:,}", features.source)
    return features


def _load(spec: Any, dataset, dim: int, base: Optional[Path] = None) -> Optional[ItemFeatures]:
    """``auto`` (the features that came with the dataset's graph, else its ``features.parquet``
    cache, else ``hashed``), ``hashed`` (id embeddings when no item has text), ``categories``
    (learnable category and brand tokens), ``none``, a feature cache (``.parquet``), a torch
    file ``{"item_ids", "tokens", "mask"}`` (a relative path is looked up in ``base`` first: a
    run directory), or the features themselves: a tensor ``[N, D]`` / ``[N, T, D]``, a pair
    ``(tokens, mask)`` or a :class:`ContentFeatures`, one row per item in node order."""
    from mmsc_dgl.features.cache import CACHE_NAME, load_feature_cache
    if not isinstance(spec, str):
        return in_memory_features(spec, dataset.num_items)
    if spec == "auto" and getattr(dataset, "features", None) is not None:
        return ContentFeatures(dataset.features["tokens"], dataset.features["mask"], source="graph")
    saved = dataset.features_file() if spec == "auto" and hasattr(dataset, "features_file") else None
    if saved is not None:  # the features that came with the graph the dataset was made from
        spec = str(saved)
    if spec == "auto":
        cache = Path(dataset.root) / CACHE_NAME if dataset.root else None
        if cache is not None and cache.exists():
            logger.info("content features from the cache %s", cache)
            return load_feature_cache(cache, dataset.catalog)
        spec = "hashed"
    if spec == "none":
        return None
    if spec == "categories":
        from mmsc_dgl.features.categorical import categorical_features
        try:
            return categorical_features(dataset.catalog.table)
        except ValueError as err:
            raise DataError(f"{flag('--features', 'features=')} categories: {err}.", path=dataset.root,
                            fix=f"use {flag('--features', 'features=')} hashed, none, or a feature file.") from None
    if spec == "hashed":
        from mmsc_dgl.data.catalog import item_texts
        if not any(item_texts(dataset.catalog.table)):
            # An item with no content must not pretend to have some: all-zero features would make
            # cold start a "mean of nearest items" over nothing.
            logger.warning("no item has text (title, category or description): training on id embeddings "
                           "(--features none)")
            return None
        return hashed_text_features(dataset.catalog.table, dim=dim)
    path = Path(spec)
    if base is not None and not path.is_absolute() and (Path(base) / path).exists():
        path = Path(base) / path
    if path.suffix == ".parquet":
        return load_feature_cache(path, dataset.catalog)
    if not path.exists():
        raise DataError("no feature file here.", path=path, fix=f"pass {flag('--features', 'features=')} hashed, none, or a feature file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a pickle of anything else, a text file, a damaged file
        raise DataError("not a torch feature file (or a damaged one); arbitrary pickles are refused.", path=path,
                        fix="pass a feature cache (.parquet, mmsc-dgl features) or torch.save({'item_ids', "
                            "'tokens', 'mask'}).") from None
    if not isinstance(state, dict):
        raise DataError(f"the feature file holds a {type(state).__name__}, not a dict.", path=path,
                        fix="torch.save({'item_ids': [...], 'tokens': [N, T, D], 'mask': [N, T]}).")
    for key in ("item_ids", "tokens", "mask"):
        if key not in state:
            raise DataError(f"the feature file has no {key!r}.", path=path,
                            fix="write item_ids, tokens [N, T, D] and mask [N, T].")
    ids = dataset.catalog.ids.to_pylist()
    if list(state["item_ids"]) != ids:
        given = list(state["item_ids"])
        if sorted(map(str, given)) == sorted(map(str, ids)) and len(set(given)) == len(given):
            at = next(i for i, (a, b) in enumerate(zip(given, ids)) if a != b)
            problem = (f"the feature file holds the catalog's {len(ids):,} items in another order (position "
                       f"{at}: {given[at]!r} where the catalog has {ids[at]!r})")
            fix = "write the rows in the order of the dataset's items.parquet (node order)."
        else:
            known, catalog = set(given), set(ids)
            missing = [i for i in ids if i not in known][:3]
            extra = list(dict.fromkeys(i for i in given if i not in catalog))[:3]
            problem = (f"the feature file's {len(given):,} item ids do not match the catalog's {len(ids):,}: "
                       f"missing e.g. {missing}" + (f", not in the catalog e.g. {extra}" if extra else ""))
            fix = "extract features for this dataset's items.parquet, in its order."
        raise DataError(f"{problem}.", path=path, fix=fix)
    try:
        return ContentFeatures(state["tokens"].float(), state["mask"].bool(), source=str(path))
    except ValueError as err:
        raise DataError(str(err), path=path, fix="re-extract the features.") from err


def in_memory_features(feat: Any, num_items: int) -> ContentFeatures:
    """Features handed over from Python (a tensor ``[N, D]`` / ``[N, T, D]``, ``(tokens, mask)``
    or :class:`ContentFeatures`), checked against the catalog's size."""
    from mmsc_dgl.data.node_features import as_token_features
    if isinstance(feat, ContentFeatures):
        tokens, mask, source = feat.tokens, feat.mask, feat.source
    else:
        try:
            tokens, mask = as_token_features(feat)
        except (TypeError, ValueError) as err:
            raise DataError(f"features: {err}.", fix="pass [N, D], [N, T, D], (tokens, mask) or ContentFeatures.") from None
        source = "memory"
    if tokens.shape[0] != num_items:
        raise DataError(f"features have {tokens.shape[0]} rows for {num_items} items.",
                        fix="give one row per item, in node order.")
    try:
        return ContentFeatures(tokens.float(), mask.bool(), source=source)
    except ValueError as err:
        raise DataError(f"features: {err}.", fix="pass finite features.") from None
