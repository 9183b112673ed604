"""splitmix64: the one counter-based hash behind every seeded draw that must not depend on
batching or order (sampled negatives, random-walk steps, tie-breaks)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:
    import torch

_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB

def _signed(value: int) -> int:
    """A uint64 constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def splitmix64(x: Union[np.ndarray, "torch.Tensor"]):
    """The splitmix64 finaliser with wrapping arithmetic.

    A numpy array is hashed as uint64; a torch tensor as int64 holding the same bits (wrapping
    multiplies, masked arithmetic shifts acting as logical shifts), so both give the same bits
    for the same input, on any device.
    """
    if isinstance(x, np.ndarray) or np.isscalar(x):
        x = np.asarray(x, dtype=np.uint64)
        with np.errstate(over="ignore"):
            x = x + np.uint64(_GOLDEN)
            x = (x ^ (x >> np.uint64(30))) * np.uint64(_M1)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(_M2)
            return x ^ (x >> np.uint64(31))
    x = x + _signed(_GOLDEN)
    x = (x ^ ((x >> 30) & 0x3FFFFFFFF)) * _signed(_M1)
    x = (x ^ ((x >> 27) & 0x1FFFFFFFFF)) * _signed(_M2)
    return x ^ ((x >> 31) & 0x1FFFFFFFF)
