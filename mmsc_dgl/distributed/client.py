"""A trainer that fails alone ends at once, not at the launcher's ``--timeout``.

``dgl.distributed.initialize`` registers DGL's ``exit_client`` to run when the process exits,
and it starts with a barrier of every trainer.  A trainer that raises while the others are still
at work (in a collective that waits for it, or in their own steps) therefore never exits: it
waits in that barrier, the others wait for it, and the job ends only at the launcher's
``--timeout`` (measured: a rendezvous that failed on one trainer held a loopback job for its
whole timeout).  :func:`leave_on_error` replaces that exit hook when an exception leaves its
block: the process still reports its error as it would (the CLI's one line, or a traceback),
then exits with its code without DGL's barrier; the launcher sees it and ends the job
(``mmsc_dgl.distributed.launch``), as it does for a trainer that crashed.  A job that ends
normally keeps DGL's orderly exit: the barrier, then rank 0 shuts the servers down.

Exiting skips the interpreter's own teardown (``os._exit``, after flushing the output and the
logs): DGL's message threads, neither finished nor joined, would otherwise abort the process
(SIGABRT, "terminate called without an active exception"), and finishing them waits for the
servers' answer to a shutdown that was never sent.
"""
from __future__ import annotations

import atexit
import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterator

from mmsc_dgl.errors import DataError

__all__ = ["exit_code", "leave_on_error"]


def exit_code(err: BaseException) -> int:
    """The exit status a process ends with when ``err`` ends it: a ``SystemExit``'s own, 130 for
    an interrupt, 2 for bad input (:class:`~mmsc_dgl.errors.DataError`, a file in the way),
    as the CLI exits; 1 otherwise."""
    if isinstance(err, SystemExit):
        code = err.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    if isinstance(err, KeyboardInterrupt):
        return 130
    if isinstance(err, (DataError, FileExistsError)):
        return 2
    return 1


@contextmanager
def leave_on_error() -> Iterator[None]:
    """Run a DistDGL trainer's work; if an exception leaves the block, the process exits, when
    it comes to exit, with :func:`exit_code` and without DGL's exit barrier.  The exception
    propagates unchanged (a standalone process, which has no barrier, is left as it is)."""
    try:
        yield
    except BaseException as err:
        if os.environ.get("DGL_DIST_MODE", "standalone") != "standalone":
            from dgl.distributed import dist_context
            atexit.unregister(dist_context.exit_client)
            atexit.register(_leave, exit_code(err))
        raise


def _leave(code: int) -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing more can be said
            pass
    os._exit(code)
