"""The feature cache: one parquet row per item (id, token matrix, mask), written in resumable chunks.

``DATASET_DIR/features.parquet``::

    item_id  string                              row i is node i
    tokens   fixed_size_list<float32>[T * D]     the item's T tokens of D dims, row-major
    mask     fixed_size_list<bool>[T]            which tokens are real

The schema metadata ``mmsc_dgl`` holds JSON: backend, model, checkpoint_hash, tokens (T), dim (D),
num_items, items_digest (of the catalog's ids in order) and format_version.  While extracting,
finished chunks live in ``features.parquet.parts/``; a killed run resumes from there and only
the missing chunks are computed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from mmsc_dgl.errors import DataError
from mmsc_dgl.features.base import ContentFeatures, FeatureExtractor
from mmsc_dgl.io import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CACHE_NAME = "features.parquet"
BACKENDS = ("text", "clip", "blip2")


def items_digest(ids) -> str:
    digest = hashlib.sha256()
    for item_id in ids:
        digest.update(item_id.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _table(ids, tokens: np.ndarray, mask: np.ndarray, meta: Optional[dict] = None) -> pa.Table:
    n, t, d = tokens.shape
    table = pa.table({
        "item_id": pa.array(ids, pa.string()),
        "tokens": pa.FixedSizeListArray.from_arrays(pa.array(tokens.reshape(-1), pa.float32()), t * d),
        "mask": pa.FixedSizeListArray.from_arrays(pa.array(mask.reshape(-1), pa.bool_()), t),
    })
    if meta is not None:
        table = table.replace_schema_metadata({"mmsc_dgl": json.dumps(meta, sort_keys=True)})
    return table


def read_meta(path: os.PathLike | str) -> dict:
    schema = pq.read_schema(path)
    raw = (schema.metadata or {}).get(b"mmsc_dgl")
    if raw is None:
        raise DataError("not an mmsc_dgl feature cache (no 'mmsc_dgl' metadata).", path=path,
                        fix="write it with mmsc-dgl features.")
    return json.loads(raw)


def load_feature_cache(path: os.PathLike | str, catalog=None) -> ContentFeatures:
    """Read a cache as :class:`ContentFeatures`, checking it against ``catalog`` (ids, order)."""
    path = Path(path)
    if not path.exists():
        raise DataError("no feature cache here.", path=path, fix="run mmsc-dgl features DATASET_DIR first.")
    meta = read_meta(path)
    table = pq.read_table(path)
    t, d = int(meta["tokens"]), int(meta["dim"])
    if table.column("tokens").type.list_size != t * d or table.column("mask").type.list_size != t:
        raise DataError(f"the cache says {t} tokens of {d} dims but its columns disagree.", path=path,
                        fix="extract the features again (--overwrite).")
    if catalog is not None:
        ids = catalog.ids.to_pylist()
        cached = table.column("item_id").to_pylist()
        if cached != ids:
            missing = [i for i in ids if i not in set(cached)][:3]
            raise DataError(f"the cache holds {len(cached)} items, the catalog {len(ids)}, or in another order "
                            f"(missing e.g. {missing}).", path=path,
                            fix="extract features for this dataset: mmsc-dgl features DATASET_DIR --overwrite.")
    n = table.num_rows
    tokens = table.column("tokens").combine_chunks().values.to_numpy().reshape(n, t, d)
    mask = table.column("mask").combine_chunks().values.to_numpy(zero_copy_only=False).reshape(n, t)
    try:
        return ContentFeatures(torch.from_numpy(tokens.copy()), torch.from_numpy(mask.copy()),
                               source=f"{meta['backend']}:{meta['model']}")
    except ValueError as err:
        raise DataError(str(err), path=path, fix="extract the features again (--overwrite).") from err


def make_extractor(backend: str, device: str = "cpu", batch_size: int = 64, model: Optional[str] = None,
                   checkpoint: Optional[str] = None, random_init: bool = False,
                   image_root: Optional[str] = None) -> FeatureExtractor:
    if backend == "text":
        from mmsc_dgl.features.text import TextExtractor
        return TextExtractor(model_path=model, device=device, batch_size=batch_size)
    if backend == "clip":
        from mmsc_dgl.features.clip import ClipExtractor
        return ClipExtractor(model=model or "ViT-B-32", checkpoint=checkpoint, random_init=random_init,
                             image_root=image_root, device=device)
    if backend == "blip2":
        from mmsc_dgl.features.blip2 import Blip2Extractor
        return Blip2Extractor(checkpoint=checkpoint, image_root=image_root, device=device)
    raise DataError(f"unknown feature backend {backend!r}.", fix=f"use one of {', '.join(BACKENDS)}.")


@dataclass
class FeatureRun:
    path: Path
    meta: dict
    items: int
    computed_items: int
    seconds: float
    report: dict
    complete: bool

    @property
    def items_per_second(self) -> float:
        return self.computed_items / self.seconds if self.seconds > 0 else float("nan")


def extract_features(dataset_dir: os.PathLike | str, backend: str = "text", out: Optional[os.PathLike | str] = None,
                     batch_size: int = 64, chunk_size: int = 4096, device: str = "cpu", overwrite: bool = False,
                     progress: bool = True, extractor: Optional[FeatureExtractor] = None,
                     stop_after_chunks: Optional[int] = None, **options) -> FeatureRun:
    """Extract and cache features for every item of a prepared dataset (``mmsc-dgl features``).

    Resumable: finished chunks are kept in ``<out>.parts/`` and skipped on the next call.
    ``stop_after_chunks`` stops after computing that many chunks (to test resuming).
    """
    from mmsc_dgl.data.catalog import ItemCatalog
    dataset_dir = Path(dataset_dir)
    catalog = ItemCatalog.load(dataset_dir / "items.parquet")
    out = Path(out) if out else dataset_dir / CACHE_NAME
    extractor = extractor or make_extractor(backend, device=device, batch_size=batch_size, **options)
    ids = catalog.ids.to_pylist()
    meta = {**extractor.describe(), "num_items": len(ids), "items_digest": items_digest(ids),
            "format_version": FORMAT_VERSION}
    if out.exists():
        existing = read_meta(out)
        if existing == meta:
            logger.info("%s already holds these features; nothing to do", out)
            return FeatureRun(out, meta, len(ids), 0, 0.0, {}, True)
        if not overwrite:
            diff = {k: (existing.get(k), v) for k, v in meta.items() if existing.get(k) != v}
            raise DataError(f"a feature cache made differently is already here ({diff}).", path=out,
                            fix="pass --overwrite to replace it, or --out another file.")
        out.unlink()
    parts = out.with_name(out.name + ".parts")
    meta_file = parts / "meta.json"
    if parts.exists():
        previous = json.loads(meta_file.read_text()) if meta_file.exists() else None
        if previous != {**meta, "chunk_size": chunk_size}:
            if not overwrite:
                raise DataError("an unfinished extraction with other settings is here.", path=parts,
                                fix="rerun it with the same settings to resume, or pass --overwrite.")
            shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_json(meta_file, {**meta, "chunk_size": chunk_size})
    chunks = max(1, math.ceil(len(ids) / chunk_size))
    done = [c for c in range(chunks) if (parts / f"chunk-{c:06d}.parquet").exists()]
    if done:
        logger.info("resuming: %d of %d chunks already extracted", len(done), chunks)
    bar = tqdm(total=len(ids), unit="item", desc=f"features ({extractor.backend})",
               initial=sum(min(chunk_size, len(ids) - c * chunk_size) for c in done),
               disable=None if progress else True)
    started = time.perf_counter()
    computed = 0
    computed_chunks = 0
    for c in range(chunks):
        path = parts / f"chunk-{c:06d}.parquet"
        if path.exists():
            continue
        rows = catalog.table.slice(c * chunk_size, chunk_size)
        token_parts, mask_parts = [], []
        for start in range(0, rows.num_rows, batch_size):
            batch = rows.slice(start, batch_size)
            tokens, mask = extractor.extract(batch)
            token_parts.append(tokens.astype(np.float32, copy=False))
            mask_parts.append(mask.astype(bool, copy=False))
            bar.update(batch.num_rows)
        table = _table(rows.column("item_id").to_pylist(), np.concatenate(token_parts), np.concatenate(mask_parts))
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        computed += rows.num_rows
        computed_chunks += 1
        if stop_after_chunks is not None and computed_chunks >= stop_after_chunks and c + 1 < chunks:
            bar.close()
            return FeatureRun(out, meta, len(ids), computed, time.perf_counter() - started, extractor.report(), False)
    bar.close()
    seconds = time.perf_counter() - started
    merged = pa.concat_tables([pq.read_table(parts / f"chunk-{c:06d}.parquet") for c in range(chunks)])
    merged = merged.replace_schema_metadata({"mmsc_dgl": json.dumps(meta, sort_keys=True)})
    with atomic_path(out) as tmp:
        pq.write_table(merged, tmp)
    shutil.rmtree(parts)
    run = FeatureRun(out, meta, len(ids), computed, seconds, extractor.report(), True)
    logger.info("features: %d items (%d computed) in %.1fs, %.1f items/s -> %s", len(ids), computed, seconds,
                run.items_per_second, out)
    return run
