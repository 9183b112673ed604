"""Sampled negatives for held-out edges, regenerated from the seed instead of stored.

At a million items, 1000 negatives for each held-out edge would be billions of ids.  Instead,
negative ``j`` of query ``q`` is a counter-based hash of ``(seed, relation, split, q, j,
attempt)``: any subset of queries, in any batch, gets the same rows.  A candidate that is the
query item, one of its true neighbours under the relation (in either direction, held-out edges
included), or a repeat within the row is redrawn with the next ``attempt``.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.hashing import splitmix64

SPLIT_IDS = {"val": 1, "test": 2, "cold": 3, "pairs": 4}


def exclusion_codes(indptr: np.ndarray, indices: np.ndarray, num_items: int) -> np.ndarray:
    """Sorted ``row * num_items + col`` codes of a CSR with sorted columns per row."""
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    codes = rows * np.int64(num_items) + indices.astype(np.int64)
    if len(codes) > 1 and np.any(codes[1:] < codes[:-1]):
        codes = np.sort(codes)
    return codes


class NegativeSampler:
    """Deterministic negatives per (relation, split, query).

    Args:
        num_items: number of items (nodes).
        exclude: per relation, ``(indptr, indices)`` of every item's true neighbours under that
            relation; rows must be sorted.  Use the full graph, held-out edges included, made
            symmetric.
        seed: the split seed.
        num_negatives: negatives per query.  Must not exceed what every query item has
            available (``num_items - 1 - degree``); :func:`max_negatives` computes that bound.

    Example:
        >>> import numpy as np
        >>> indptr, indices = np.array([0, 1, 2, 2, 2]), np.array([1, 0])
        >>> sampler = NegativeSampler(4, {"substitute": (indptr, indices)}, seed=0, num_negatives=2)
        >>> sorted(sampler.sample("substitute", "test", np.array([0]), np.array([0]))[0].tolist())
        [2, 3]
    """

    def __init__(self, num_items: int, exclude: Mapping[str, Tuple[np.ndarray, np.ndarray]],
                 seed: int, num_negatives: int, max_rounds: int = 100_000):
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.num_negatives = int(num_negatives)
        self.max_rounds = max_rounds
        self._codes: Dict[str, np.ndarray] = {
            r: exclusion_codes(indptr, indices, self.num_items) for r, (indptr, indices) in exclude.items()}
        self._degree = {r: np.diff(indptr) for r, (indptr, _) in exclude.items()}
        self._last: Dict[Tuple[str, str], Tuple[bytes, bytes, np.ndarray]] = {}
        """Per (relation, split), the last call's queries and answer: validation asks the same
        every epoch, and drawing 1,000 negatives per query took most of a small epoch."""

    def __repr__(self) -> str:
        return (f"NegativeSampler(num_items={self.num_items:,}, num_negatives={self.num_negatives}, "
                f"seed={self.seed})")

    def neighbours(self, relation: str, items: np.ndarray):
        """The true neighbours under ``relation`` (every split's edges, both directions) of each
        of ``items``: ``(position in items, neighbour)`` int64 arrays, the pairs this sampler
        never draws."""
        items = np.asarray(items, dtype=np.int64)
        codes = self._codes[relation]
        lo = np.searchsorted(codes, items * np.int64(self.num_items))
        hi = np.searchsorted(codes, (items + 1) * np.int64(self.num_items))
        counts = hi - lo
        owner = np.repeat(np.arange(len(items), dtype=np.int64), counts)
        at = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts) \
            + np.repeat(lo, counts)
        return owner, codes[at] - items[owner] * np.int64(self.num_items)

    def _stream(self, relation: str, split: str) -> np.uint64:
        key = splitmix64(np.array([self.seed], dtype=np.uint64))
        key = splitmix64(key ^ np.uint64(RELATIONS.index(relation) + 1))
        return splitmix64(key ^ np.uint64(SPLIT_IDS[split]))[0]

    def _draw(self, stream: np.uint64, query: np.ndarray, slot: np.ndarray, attempt: np.ndarray) -> np.ndarray:
        x = splitmix64(stream ^ query.astype(np.uint64))
        x = splitmix64(x ^ slot.astype(np.uint64))
        x = splitmix64(x ^ attempt.astype(np.uint64))
        return (x % np.uint64(self.num_items)).astype(np.int64)

    def sample(self, relation: str, split: str, query: np.ndarray, src: np.ndarray) -> np.ndarray:
        """Negatives ``[len(query), num_negatives]`` (int64) for the queries ``query`` (their
        row numbers in the split's edge table) whose items are ``src``."""
        query = np.asarray(query, dtype=np.int64)
        src = np.asarray(src, dtype=np.int64)
        if query.shape != src.shape:
            raise ValueError(f"query has shape {query.shape} but src has {src.shape}")
        keys = (query.tobytes(), src.tobytes())
        last = self._last.get((relation, split))
        if last is not None and last[:2] == keys:
            return last[2].copy()
        out = self._sample(relation, split, query, src)
        self._last[(relation, split)] = (*keys, out.copy())
        return out

    def _sample(self, relation: str, split: str, query: np.ndarray, src: np.ndarray) -> np.ndarray:
        k = self.num_negatives
        available = self.num_items - 1 - self._degree[relation][src]
        if len(src) and available.min() < k:
            raise ValueError(f"item {src[np.argmin(available)]} has only {available.min()} possible "
                             f"negatives under {relation!r}, fewer than num_negatives={k}.")
        stream = self._stream(relation, split)
        rows = np.repeat(np.arange(len(query)), k)
        slots = np.tile(np.arange(k, dtype=np.int64), len(query))
        attempt = np.zeros(len(rows), dtype=np.int64)
        out = self._draw(stream, query[rows], slots, attempt).reshape(len(query), k)
        codes = self._codes[relation]
        todo = np.arange(out.size)
        table = None
        if len(query) * self.num_items <= REPEAT_TABLE_CELLS:
            table = np.full((len(query), self.num_items), -1, dtype=np.int16 if k < 2 ** 15 else np.int32)
        for _ in range(self.max_rounds):
            flat = out.reshape(-1)
            r = rows[todo]
            cand = flat[todo]
            bad = cand == src[r]
            pos = np.searchsorted(codes, src[r] * np.int64(self.num_items) + cand)
            pos = np.minimum(pos, len(codes) - 1) if len(codes) else pos
            if len(codes):
                bad |= codes[pos] == src[r] * np.int64(self.num_items) + cand
            bad_flat = np.zeros(out.size, dtype=bool)
            bad_flat[todo[bad]] = True
            # A repeat within a row: keep the lowest slot, redraw the others.
            if table is not None:
                _mark_repeats_with_table(out, todo, bad_flat, table)
            else:
                _mark_repeats_by_sorting(out, np.unique(r), bad_flat)
            todo = np.flatnonzero(bad_flat)
            if len(todo) == 0:
                return out
            attempt[todo] += 1
            flat[todo] = self._draw(stream, query[rows[todo]], slots[todo], attempt[todo])
        raise RuntimeError("negative sampling did not converge; lower num_negatives.")


REPEAT_TABLE_CELLS = 1 << 25
"""Largest query-by-item table of slots the repeat check keeps (int16 below 32,767 negatives:
64 MB); a larger call sorts every touched row whole in every round instead."""


def _mark_repeats_with_table(out: np.ndarray, todo: np.ndarray, bad_flat: np.ndarray, table: np.ndarray) -> None:
    """Set ``bad_flat`` at every slot of ``out`` [Q, k] whose value sits at a lower slot of
    the same row, given that only the slots of ``todo`` (flat indices) were just drawn, and
    keep ``table`` [Q, num_items] (the slot of each row's value among its good slots, -1 for
    none) up to date for the next round.

    The slots outside ``todo`` are distinct within their row (the previous rounds left them
    so), so only a drawn value can repeat: it is compared with the other drawn values of its
    row (a sort of the drawn slots only) and with the row's kept values (``table``).  The
    cost is the drawn slots', not the rows'."""
    k = out.shape[1]
    flat = out.reshape(-1)
    row = todo // k
    slot = todo - row * k
    value = flat[todo]
    # repeats among the drawn values: all but the lowest slot of each (row, value) (todo is
    # ascending, so a stable sort by (row, value) keeps each group's slots in order)
    key = row * np.int64(table.shape[1]) + value
    order = np.argsort(key, kind="stable")
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order[1:]] != key[order[:-1]]
    bad_flat[todo[order[~first]]] = True
    # each drawn value's lowest slot against the slot the same value holds among the row's
    # kept values: the higher of the two is the repeat
    lead = order[first]
    held = table[row[lead], value[lead]].astype(np.int64)
    clash = held >= 0
    lead, held = lead[clash], held[clash]
    drawn_later = slot[lead] > held
    bad_flat[todo[lead[drawn_later]]] = True
    evicted = lead[~drawn_later]
    bad_flat[row[evicted] * k + held[~drawn_later]] = True
    table[row[evicted], value[evicted]] = -1
    good = ~bad_flat[todo]
    table[row[good], value[good]] = slot[good]


def _mark_repeats_by_sorting(out: np.ndarray, touched: np.ndarray, bad_flat: np.ndarray) -> None:
    """What :func:`_mark_repeats_with_table` marks, by sorting each row of ``touched``
    whole: every value after its lowest slot (no table; the cost is the rows')."""
    k = out.shape[1]
    block = out[touched]
    order = np.argsort(block, axis=1, kind="stable")
    sorted_block = np.take_along_axis(block, order, axis=1)
    dup_sorted = np.zeros_like(sorted_block, dtype=bool)
    dup_sorted[:, 1:] = sorted_block[:, 1:] == sorted_block[:, :-1]
    dup = np.zeros_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    bad_flat[(touched[:, None] * k + np.arange(k)[None, :])[dup]] = True


def max_negatives(num_items: int, degrees: Mapping[str, np.ndarray],
                  query_items: Mapping[str, Sequence[np.ndarray]]) -> int:
    """The largest ``num_negatives`` every query can be given: ``min(num_items - 1 - degree)``."""
    best = num_items - 1
    for relation, arrays in query_items.items():
        for items in arrays:
            if len(items):
                best = min(best, int(num_items - 1 - degrees[relation][items].max()))
    return best
