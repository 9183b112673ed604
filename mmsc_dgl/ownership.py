"""What mmsc_dgl may replace: only what it wrote, and never the ground the user stands on.

Every directory the project writes (a dataset, a run, an experiment) carries a marker file,
``.mmsc_dgl.json``, naming its kind and format version.  Before a command does any work it
calls :func:`check_output_dir` (or :func:`check_output_file` for single files), which refuses:

- the current directory, a parent of it, the home directory (or a parent of it) and ``/``,
  whenever the command would replace or delete them;
- a path that holds an input of the same command;
- a non-empty directory without the marker (the user's own files);
- a directory marked as another kind (a dataset where a run is asked for);
- an existing target of the same kind without ``--overwrite`` (or ``--resume`` for runs).

Directories written by mmsc_dgl before the marker existed are recognised by their own files
(``dataset.json`` with a format version; ``run.json`` with ``config.json``; ``cells/``).
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Optional, Sequence

from mmsc_dgl.errors import DataError, flag
from mmsc_dgl.io import resolve_path

MARKER = ".mmsc_dgl.json"
FORMAT_VERSIONS = {"dataset": 1, "run": 2, "experiment": 1, "tune": 1, "partition": 1}
OWNED = {
    "dataset": ("dataset.json", "relation_map.json", "items.parquet", "edges.parquet", "graph.bin", "splits",
                "metapaths.pt", "features.parquet", "features.parquet.parts", "e_llm*.parquet", "judge_scores",
                "experiment.json", "features.pt", "side_edges.parquet"),
    "run": ("run.json", "config.json", "metapaths.pt", "checkpoint.pt", "model.pt", "history.json", "metrics.json",
            "evaluation.json", "dataset", "cell.json", "features.pt", "shards"),  # shards: --shard-embeddings
    "experiment": ("cells", "datasets", "results.md", "results.json", "*.png"),
    "tune": ("study.db", "study.db-journal", "best.yaml", "trials.json"),
    "partition": ("partition.json", "mapping.pt", "mmsc.json", "part*"),
}
"""What each kind of directory holds when mmsc_dgl wrote it (besides the marker, its locks and
temporary files): anything else is the user's, and ``--overwrite`` refuses to delete it."""
KINDS = tuple(OWNED)
_ALWAYS = (MARKER, ".*.lock", ".*.tmp")
_NOUN = {"dataset": "dataset directory", "run": "run directory", "experiment": "experiment directory",
         "tune": "tuning study directory", "partition": "partition directory"}


def write_marker(directory: os.PathLike | str, kind: str) -> None:
    """Mark ``directory`` as a ``kind`` directory written by mmsc_dgl (atomically)."""
    from mmsc_dgl.schema import __version__
    from mmsc_dgl.io import atomic_write_json
    atomic_write_json(Path(directory) / MARKER, {
        "kind": kind, "format_version": FORMAT_VERSIONS[kind], "mmsc_dgl_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def read_marker(directory: os.PathLike | str) -> Optional[dict]:
    """The marker of ``directory``; for directories written before markers, one inferred from
    their files; ``None`` when mmsc_dgl did not write it."""
    directory = Path(directory)
    marker = directory / MARKER
    if marker.is_file():
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and data.get("kind") in KINDS:
            return data
        return None
    if (directory / "dataset.json").is_file() and (directory / "items.parquet").is_file():
        try:
            if "format_version" in json.loads((directory / "dataset.json").read_text(encoding="utf-8")):
                return {"kind": "dataset", "format_version": 1, "legacy": True}
        except (OSError, ValueError):
            return None
    if (directory / "run.json").is_file() and (directory / "config.json").is_file():
        return {"kind": "run", "format_version": 1, "legacy": True}
    if (directory / "cells").is_dir() and not any(p for p in directory.iterdir()
                                                   if p.name not in ("cells", "datasets", "results.md",
                                                                     "results.json") and p.suffix != ".png"):
        return {"kind": "experiment", "format_version": 1, "legacy": True}
    return None


def _protected(path: Path) -> Optional[str]:
    """Why ``path`` must never be replaced, or None."""
    cwd = Path.cwd().resolve()
    home = Path.home().resolve()
    if path == Path(path.anchor):
        return "it is the filesystem root"
    if path == cwd:
        return "it is the current directory"
    if cwd.is_relative_to(path):
        return "it holds the current directory"
    if path == home or home.is_relative_to(path):
        return "it is (or holds) the home directory"
    return None


def _holds_input(path: Path, inputs: Iterable[os.PathLike | str]) -> Optional[Path]:
    for given in inputs:
        if given is None:
            continue
        resolved = resolve_path(given)
        if resolved == path or resolved.is_relative_to(path):
            return Path(given)
    return None


def foreign_entries(directory: Path, kind: str) -> list:
    """Entries of a ``kind`` directory that mmsc_dgl does not write there."""
    from fnmatch import fnmatch
    patterns = OWNED[kind] + _ALWAYS
    return [p for p in directory.iterdir() if not any(fnmatch(p.name, pat) for pat in patterns)]


def _describe(entries: Sequence[Path]) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in entries)
    shown = ", ".join(names[:3]) + (f", ... ({len(names)} entries)" if len(names) > 3 else "")
    return shown


def check_output_dir(path: os.PathLike | str, kind: str, overwrite: bool = False, resume: bool = False,
                     inputs: Iterable[os.PathLike | str] = (), option: Optional[str] = None) -> Optional[dict]:
    """Refuse, before any work, an output directory this command must not write.

    Returns the marker of an existing ``kind`` directory that may be replaced (``overwrite``) or
    continued (``resume``), or ``None`` when the target is new or empty.

    Raises:
        DataError: naming the path, what is there, and the fix.
    """
    option = option or flag("--out", "out")
    given = Path(path)
    target = resolve_path(path)
    noun = _NOUN[kind]
    if target.exists() and not target.is_dir():
        raise DataError(f"{option} is a file, not a directory.", path=given,
                        fix=f"choose a new directory for {option}.")
    why = _protected(target)
    entries = list(target.iterdir()) if target.is_dir() else []
    if why is not None and (entries or kind == "dataset" or overwrite):
        raise DataError(f"will not write a {noun} here: {why}.", path=given,
                        fix=f"choose a new directory for {option}, e.g. runs/NAME.")
    held = _holds_input(target, inputs)
    if held is not None:
        raise DataError(f"{option} holds an input of this command ({held}).", path=given,
                        fix=f"write the {noun} somewhere else: {option} must not contain its own inputs.")
    if not entries:
        return None
    marker = read_marker(target)
    if marker is None:
        raise DataError(f"this directory holds files mmsc_dgl did not write ({_describe(entries)}); "
                        f"mmsc_dgl replaces only what it wrote itself.", path=given,
                        fix=f"choose a new or empty directory for {option}.")
    if marker["kind"] != kind:
        raise DataError(f"this is an mmsc_dgl {_NOUN[marker['kind']]}, not a {noun}.", path=given,
                        fix=f"choose another directory for {option}.")
    if marker.get("format_version", 1) > FORMAT_VERSIONS[kind]:
        raise DataError(f"this {noun} was written by a newer mmsc_dgl (format {marker['format_version']}).",
                        path=given, fix="use that version of mmsc_dgl, or choose another directory.")
    if overwrite and not resume:
        foreign = foreign_entries(target, kind)
        if foreign:
            raise DataError(f"this mmsc_dgl {noun} also holds files mmsc_dgl did not write "
                            f"({_describe(foreign)}); {flag('--overwrite', 'overwrite=True')} would delete them.", path=given,
                            fix=f"move them out first, or choose another {option}.")
    if resume or overwrite:
        return marker
    resumable = kind == "run" and (target / "run.json").exists()  # one killed before run.json has nothing to resume
    extra = f" pass {flag('--resume', 'resume=True')} to continue it," if resumable else ""
    raise DataError(f"{given} already holds an mmsc_dgl {noun}.", path=None,
                    fix=f"{extra} pass {flag('--overwrite', 'overwrite=True')} to replace it, or choose another {option}.".strip())


def check_output_file(path: os.PathLike | str, overwrite: bool = False, inputs: Iterable[os.PathLike | str] = (),
                      option: Optional[str] = None) -> None:
    """Refuse, before any work, to replace a file without ``overwrite`` (or ever, an input or a
    directory)."""
    option = option or flag("--out", "out")
    given = Path(path)
    target = resolve_path(path)
    if target.is_dir() or os.fspath(path).endswith(("/", os.sep)):
        raise DataError(f"{option} is a directory (or ends with '/'); a file is written here.", path=path,
                        fix=f"pass a file name for {option}, e.g. {os.fspath(path).rstrip('/' + os.sep) or 'out'}"
                            f"{os.sep}recs.parquet.")
    for held in inputs:
        if held is None:
            continue
        held_path = resolve_path(held)
        if held_path == target or (target.exists() and target.is_relative_to(held_path)):
            raise DataError(f"{option} is an input of this command (or a file inside one).", path=given,
                            fix=f"choose another file for {option}.")
    if target.exists() and not overwrite:
        raise DataError("the file already exists.", path=given,
                        fix=f"pass {flag('--overwrite', 'overwrite=True')} to replace it, or choose another {option}.")
    _check_creatable(target.parent, given, option)


def check_dir_parent(path: os.PathLike | str, option: Optional[str] = None) -> None:
    """The directory ``path`` (or its nearest existing ancestor) must be a writable directory."""
    target = resolve_path(path)
    _check_creatable(target if target.exists() else target.parent, Path(path), option or flag("--out", "out"))


def _check_creatable(probe: Path, given: Path, option: str) -> None:
    """A one-line error now, not a PermissionError or NotADirectoryError traceback after the
    work: the nearest existing ancestor of ``probe`` must be a writable directory."""
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise DataError(f"cannot create {option}: {probe} is a file.", path=given,
                        fix=f"choose another {option}.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DataError(f"cannot write {option}: {probe} is not writable.", path=given,
                        fix=f"choose a writable location for {option}.")


def clear_directory(path: os.PathLike | str, kind: str) -> None:
    """Empty a ``kind`` directory that :func:`check_output_dir` allowed to be replaced."""
    import shutil
    target = Path(path)
    marker = read_marker(target)
    if marker is None or marker["kind"] != kind or _protected(target.resolve()) is not None:
        raise DataError(f"refusing to clear a directory that is not an mmsc_dgl {_NOUN[kind]}.", path=target)
    for entry in target.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
NAME_LIMIT = 100
"""The longest name that becomes one path part (file systems allow 255 bytes)."""


def name_problem(name: object) -> Optional[str]:
    """Why ``name`` cannot become one part of a path this project writes, or ``None``.

    A plain name is 1 to 100 characters among letters, digits, ``.``, ``_`` and ``-``, does not
    start with ``.`` or ``-`` and is not ``.`` or ``..``: no separator, no parent, no hidden
    file, no option look-alike, nothing absolute.

    Example:
        >>> name_problem("mmsc-hops2") is None, name_problem("../up")
        (True, "'../up' has characters other than letters, digits, '.', '_' and '-'")
    """
    if not isinstance(name, str):
        return f"{name!r} is a {type(name).__name__}, not a string"
    if not name or len(name) > NAME_LIMIT:
        return f"{name!r} is not 1 to {NAME_LIMIT} characters long"
    if not set(name) <= _NAME_CHARS:
        return f"{name!r} has characters other than letters, digits, '.', '_' and '-'"
    if name[0] in ".-":
        return f"{name!r} starts with {name[0]!r}"
    return None


def inside(root: os.PathLike | str, path: os.PathLike | str, what: str) -> Path:
    """``path``, after checking that it lands inside ``root`` (both resolved, symlinks
    followed): the last guard before a write that was built from names in a config.

    Raises:
        DataError: when ``path`` leads out of ``root``.
    """
    if not resolve_path(path).is_relative_to(resolve_path(root)):
        raise DataError(f"{what} would be written outside {root}.", path=path,
                        fix="use plain names (letters, digits, '.', '_' and '-') in the config.")
    return Path(path)
