"""Deterministic torch algorithms for the duration of a block (training and evaluation)."""
from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """torch's deterministic algorithms for the duration of a block, then the caller's setting.
    On CPU, index_add_/index_put_ otherwise accumulate in a thread-dependent order, and runs
    with the same seed drift apart in the last bits (then in the metrics)."""
    import torch
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
