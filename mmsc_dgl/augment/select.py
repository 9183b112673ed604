"""Judge every training edge, cache the scores per pair, and keep a clean subset: E_LLM."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.augment.judge import EdgeJudge
from mmsc_dgl.errors import DataError, flag
from mmsc_dgl.io import atomic_path, atomic_write_json, atomic_write_parquet
from mmsc_dgl.lock import writer_lock
from mmsc_dgl.ownership import check_output_file
from mmsc_dgl.progress import eta, report

logger = logging.getLogger(__name__)

JUDGES = ("similarity", "seq2seq")
DEFAULT_TOP_N = 500_000


def make_judge(name: str, dataset, model: Optional[str] = None, device: str = "cpu", batch_size: int = 16,
               features: str = "auto", seed: int = 0) -> EdgeJudge:
    if name == "similarity":
        from mmsc_dgl.augment.similarity import SimilarityJudge
        from mmsc_dgl.features.load import load_features
        feats = load_features(features, dataset, dim=256)
        if feats is None:
            raise DataError("the similarity judge needs content features.", fix=f"pass {flag('--features', 'features=')} auto or hashed.")
        return SimilarityJudge(feats, dataset.catalog.table, dataset.splits.train, seed=seed)
    if name == "seq2seq":
        from mmsc_dgl.augment.seq2seq import Seq2SeqJudge
        return Seq2SeqJudge(model, dataset.catalog.table, device=device, batch_size=batch_size)
    raise DataError(f"unknown judge {name!r}.", fix=f"use one of {', '.join(JUDGES)}.")


@dataclass
class AugmentResult:
    path: Path
    kept: Dict[str, int]
    scored: Dict[str, int]
    computed_pairs: int
    seconds: float
    scores_dir: Path
    complete: bool = True
    mean_kept_score: Dict[str, float] = field(default_factory=dict)

    @property
    def pairs_per_second(self) -> float:
        return self.computed_pairs / self.seconds if self.seconds > 0 else float("nan")


def _fingerprint(judge: EdgeJudge, train) -> str:
    digest = hashlib.sha256(json.dumps(judge.describe(), sort_keys=True).encode())
    for r in RELATIONS:
        digest.update(train[r].src.tobytes())
        digest.update(train[r].dst.tobytes())
    return digest.hexdigest()[:16]


def score_training_edges(dataset, judge: EdgeJudge, chunk_size: int = 65_536, progress: bool = True,
                         stop_after_chunks: Optional[int] = None):
    """Scores of every training edge per relation, cached in ``DATASET_DIR/judge_scores/``.

    Returns ``(scores per relation or None if stopped early, cache directory, pairs computed, seconds)``.
    """
    train = dataset.splits.train
    root = Path(dataset.root) / "judge_scores" / f"{judge.name}-{_fingerprint(judge, train)}"
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / "judge.json", judge.describe())
    total = sum(len(train[r]) for r in RELATIONS)
    todo = [(r, c) for r in RELATIONS for c in range(math.ceil(len(train[r]) / chunk_size))]
    done = sum(min(chunk_size, len(train[r]) - c * chunk_size) for r, c in todo
               if (root / f"{r}-{c:06d}.npy").exists())
    bar = tqdm(total=total, initial=done, unit="pair", desc=f"judge ({judge.name})", disable=None if progress else True)
    computed = 0
    chunks = 0
    started = time.perf_counter()
    for r, c in todo:
        path = root / f"{r}-{c:06d}.npy"
        if path.exists():
            continue
        edges = train[r]
        lo, hi = c * chunk_size, min(len(edges), (c + 1) * chunk_size)
        chunk = np.asarray(judge.score(edges.src[lo:hi], edges.dst[lo:hi], r), dtype=np.float32)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, chunk)
        bar.update(hi - lo)
        computed += hi - lo
        chunks += 1
        elapsed = time.perf_counter() - started
        report("judge: %s chunk %d (%d pairs) | %.0f pairs/s | ETA %s", r, c + 1, hi - lo, computed / max(elapsed, 1e-9),
               eta(computed, total - done, elapsed))
        if stop_after_chunks is not None and chunks >= stop_after_chunks:
            bar.close()
            return None, root, computed, time.perf_counter() - started
    bar.close()
    scores = {r: np.concatenate([np.load(root / f"{r}-{c:06d}.npy") for c in range(math.ceil(len(train[r]) / chunk_size))])
              if len(train[r]) else np.zeros(0, np.float32) for r in RELATIONS}
    return scores, root, computed, time.perf_counter() - started


def augment(dataset_dir: os.PathLike | str, judge: str | EdgeJudge = "similarity", model: Optional[str] = None,
            top_n: Optional[int] = DEFAULT_TOP_N, threshold: Optional[float] = None,
            out: Optional[os.PathLike | str] = None, device: str = "cpu", batch_size: int = 16,
            features: str = "auto", seed: int = 0, chunk_size: int = 65_536, progress: bool = True,
            stop_after_chunks: Optional[int] = None, overwrite: bool = False) -> AugmentResult:
    """Judge the training edges and write E_LLM (``mmsc-dgl augment`` is this function).

    Keeps, per relation, the edges with score >= ``threshold``, or else the ``top_n`` best
    (capped at what exists).  Writes a parquet table ``relation, src, dst, score`` (node ids) to
    ``out`` (default ``DATASET_DIR/e_llm.parquet``) for ``mmsc-dgl train --train-edges``; an
    existing ``out`` is replaced only with ``overwrite``.

    Example:
        >>> result = mmsc_dgl.augment("runs/magazine", judge="similarity", top_n=5000)  # doctest: +SKIP
        >>> result.out                                                                 # doctest: +SKIP

    """
    from mmsc_dgl.data.dataset import load_dataset
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise DataError(f"{flag('--threshold', 'threshold=')} {threshold} is not a probability.", fix="pass a value in [0, 1].")
    dataset = load_dataset(dataset_dir)
    out = Path(out) if out else Path(dataset_dir) / "e_llm.parquet"
    from mmsc_dgl.data.dataset import dataset_files
    check_output_file(out, overwrite=overwrite, inputs=dataset_files(dataset_dir))
    with writer_lock(out, "these E_LLM edges"):
        return _augment(dataset, judge, model, top_n, threshold, out, device, batch_size, features, seed, chunk_size,
                        progress, stop_after_chunks)


def _augment(dataset, judge, model, top_n, threshold, out: Path, device, batch_size, features, seed, chunk_size,
             progress, stop_after_chunks) -> AugmentResult:
    judge_obj = judge if isinstance(judge, EdgeJudge) else make_judge(judge, dataset, model=model, device=device,
                                                                      batch_size=batch_size, features=features,
                                                                      seed=seed)
    scores, root, computed, seconds = score_training_edges(dataset, judge_obj, chunk_size, progress, stop_after_chunks)
    if scores is None:
        return AugmentResult(out, {}, {}, computed, seconds, root, complete=False)
    rel_col, src_col, dst_col, score_col = [], [], [], []
    kept, scored, mean = {}, {}, {}
    for r in RELATIONS:
        edges, s = dataset.splits.train[r], scores[r]
        if threshold is not None:
            keep = np.flatnonzero(s >= threshold)
        else:
            n = min(top_n if top_n is not None else len(s), len(s))
            keep = np.sort(np.argsort(-s, kind="stable")[:n])
        kept[r], scored[r] = int(len(keep)), int(len(s))
        mean[r] = float(s[keep].mean()) if len(keep) else float("nan")  # printed only, never written
        rel_col += [r] * len(keep)
        src_col.append(edges.src[keep])
        dst_col.append(edges.dst[keep])
        score_col.append(s[keep])
    table = pa.table({"relation": pa.array(rel_col, pa.string()), "src": np.concatenate(src_col),
                      "dst": np.concatenate(dst_col), "score": np.concatenate(score_col)})
    table = table.replace_schema_metadata({"mmsc_dgl": json.dumps({**judge_obj.describe(), "threshold": threshold,
                                                                   "top_n": None if threshold is not None else top_n})})
    atomic_write_parquet(out, table)
    logger.info("E_LLM: kept %s of %s training edges -> %s", kept, scored, out)
    return AugmentResult(out, kept, scored, computed, seconds, root, True, mean)
