"""The feature cache: one parquet row per item (id, token matrix, mask), written in resumable chunks.

``DATASET_DIR/features.parquet``::

    item_id  string                              row i is node i
    tokens   fixed_size_list<float32>[T * D]     the item's T tokens of D dims, row-major
    mask     fixed_size_list<bool>[T]            which tokens are real

    source   string                              digest of the item's text and image reference

The schema metadata ``mmsc_dgl`` holds JSON: backend, model, checkpoint_hash, tokens (T), dim (D),
num_items, items_digest (of the catalog's ids in order), sources_digest (of every item's
``source``) and format_version (2; caches of format 1 recorded no sources and are refused).  While extracting,
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

from mmsc_dgl.errors import DataError, flag
from mmsc_dgl.features.base import ContentFeatures, FeatureExtractor, item_sources
from mmsc_dgl.io import atomic_path, atomic_write_json
from mmsc_dgl.lock import writer_lock
from mmsc_dgl.ownership import check_output_file
from mmsc_dgl.progress import duration, eta, report

logger = logging.getLogger(__name__)

PROGRESS_EVERY = 10.0
"""Seconds between progress lines inside a chunk (and a line at the end of every chunk)."""

FORMAT_VERSION = 2
CACHE_NAME = "features.parquet"
BACKENDS = ("text", "clip", "blip2")


def items_digest(ids) -> str:
    digest = hashlib.sha256()
    for item_id in ids:
        digest.update(item_id.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _table(ids, tokens: np.ndarray, mask: np.ndarray, sources, meta: Optional[dict] = None) -> pa.Table:
    n, t, d = tokens.shape
    table = pa.table({
        "item_id": pa.array(ids, pa.string()),
        "tokens": pa.FixedSizeListArray.from_arrays(pa.array(tokens.reshape(-1), pa.float32()), t * d),
        "mask": pa.FixedSizeListArray.from_arrays(pa.array(mask.reshape(-1), pa.bool_()), t),
        "source": pa.array(sources, pa.string()),
    })
    if meta is not None:
        table = table.replace_schema_metadata({"mmsc_dgl": json.dumps(meta, sort_keys=True)})
    return table


def read_meta(path: os.PathLike | str) -> dict:
    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError) as err:  # not parquet at all (ArrowInvalid is a ValueError)
        raise DataError(f"not a parquet feature cache ({type(err).__name__}).", path=path,
                        fix="pass a cache written by mmsc-dgl features, or choose another path.") from None
    raw = (schema.metadata or {}).get(b"mmsc_dgl")
    if raw is None:
        raise DataError("not an mmsc_dgl feature cache (no 'mmsc_dgl' metadata).", path=path,
                        fix="write it with mmsc-dgl features, or choose another path.")
    try:
        meta = json.loads(raw)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise DataError("the feature cache's metadata is damaged.", path=path,
                        fix="extract the features again (mmsc-dgl features DATASET_DIR --overwrite).")
    return meta


def load_feature_cache(path: os.PathLike | str, catalog=None) -> ContentFeatures:
    """Read a cache as :class:`ContentFeatures`, checking it against ``catalog`` (ids, order)."""
    path = Path(path)
    if not path.exists():
        raise DataError("no feature cache here.", path=path, fix="run mmsc-dgl features DATASET_DIR first.")
    meta = read_meta(path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"the feature cache has format {meta.get('format_version')}, not {FORMAT_VERSION}: it records "
                        "no fingerprint of the content it was made from.", path=path,
                        fix="extract the features again: mmsc-dgl features DATASET_DIR --overwrite.")
    table = pq.read_table(path)
    t, d = int(meta["tokens"]), int(meta["dim"])
    if table.column("tokens").type.list_size != t * d or table.column("mask").type.list_size != t:
        raise DataError(f"the cache says {t} tokens of {d} dims but its columns disagree.", path=path,
                        fix=f"extract the features again ({flag('--overwrite', 'overwrite=True')}).")
    if catalog is not None:
        ids = catalog.ids.to_pylist()
        cached = table.column("item_id").to_pylist()
        if cached != ids:
            missing = [i for i in ids if i not in set(cached)][:3]
            raise DataError(f"the cache holds {len(cached)} items, the catalog {len(ids)}, or in another order "
                            f"(missing e.g. {missing}).", path=path,
                            fix="extract features for this dataset: mmsc-dgl features DATASET_DIR --overwrite.")
        now = item_sources(catalog.table)
        made = table.column("source").to_pylist()
        stale = [i for i, (a, b) in enumerate(zip(now, made)) if a != b]
        if stale:
            examples = ", ".join(ids[i] for i in stale[:3])
            raise DataError(f"the cache was made from other content: {len(stale):,} of {len(ids):,} items have "
                            f"other text or images now (e.g. {examples}).", path=path,
                            fix="extract features for this dataset: mmsc-dgl features DATASET_DIR --overwrite.")
    n = table.num_rows
    tokens = table.column("tokens").combine_chunks().values.to_numpy().reshape(n, t, d)
    mask = table.column("mask").combine_chunks().values.to_numpy(zero_copy_only=False).reshape(n, t)
    try:
        return ContentFeatures(torch.from_numpy(tokens.copy()), torch.from_numpy(mask.copy()),
                               source=f"{meta['backend']}:{meta['model']}")
    except ValueError as err:
        raise DataError(str(err), path=path, fix=f"extract the features again ({flag('--overwrite', 'overwrite=True')}).") from err


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

    Example:
        >>> run = mmsc_dgl.extract_features("runs/magazine", backend="text")  # doctest: +SKIP
        >>> run.out                                                          # doctest: +SKIP

    """
    from mmsc_dgl.data.catalog import ItemCatalog
    dataset_dir = Path(dataset_dir)
    catalog = ItemCatalog.load(dataset_dir / "items.parquet")
    out = Path(out) if out else dataset_dir / CACHE_NAME
    # Check first: a file at --out that is not an mmsc_dgl cache is never replaced, even with
    # --overwrite; a directory, an unwritable place or one of the dataset's own files neither.
    from mmsc_dgl.data.dataset import dataset_files
    check_output_file(out, overwrite=True, inputs=dataset_files(dataset_dir))
    existing = read_meta(out) if out.exists() else None
    with writer_lock(out, "this feature cache"):
        return _extract(catalog, out, existing, backend, batch_size, chunk_size, device, overwrite, progress,
                        extractor, stop_after_chunks, options)


def _extract(catalog, out: Path, existing: Optional[dict], backend: str, batch_size: int, chunk_size: int,
             device: str, overwrite: bool, progress: bool, extractor: Optional[FeatureExtractor],
             stop_after_chunks: Optional[int], options: dict) -> FeatureRun:
    extractor = extractor or make_extractor(backend, device=device, batch_size=batch_size, **options)
    ids = catalog.ids.to_pylist()
    sources = item_sources(catalog.table)
    meta = {**extractor.describe(), "num_items": len(ids), "items_digest": items_digest(ids),
            "sources_digest": items_digest(sources), "format_version": FORMAT_VERSION}
    if existing is not None:
        if existing == meta:
            logger.info("%s already holds these features; nothing to do", out)
            return FeatureRun(out, meta, len(ids), 0, 0.0, {}, True)
        if not overwrite:
            diff = ", ".join(f"{k}: {existing.get(k)!r} -> {v!r}" for k, v in meta.items() if existing.get(k) != v)
            raise DataError(f"a feature cache made differently is already here ({diff}).", path=out,
                            fix=f"pass {flag('--overwrite', 'overwrite=True')} to replace it, or {flag('--out', 'out=')} another file.")
    parts = out.with_name(out.name + ".parts")
    meta_file = parts / "meta.json"
    if parts.exists():
        try:
            previous = json.loads(meta_file.read_text()) if meta_file.exists() else None
        except ValueError:
            previous = None
        if previous != {**meta, "chunk_size": chunk_size}:
            if not overwrite:
                raise DataError("an unfinished extraction with other settings is here.", path=parts,
                                fix=f"rerun it with the same settings to resume, or pass {flag('--overwrite', 'overwrite=True')}.")
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
    started = last = time.perf_counter()
    computed = 0
    computed_chunks = 0
    todo = len(ids) - sum(min(chunk_size, len(ids) - c * chunk_size) for c in done)
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
            now = time.perf_counter()
            if now - last >= PROGRESS_EVERY and start + batch.num_rows < rows.num_rows:
                # a chunk of a slow model takes minutes (Magazine's one chunk: about 5 on 2 cores)
                last, so_far = now, computed + start + batch.num_rows
                report("features: chunk %d/%d, %s of %s items | %.1f items/s | ETA %s", c + 1, chunks,
                       f"{start + batch.num_rows:,}", f"{rows.num_rows:,}", so_far / (now - started),
                       eta(so_far, todo, now - started))
        table = _table(rows.column("item_id").to_pylist(), np.concatenate(token_parts), np.concatenate(mask_parts),
                       sources[c * chunk_size: c * chunk_size + rows.num_rows])
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        computed += rows.num_rows
        computed_chunks += 1
        elapsed = time.perf_counter() - started
        last = time.perf_counter()
        report("features: chunk %d/%d (%d items) | %.1f items/s | ETA %s", c + 1, chunks, rows.num_rows,
               computed / max(elapsed, 1e-9), eta(computed, todo, elapsed))
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
    report("features: %d items (%d computed) in %s -> %s", len(ids), computed, duration(seconds), out)
    return run
