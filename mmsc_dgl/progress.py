"""Progress for long work: tqdm bars on a terminal, and one log line per epoch or chunk always.

Lines go to the ``mmsc_dgl.progress`` logger.  The command line shows them on stderr by default
(``-q`` silences them), so a run under ``nohup`` or in a CI log says what it is doing; library
users see them when they configure logging at INFO.
"""
from __future__ import annotations

import logging
logger = logging.getLogger("mmsc_dgl.progress")


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def eta(done: int, total: int, elapsed: float) -> str:
    """Time left at the average rate so far (``-`` before anything is done)."""
    if done <= 0 or total <= done:
        return "-" if done <= 0 else "0 s"
    return duration(elapsed / done * (total - done))


def report(message: str, *args) -> None:
    """One progress line (``logger.info``)."""
    logger.info(message, *args)
