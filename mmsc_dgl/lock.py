"""One writer at a time: an exclusive lock beside a directory or file that a command writes.

``writer_lock("runs/x")`` holds ``runs/.x.lock`` (an OS lock through the ``filelock`` package)
for the duration of a block.  The lock file names its holder (pid, host, start time, command)
while it is held, so a second writer is refused at once with a message naming the holder.
The OS releases the lock when its process dies, so a lock left by a killed process is taken
over by the next writer, which logs that it did.  The lock sits beside the target, not inside
it, because a dataset directory is replaced by a rename and a run directory may be emptied.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from mmsc_dgl.errors import DataError
from mmsc_dgl.io import resolve_path

logger = logging.getLogger(__name__)


def lock_path(target: os.PathLike | str) -> Path:
    """Where the lock of ``target`` lives: ``.NAME.lock`` in the same directory."""
    target = resolve_path(target)
    return target.parent / f".{target.name}.lock"


def _holder_text(holder: dict) -> str:
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
            + (f" ({holder['command']})" if holder.get("command") else ""))


def _read_holder(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def writer_lock(target: os.PathLike | str, what: str = "it") -> Iterator[None]:
    """Hold the writer lock of ``target``; raise :class:`DataError` at once if another process does.

    Args:
        target: the directory or file about to be written.
        what: how to name the target in the refusal (``"this run"``, say).
    """
    from filelock import FileLock, Timeout
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _read_holder(path)
        who = _holder_text(holder) if holder else "another process"
        raise DataError(f"another mmsc-dgl command is writing {what} ({who}).", path=target,
                        fix="wait for it to finish, or stop it; a killed writer's lock is taken over "
                            "automatically.") from None
    try:
        stale = _read_holder(path)
        if stale and stale.get("pid") != os.getpid():
            logger.warning("%s: taking over the lock left by %s, which is no longer running",
                           target, _holder_text(stale))
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])[:200]}
        path.write_text(json.dumps(holder), encoding="utf-8")
        yield
    finally:
        with contextlib.suppress(OSError):
            path.write_text("", encoding="utf-8")
        lock.release()
