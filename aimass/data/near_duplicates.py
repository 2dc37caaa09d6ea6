"""Near duplicates across splits: images whose 64-bit dHash (profile.difference_hashes) differs in at most `radius`
bits, found with multi-index hashing (Norouzi, Punjani and Fleet, "Fast exact search in Hamming space with
multi-index hashing", 2014).

Each hash is cut into radius + 1 disjoint chunks. Two hashes within `radius` bits of each other differ in at most
`radius` chunks, so they agree exactly on at least one (the pigeonhole principle): only pairs sharing a chunk value
are ever compared, found by binary search in each chunk's sorted values, and the search is exact, not approximate.
10,000 test images against 54,000 training images take well under a second at the radii that make sense for a
64-bit hash (docs/PERFORMANCE.md has the figures and how the default radius was chosen).
"""
from __future__ import annotations

import numpy as np

HASH_BITS = 64
MAX_RADIUS = 12  # beyond this a 64-bit dHash matches unrelated images (docs/PERFORMANCE.md)
_QUERY_BLOCK = 2_048  # queries compared at a time: bounds the candidate pairs held in memory


def nearest_within(queries: np.ndarray, reference: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash, the index of the closest reference hash within `radius` bits and that distance.

    Args:
        queries: uint64 hashes (Q,).
        reference: uint64 hashes (R,).
        radius: the largest Hamming distance that counts, 0..MAX_RADIUS.

    Returns:
        (match, distance), each (Q,): match is -1 and distance radius + 1 where no reference hash is that close; a
        tie goes to the lowest reference index.
    """
    if not 0 <= radius <= MAX_RADIUS:
        raise ValueError(f"radius {radius} is outside 0..{MAX_RADIUS}")
    queries, reference = np.asarray(queries, dtype=np.uint64), np.asarray(reference, dtype=np.uint64)
    match = np.full(len(queries), -1, dtype=np.int64)
    distance = np.full(len(queries), radius + 1, dtype=np.int64)
    if len(queries) == 0 or len(reference) == 0:
        return match, distance
    indexes = [_ChunkIndex(reference, offset, width) for offset, width in _chunks(radius)]
    for start in range(0, len(queries), _QUERY_BLOCK):
        block = queries[start:start + _QUERY_BLOCK]
        query_rows, reference_rows = _candidates(block, indexes)
        if len(query_rows) == 0:
            continue
        bits = np.bitwise_count(block[query_rows] ^ reference[reference_rows]).astype(np.int64)
        close = bits <= radius
        query_rows, reference_rows, bits = query_rows[close], reference_rows[close], bits[close]
        # The closest per query (then the lowest reference index): sort, keep each query's first.
        order = np.lexsort((reference_rows, bits, query_rows))
        query_rows, reference_rows, bits = query_rows[order], reference_rows[order], bits[order]
        first = np.unique(query_rows, return_index=True)[1]
        match[start + query_rows[first]] = reference_rows[first]
        distance[start + query_rows[first]] = bits[first]
    return match, distance


def _chunks(radius: int) -> list[tuple[int, int]]:
    """(bit offset, width) of radius + 1 chunks covering the 64 bits, as equal as they can be."""
    count = radius + 1
    widths = [HASH_BITS // count + (1 if k < HASH_BITS % count else 0) for k in range(count)]
    offsets = np.cumsum([0, *widths[:-1]])
    return [(int(offset), width) for offset, width in zip(offsets, widths)]


class _ChunkIndex:
    """One chunk of every reference hash, sorted, for binary search."""

    def __init__(self, reference: np.ndarray, offset: int, width: int):
        self.offset, self.mask = np.uint64(offset), np.uint64((1 << width) - 1)
        keys = (reference >> self.offset) & self.mask
        self.order = np.argsort(keys, kind="stable")
        self.sorted_keys = keys[self.order]

    def matches(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query row, reference index) of every pair that agrees on this chunk."""
        keys = (queries >> self.offset) & self.mask
        low = np.searchsorted(self.sorted_keys, keys, side="left")
        high = np.searchsorted(self.sorted_keys, keys, side="right")
        counts = high - low
        query_rows = np.repeat(np.arange(len(queries)), counts)
        # Position within each query's run of equal keys, added to where the run starts.
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return query_rows, self.order[np.repeat(low, counts) + within]


def _candidates(queries: np.ndarray, indexes: list[_ChunkIndex]) -> tuple[np.ndarray, np.ndarray]:
    """Every (query row, reference index) pair that shares at least one chunk; a pair sharing several appears once
    per chunk (keeping the closest per query makes repeats harmless, and removing them costs more than they do)."""
    found = [index.matches(queries) for index in indexes]
    return np.concatenate([rows for rows, _ in found]), np.concatenate([rows for _, rows in found])
