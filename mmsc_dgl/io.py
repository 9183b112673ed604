"""Atomic file writes: a reader never sees a half-written file."""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

if TYPE_CHECKING:
    import pyarrow as pa


def resolve_path(path: os.PathLike | str) -> Path:
    """A path as the user gave it, with ``~`` expanded, made absolute (symlinks resolved)."""
    return Path(os.path.expanduser(os.fspath(path))).resolve()


def check_input_file(path: os.PathLike | str, fix: str = "pass a file that holds data.", empty_ok: bool = False,
                     what: str = "") -> int:
    """The size of the input file ``path``, after refusing what cannot be read as one: a missing
    path, a directory, a FIFO or device (``/dev/zero`` is endless, a FIFO blocks: neither is
    "empty"), and an empty file unless ``empty_ok`` (an empty config is no settings).  ``what``
    names the file in the messages ("the config")."""
    import stat

    from mmsc_dgl.errors import DataError
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DataError("no such file.", path=path, fix="check the path.") from None
    subject = f"{what} " if what else ""
    if stat.S_ISDIR(info.st_mode):
        raise DataError(f"{subject}is a directory, expected a file.", path=path, fix="pass the file inside it.")
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{subject}is not a regular file (a FIFO, socket or device), so it cannot be read as an "
                        f"input.", path=path, fix="save the data to a file and pass that file.")
    if info.st_size == 0 and not empty_ok:
        raise DataError("the file is empty.", path=path, fix=fix)
    return info.st_size


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: os.PathLike | str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except Exception as err:
        full = disk_full_error(err, path, tmp_path)
        if full is None:
            raise
        raise full from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


DISK_FULL_SLACK = 1 << 20
"""A write that fails while less than this (1 MiB) is free failed because the disk is full,
whatever the writer called it (torch's ``unexpected pos``, DGL's ``FileStream.Write incomplete``)."""


def human_size(num_bytes: float) -> str:
    """``812 bytes``, ``3.1 KiB``, ``2.0 MiB``, ``1.5 GiB``."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:,.0f} {unit}" if unit == "bytes" else f"{num_bytes:,.1f} {unit}"
        num_bytes /= 1024
    return ""  # unreachable


def disk_full_error(err: BaseException, path: os.PathLike | str, partial: Optional[Path] = None):
    """The one-line :class:`~mmsc_dgl.errors.DataError` for a write of ``path`` that failed
    because its disk is full (``ENOSPC``/``EDQUOT``, or any writer's error while less than
    :data:`DISK_FULL_SLACK` is free), naming the path, the free space and what the write had
    reached (a lower bound of the space it needs); ``None`` for any other failure."""
    import errno

    from mmsc_dgl.errors import DataError
    if isinstance(err, DataError):
        return None
    directory = Path(path).parent
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        free = None
    by_errno = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
    if not by_errno and (free is None or free >= DISK_FULL_SLACK):
        return None
    try:
        reached = partial.stat().st_size if partial is not None and partial.exists() else 0
    except OSError:
        reached = 0
    free_text = "" if free is None else f" ({human_size(free)} free)"
    need = f": this needs more than the {human_size(reached)} written before it filled" if reached else ""
    return DataError(f"the disk is full{free_text}{need}.", path=path,
                     fix=f"free space on the disk of {directory}, or write to another disk.")


def atomic_write_text(path: os.PathLike | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by ``None``: strict JSON has no NaN.
    Writers put the reason for a missing value beside it (``"reason"``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def strict_json(obj: Any, sort_keys: bool = True, fallback: Optional[Callable[[Any], Any]] = None) -> str:
    """Indented strict JSON (``allow_nan=False``): NaN and inf become ``null``; numpy and torch
    scalars and paths are written as plain values, anything else through ``fallback`` (or
    refused).  Every JSON the project writes or prints."""
    def default(value: Any) -> Any:
        if hasattr(value, "item"):  # numpy and torch scalars
            return finite_json(value.item())
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if fallback is not None:
            return fallback(value)
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    return json.dumps(finite_json(obj), indent=2, sort_keys=sort_keys, allow_nan=False, default=default)


def atomic_write_json(path: os.PathLike | str, obj: Any) -> None:
    """:func:`strict_json`, written atomically."""
    atomic_write_text(path, strict_json(obj) + "\n")


def read_parquet_table(path: os.PathLike | str, columns: tuple, fix: str, what: str = "parquet table") -> "pa.Table":
    """A parquet file that must hold ``columns``; a one-line :class:`~mmsc_dgl.errors.DataError`
    naming the file and ``fix`` when it is not parquet or lacks one of them."""
    import pyarrow.parquet as pq

    from mmsc_dgl.errors import DataError
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"not a {what} ({type(err).__name__}).", path=path, fix=fix) from None
    for col in columns:
        if col not in table.column_names:
            raise DataError(f"the {what} has no {col!r} column (it has {', '.join(table.column_names)}).",
                            path=path, fix=fix)
    return table


def atomic_write_parquet(path: os.PathLike | str, table: "pa.Table", **kwargs: Any) -> None:
    import pyarrow.parquet as pq
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


def atomic_write_with(path: os.PathLike | str, writer: Callable[[Path], None]) -> None:
    """Run ``writer(tmp_path)`` and move the result into place atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


@contextlib.contextmanager
def atomic_directory(path: os.PathLike | str, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place when complete.

    A run that dies half-way leaves ``<name>.partial-*`` behind, never a half-made ``path``.
    """
    path = Path(path)
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()  # an empty directory counts as absent
    if path.exists() and not overwrite:
        from mmsc_dgl.errors import flag
        raise FileExistsError(f"{path} already exists. Fix: pass {flag('--overwrite', 'overwrite=True')} or choose "
                              f"another {flag('--out', 'out')}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{path.name}.partial-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full_error(err, path) if isinstance(err, Exception) else None
        if full is None:
            raise
        raise full from None
