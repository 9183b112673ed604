"""The run directory's record: what a run was trained on and how to find it again.

A run directory holds ``.mmsc_dgl.json`` (the marker: this is a run), ``run.json`` (the
dataset it used, by path and fingerprint, the config's fingerprint and the digest of its
weights), ``config.json``, ``metapaths.pt``, ``checkpoint.pt`` (latest epoch), ``model.pt``
(the best epoch), ``history.json`` and ``metrics.json``.  This module reads and writes
``run.json`` and ``config.json`` and refuses a resume that would continue something else.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from mmsc_dgl.config import TrainConfig
from mmsc_dgl.errors import DataError, flag
from mmsc_dgl.fingerprint import file_fingerprint, fingerprint
from mmsc_dgl.io import atomic_write_json, resolve_path

RUN_FILE = "run.json"
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
METRICS = "metrics.json"
HISTORY = "history.json"
RUN_FORMAT = 2


def read_run_record(run_dir: Path) -> dict:
    """``run.json``: the dataset a run was trained on (path and fingerprint) and its config's
    fingerprint.  A damaged file is a one-line :class:`DataError`."""
    path = run_dir / RUN_FILE
    if not path.exists():
        raise DataError("the run directory lacks run.json.", path=run_dir,
                        fix="point to a directory written by mmsc-dgl train --out.")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("dataset"), str):
            raise ValueError("no dataset entry")
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"run.json is damaged ({err}).", path=path,
                        fix=f"train the run again with {flag('--overwrite', 'overwrite=True')}.") from None
    return record


def read_config(run_dir: Path) -> TrainConfig:
    path = run_dir / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data.get("model") if isinstance(data, dict) else None
        if isinstance(model, dict) and "architecture" not in model:
            # Written before per-model configs: it holds every model's fields; keep this one's.
            from mmsc_dgl.config import MODEL_CONFIGS
            fields = MODEL_CONFIGS[data.get("architecture", "mmsc")].model_fields
            data["model"] = {k: v for k, v in model.items() if k in fields}
        return TrainConfig.from_stored(data)
    except (ValueError, UnicodeDecodeError) as err:  # pydantic's ValidationError is a ValueError
        first = str(err).splitlines()[0]
        raise DataError(f"config.json is damaged ({first}).", path=path,
                        fix=f"train the run again with {flag('--overwrite', 'overwrite=True')}.") from None


FEATURE_KEYWORDS = ("auto", "hashed", "none", "categories")


def feature_file_of(config: TrainConfig) -> Optional[Path]:
    """The feature file (torch file or parquet cache) ``config.features`` names, resolved as
    training reads it (relative to the working directory); ``None`` for the keywords and for
    features handed over from Python."""
    spec = config.features
    if not isinstance(spec, str) or spec in FEATURE_KEYWORDS:
        return None
    path = resolve_path(spec)
    return path if path.is_file() else None


def write_run_record(run_dir: Path, dataset_path: Path, config: TrainConfig,
                     feature_file: Optional[Path] = None, extra: Optional[dict] = None) -> None:
    """``run.json``: the dataset (absolute, relative to the run, fingerprint), the config's
    fingerprint, the feature file if there is one, and ``extra`` entries (a distributed run's
    partition)."""
    from mmsc_dgl.data.dataset import dataset_fingerprint
    record = {
        "format_version": RUN_FORMAT, "dataset": str(dataset_path),
        "dataset_relative": os.path.relpath(dataset_path, run_dir.resolve()),
        "dataset_fingerprint": dataset_fingerprint(dataset_path),
        "config_fingerprint": fingerprint(config.resume_identity())}
    if feature_file is not None:
        # Found again like the dataset: relative to the run first, then where it was, or re-pointed.
        record["features"] = {"path": str(feature_file),
                              "relative": os.path.relpath(feature_file, run_dir.resolve()),
                              "fingerprint": file_fingerprint(feature_file)}
    record.update(extra or {})
    atomic_write_json(run_dir / RUN_FILE, record)


def record_weights(run_dir: Path) -> None:
    """Write the digest of ``run_dir/model.pt`` into ``run.json``: :func:`load_run` then refuses
    weights that are not the run's own (a ``model.pt`` of the same shapes copied from another run
    gave metrics that disagreed with the run's silently)."""
    record = read_run_record(run_dir)
    record["model_fingerprint"] = file_fingerprint(run_dir / MODEL)
    atomic_write_json(run_dir / RUN_FILE, record)


def check_weights(run_dir: Path, record: dict) -> None:
    recorded = record.get("model_fingerprint")
    if recorded is None:  # a run written before weights were recorded
        return
    found = file_fingerprint(run_dir / MODEL)
    if found != recorded:
        raise DataError(f"model.pt is not the weights this run wrote (digest {found}, the run recorded "
                        f"{recorded}): its metrics.json would not describe it.", path=run_dir / MODEL,
                        fix=f"put the run's own model.pt back, or train the run again with {flag('--overwrite', 'overwrite=True')}.")


def run_feature_file(run_dir: Path, record: dict, features: Optional[os.PathLike | str] = None) -> Optional[Path]:
    """The feature file a run was trained on: ``features`` if given (a moved file), else the
    recorded one (relative to the run first, so a run moved with its features still works),
    checked against the recorded fingerprint.  ``None`` for a run without a feature file."""
    info = record.get("features")
    if info is None:
        if features is not None:
            raise DataError("this run was not trained on a feature file; there is nothing to re-point.",
                            path=run_dir, fix=f"drop {flag('--features', 'features=')}.")
        return None
    if features is not None:
        path = resolve_path(features)
        if not path.is_file():
            raise DataError("no feature file here.", path=features, fix=f"pass {flag('--features FILE', 'features=PATH')} where the run's "
                                                                          "feature file is now.")
    else:
        candidates = [run_dir / info["relative"], Path(info["path"])]
        found = next((p.resolve() for p in candidates if p.is_file()), None)
        if found is None:
            raise DataError(f"the feature file this run was trained on is no longer at {info['path']} "
                            "(moved or deleted).", path=run_dir,
                            fix=f"pass {flag('--features FILE', 'features=PATH')} pointing to where it is now "
                                "(checked by fingerprint).")
        path = found
    if file_fingerprint(path) != info["fingerprint"]:
        raise DataError(f"the feature file at {path} is not the one this run was trained on.", path=run_dir,
                        fix=f"pass {flag('--features FILE', 'features=PATH')} with the features it was trained on.")
    return path


def run_dataset_dir(run_dir: Path, record: dict, dataset: Optional[os.PathLike | str] = None) -> Path:
    """The dataset directory a run was trained on: ``dataset`` if given (a moved dataset),
    else the recorded one (relative to the run first, so a run moved with its dataset still
    works), checked against the recorded fingerprint."""
    from mmsc_dgl.data.dataset import dataset_fingerprint
    if dataset is not None:
        path = resolve_path(dataset)
        if not (path / "dataset.json").exists():
            raise DataError("not a dataset directory.", path=dataset, fix=f"pass {flag('--dataset DIR', 'dataset=DIR')} written by mmsc-dgl prepare.")
    else:
        candidates = [run_dir / record["dataset_relative"]] if record.get("dataset_relative") else []
        candidates.append(Path(record["dataset"]))
        found = next((p.resolve() for p in candidates if (p / "dataset.json").exists()), None)
        if found is None:
            raise DataError(f"the dataset this run was trained on is no longer at {record['dataset']} "
                            "(moved or deleted).", path=run_dir,
                            fix=f"pass {flag('--dataset DIR', 'dataset=DIR')} pointing to where it is now (checked by fingerprint).")
        path = found
    wanted = record.get("dataset_fingerprint")
    if wanted is not None and dataset_fingerprint(path) != wanted:
        raise DataError(f"the dataset at {path} is not the one this run was trained on "
                        f"(fingerprint {dataset_fingerprint(path)}, the run's {wanted}).", path=run_dir,
                        fix=f"pass {flag('--dataset DIR', 'dataset=DIR')} with the dataset it was trained on.")
    return path


def check_resume(run_dir: Path, marker: Optional[dict], config: TrainConfig) -> dict:
    """Refuse a resume that would continue something else: no run, another config."""
    if marker is None:
        raise DataError(f"{flag('--resume', 'resume=True')}: there is no run here to continue.", path=run_dir,
                        fix=f"train without {flag('--resume', 'resume=True')} to start one.")
    if not (run_dir / RUN_FILE).exists():
        raise DataError(f"{flag('--resume', 'resume=True')}: this run was stopped before it began training (no run.json), so there is "
                        "nothing to continue.", path=run_dir, fix=f"start it again with {flag('--overwrite', 'overwrite=True')} instead of {flag('--resume', 'resume=True')}.")
    record = read_run_record(run_dir)
    wanted = record.get("config_fingerprint")
    if wanted is not None and wanted != fingerprint(config.resume_identity()):
        changed = "another config"
        if (run_dir / "config.json").exists():
            before = read_config(run_dir).resume_identity()
            now = config.resume_identity()
            diff = sorted(k for k in now if now[k] != before.get(k))
            changed = "other settings (" + ", ".join(f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in diff) + ")"
        raise DataError(f"{flag('--resume', 'resume=True')} with {changed} than the run was trained with.", path=run_dir,
                        fix="resume with the run's own config (only epochs, patience, device, impl and "
                            f"deterministic may change), or train into a new {flag('--out', 'out')}.")
    return record
