"""Mini-batches of training edges with uniform negatives (torch only: the GPU hosts use it too)."""
from __future__ import annotations

import math
from typing import Any, Dict, Iterator, Optional, Tuple

import torch

from mmsc_dgl.schema import RELATIONS
def full_steps(sizes: Dict[str, int], batch_size: int) -> int:
    """Batches in one pass over the largest relation's edges."""
    return max(1, math.ceil(max(sizes.values()) / batch_size))


def edge_batches(edges: Dict[str, Tuple[torch.Tensor, torch.Tensor]], num_items: int, batch_size: int,
                 negatives: int, generator: torch.Generator, steps_per_epoch: Optional[int] = None,
                 device: Optional[torch.device] = None) -> Iterator[dict]:
    """One epoch of batches ``{"generator", relation: (src, pos, neg [B, negatives])}``.

    Both relations are spread over the same number of steps (the larger relation sets it), so a
    step always holds both.  With ``steps_per_epoch`` below a full pass, an epoch is the first
    ``steps_per_epoch`` batches of a fresh permutation: a random sample at the usual batch size.
    Everything random comes from ``generator`` (CPU), so batches do not depend on the device.
    """
    sizes = {r: int(edges[r][0].numel()) for r in RELATIONS}
    full = full_steps(sizes, batch_size)
    steps = min(full, steps_per_epoch) if steps_per_epoch else full
    perms = {r: torch.randperm(sizes[r], generator=generator) for r in RELATIONS}
    per_step = {r: math.ceil(sizes[r] / full) for r in RELATIONS}
    for step in range(steps):
        batch: Dict[str, Any] = {"generator": generator}
        for r in RELATIONS:
            idx = perms[r][step * per_step[r]: (step + 1) * per_step[r]]
            if idx.numel() == 0:
                continue
            neg = torch.randint(0, num_items, (idx.numel(), negatives), generator=generator)
            src, dst = edges[r]
            batch[r] = tuple(t.to(device) if device is not None else t for t in (src[idx], dst[idx], neg))
        yield batch


class EdgeBatches:
    """The training edges of a run as an epoch source for :class:`~mmsc_dgl.train.trainer.Trainer`:
    ``batches(generator)`` yields one epoch (:func:`edge_batches`), ``len(batches)`` is the
    number of steps in it.

    Args:
        edges: per relation, ``(src, dst)`` int64 tensors.
        num_items: size of the catalog (negatives are drawn from it).
        batch_size: edges per relation per step.
        negatives: sampled negatives per edge.
        steps_per_epoch: cap on the steps of an epoch (None: one full pass).
        device: where batches are moved.
    """

    def __init__(self, edges: Dict[str, Tuple[torch.Tensor, torch.Tensor]], num_items: int, batch_size: int,
                 negatives: int, steps_per_epoch: Optional[int] = None, device: Optional[torch.device] = None):
        self.edges, self.num_items, self.batch_size = edges, num_items, batch_size
        self.negatives, self.steps_per_epoch, self.device = negatives, steps_per_epoch, device

    def __len__(self) -> int:
        full = full_steps({r: int(self.edges[r][0].numel()) for r in RELATIONS}, self.batch_size)
        return min(full, self.steps_per_epoch) if self.steps_per_epoch else full

    def __call__(self, generator: torch.Generator) -> Iterator[dict]:
        return edge_batches(self.edges, self.num_items, self.batch_size, self.negatives, generator,
                            self.steps_per_epoch, self.device)
