"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

import torch

from mmsc_dgl.errors import DataError
from mmsc_dgl.io import atomic_path


def save_checkpoint(path: os.PathLike | str, state: Dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: os.PathLike | str, map_location: str = "cpu") -> Dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise DataError("no checkpoint here.", path=path, fix="train first (mmsc-dgl train ... --out RUN_DIR).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise DataError(f"cannot read the checkpoint: {err}", path=path,
                        fix="it is damaged or not an mmsc_dgl checkpoint; train again without --resume.") from err
