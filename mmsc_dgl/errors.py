"""Errors that tell the user where the problem is and how to fix it."""
from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Optional

_FACE: ContextVar[str] = ContextVar("mmsc_dgl_face", default="python")


def flag(cli: str, python: str) -> str:
    """How a message names a setting: its command-line flag (``--overwrite``) while the CLI
    runs (:func:`command_line`), the argument a Python caller passes (``overwrite=True``)
    otherwise.

    Example:
        >>> flag("--overwrite", "overwrite=True")
        'overwrite=True'
        >>> with command_line():
        ...     flag("--overwrite", "overwrite=True")
        '--overwrite'
    """
    return cli if _FACE.get() == "cli" else python


@contextmanager
def command_line() -> Iterator[None]:
    """Messages raised inside name command-line flags (the CLI wraps every command in it)."""
    token = _FACE.set("cli")
    try:
        yield
    finally:
        _FACE.reset(token)


class DataError(ValueError):
    """Bad input data.  The message names the file, the line (when known) and the fix.

    Args:
        message: what is wrong.
        path: the file that holds the problem.
        line: 1-based line number inside ``path``.
        fix: what the user should do about it.

    Example:
        >>> str(DataError("no items.", path="runs/x", fix="pass --out DIR."))
        'runs/x: no items. Fix: pass --out DIR.'

    """

    def __init__(self, message: str, path: Optional[os.PathLike | str] = None,
                 line: Optional[int] = None, fix: Optional[str] = None):
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.fix = fix
        self.reason = message
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        text = where + message
        if fix:
            text += f" Fix: {fix}"
        super().__init__(text)
