"""Fingerprints: short, stable digests that say whether two things are the same.

One helper for values (a config, a spec) and one for files (a dataset's tables), so that every
"is this the same run / dataset / cache?" check in the project compares the same kind of digest.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

LENGTH = 16


def fingerprint(data: Any) -> str:
    """sha256 of ``data`` as canonical JSON (sorted keys), first 16 hex digits."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:LENGTH]


def _update_with_file(digest, path: Path, chunk: int) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)


def file_fingerprint(path: os.PathLike | str, chunk: int = 1 << 20) -> str:
    """sha256 of one file's bytes, not its name (a renamed copy is the same file), first 16 hex
    digits."""
    digest = hashlib.sha256()
    _update_with_file(digest, Path(path), chunk)
    return digest.hexdigest()[:LENGTH]


def files_fingerprint(root: os.PathLike | str, names: Iterable[str], chunk: int = 1 << 20) -> str:
    """sha256 over the names and bytes of ``root/name`` for each existing name (sorted), first
    16 hex digits.  Missing names are skipped, so optional files only count when present."""
    root = Path(root)
    digest = hashlib.sha256()
    for name in sorted(names):
        path = root / name
        if not path.is_file():
            continue
        digest.update(name.encode() + b"\0")
        _update_with_file(digest, path, chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:LENGTH]
