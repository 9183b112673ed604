"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

import torch

from mmsc_dgl.errors import DataError, flag
from mmsc_dgl.io import atomic_path


def save_checkpoint(path: os.PathLike | str, state: Dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def state_dict_problem(err: BaseException) -> str:
    """The line of a ``load_state_dict`` error that names the parameter (``size mismatch for
    evidence.mlp.complement.0.weight: ...``, the missing or unexpected keys), not torch's
    header line ("Error(s) in loading state_dict for MMSC:")."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if line.startswith(("size mismatch for", "Missing key", "Unexpected key"))]
    text = (named or lines or [type(err).__name__])[0]
    return text if len(text) <= 300 else text[:297] + "..."


def load_checkpoint(path: os.PathLike | str, map_location: str = "cpu") -> Dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: tensors and plain containers only, never
    arbitrary pickled objects.  A damaged or foreign file is a :class:`DataError`."""
    path = Path(path)
    if not path.exists():
        raise DataError("no checkpoint here.", path=path, fix="train first (mmsc-dgl train ... --out RUN_DIR).")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch's own message advises weights_only=False: never pass that on
        raise DataError(f"cannot read the checkpoint ({type(err).__name__}): it is damaged or was not written by "
                        "mmsc_dgl.", path=path,
                        fix=f"train the run again from scratch with {flag('--overwrite', 'overwrite=True')}.") from None
    if not isinstance(state, dict):
        raise DataError("the checkpoint does not hold an mmsc_dgl state.", path=path,
                        fix=f"train the run again from scratch with {flag('--overwrite', 'overwrite=True')}.")
    return state
