"""Exact near-duplicate search over 64-bit perceptual hashes (uint64, imagehash bit order).

Entry points: `find_pairs_within` (every pair of one set within a Hamming distance),
`find_pairs_between` (queries against references) and `find_groups_within` (group ids without
listing pairs); `group_pairs` and `list_groups` turn a pair list into groups.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# How the search works. Identical hashes are merged first, so a cluster of k copies costs one value,
# not k^2/2 comparisons; pairs are expanded back to item indices only at the end. The unique values
# are then searched either by blocked brute force (small inputs) or by multi-index hashing: the 64
# bits are cut into m chunks, chunk c is given a radius r_c with sum(r_c + 1) >= max_distance + 1,
# so by pigeonhole two hashes within max_distance agree to within r_c on at least one chunk c.
# Per chunk, values are bucketed by chunk value and each bucket is compared with the buckets at
# chunk distance <= r_c; a pair is kept in the first chunk where it qualifies, so it appears once.
# `plan_search` picks m (or brute force) from a cost model calibrated on a 2-core x86 machine.

MAX_TABLE_BITS = 24  # widest chunk: a bucket table of 2**24 + 1 int64 offsets is 128 MiB
BATCH_CANDIDATES = 1 << 21  # candidate pairs per numpy batch: bounds the temporaries (~100 MiB)
BRUTE_BLOCK_ROWS = 256  # rows per brute-force block: (256, U) uint64 XOR temporaries

# Cost model, seconds per unit of work (measured with numpy 2.4 on one core).
COST_BRUTE_PAIR = 1.5e-9  # one XOR + popcount + compare in the blocked brute force
COST_BUCKET_PROBE = 6e-9  # one (bucket, flip mask) lookup in a chunk table
COST_ROW = 15e-9  # one (item, partner bucket) row expanded into candidates
COST_CANDIDATE = 12e-9  # one candidate pair gathered, XORed, counted and filtered
COST_PER_MASK = 60e-6  # fixed numpy call overhead per (chunk, flip mask)


@dataclass(frozen=True)
class SearchPlan:
    """How `_search_unique` will compare the unique hash values."""

    method: str  # "brute" or "multi-index"
    chunk_bits: tuple[int, ...]  # width of each chunk in bits, low bits first; sums to 64
    chunk_radii: tuple[int, ...]  # Hamming radius searched per chunk; -1 means the chunk is unused
    estimated_seconds: float  # cost-model estimate on one core, for reports only


def find_pairs_within(
    hashes: np.ndarray, *, max_distance: int, workers: int | None = None
) -> pd.DataFrame:
    """Every pair of `hashes` at Hamming distance <= `max_distance`, each once.

    `hashes` is a (N,) uint64 array. Returns a DataFrame sorted by (i, j) with columns
    `i`, `j` (int64 positions in `hashes`, i < j) and `distance` (uint8, 0..64).
    The result is exact: the same pair set as comparing all N(N-1)/2 pairs.
    `workers` threads share the search (default: all CPUs).
    """
    hashes = _check_hashes(hashes, "hashes")
    _check_max_distance(max_distance)
    values, inverse, counts = _unique_hashes(hashes)
    a, b, _ = _search_unique(values, None, max_distance=max_distance, workers=workers)
    members, starts = _members_by_value(inverse, counts)
    return _pairs_frame(*_expand_self_pairs(a, b, members, starts, counts), hashes, hashes)


def find_pairs_between(
    queries: np.ndarray,
    references: np.ndarray,
    *,
    max_distance: int,
    workers: int | None = None,
) -> pd.DataFrame:
    """Every (query, reference) pair at Hamming distance <= `max_distance` (e.g. test vs train).

    Both inputs are uint64 arrays. Returns a DataFrame sorted by (i, j) with columns `i` (int64
    position in `queries`), `j` (int64 position in `references`) and `distance` (uint8).
    """
    queries = _check_hashes(queries, "queries")
    references = _check_hashes(references, "references")
    _check_max_distance(max_distance)
    q_values, q_inverse, q_counts = _unique_hashes(queries)
    r_values, r_inverse, r_counts = _unique_hashes(references)
    a, b, _ = _search_unique(q_values, r_values, max_distance=max_distance, workers=workers)
    q_members, q_starts = _members_by_value(q_inverse, q_counts)
    r_members, r_starts = _members_by_value(r_inverse, r_counts)
    pairs = _expand_cross(q_members, q_starts[a], q_counts[a], r_members, r_starts[b], r_counts[b])
    return _pairs_frame(*pairs, queries, references)


def find_groups_within(
    hashes: np.ndarray, *, max_distance: int, workers: int | None = None
) -> np.ndarray:
    """(N,) int64 group id per hash: connected components of the pairs within `max_distance`.

    Equal to `group_pairs(find_pairs_within(hashes, ...), n_items=N)` but never lists the pairs:
    identical hashes are one node, so 10,000 copies of one hash cost one value, not 50M pairs.
    Groups are numbered 0, 1, ... in the order of their first member.
    """
    hashes = _check_hashes(hashes, "hashes")
    _check_max_distance(max_distance)
    values, inverse, _ = _unique_hashes(hashes)
    a, b, _ = _search_unique(values, None, max_distance=max_distance, workers=workers)
    return _number_by_first_member(_components(a, b, values.size)[inverse])


def group_pairs(pairs: pd.DataFrame, *, n_items: int) -> np.ndarray:
    """(n_items,) int64 group id per item: connected components of the pairs' `i`-`j` edges.

    Items in no pair are groups of one. Groups are numbered 0, 1, ... in the order of their
    first (lowest-index) member.
    """
    i = pairs["i"].to_numpy(dtype=np.int64)
    j = pairs["j"].to_numpy(dtype=np.int64)
    if i.size and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n_items):
        raise ValueError(f"pairs hold an index outside 0..{n_items - 1} (n_items={n_items})")
    return _number_by_first_member(_components(i, j, n_items))


def list_groups(group_ids: np.ndarray, *, min_size: int = 2) -> pd.DataFrame:
    """The groups with at least `min_size` members, largest first (ties: lower group id first).

    Columns: `group` (int64 id from `group_pairs`), `size` (int64), `members` (int64 array of
    item indices, ascending).
    """
    group_ids = np.asarray(group_ids, dtype=np.int64)
    order = np.argsort(group_ids, kind="stable")  # members of each group, ascending
    ids, starts, sizes = np.unique(group_ids[order], return_index=True, return_counts=True)
    keep = np.flatnonzero(sizes >= min_size)
    keep = keep[np.lexsort((ids[keep], -sizes[keep]))]
    members = [order[starts[k] : starts[k] + sizes[k]] for k in keep]
    return pd.DataFrame(
        {"group": ids[keep], "size": sizes[keep].astype(np.int64), "members": pd.Series(members, dtype=object)}
    )


def plan_search(
    n_left: int, n_right: int | None = None, *, max_distance: int
) -> SearchPlan:
    """The cheapest plan, by the cost model, for `n_left` unique values against `n_right`.

    `n_right=None` means a self-join (each unordered pair once).
    """
    self_join = n_right is None
    n_right = n_left if self_join else n_right
    brute = SearchPlan("brute", (64,), (max_distance,), _brute_cost(n_left, n_right, self_join))
    plans = [brute]
    for n_chunks in range(math.ceil(64 / MAX_TABLE_BITS), 65):
        bits, radii = _split_chunks(n_chunks, max_distance)
        if sum(r >= 0 for r in radii) < n_chunks and n_chunks > 3:
            break  # more chunks than max_distance + 1 only adds unused ones
        cost = _multi_index_cost(bits, radii, n_left, n_right, self_join)
        plans.append(SearchPlan("multi-index", bits, radii, cost))
    return min(plans, key=lambda plan: plan.estimated_seconds)


# --- validation and dedupe ---------------------------------------------------------------------


def _check_hashes(hashes: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(hashes, np.ndarray) or hashes.dtype != np.uint64 or hashes.ndim != 1:
        described = (
            f"a {hashes.ndim}-d {hashes.dtype} array" if isinstance(hashes, np.ndarray) else type(hashes).__name__
        )
        raise TypeError(
            f"{name} must be a 1-d numpy uint64 array, got {described}; build it with "
            "np.array(values, dtype=np.uint64) (or .view(np.uint64) for signed int64 storage)"
        )
    return hashes


def _check_max_distance(max_distance: int) -> None:
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)):
        raise TypeError(f"max_distance must be an integer in 0..64, got {max_distance!r}")
    if not 0 <= max_distance <= 64:
        raise ValueError(f"max_distance must be in 0..64, got {max_distance}")


def _unique_hashes(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U,) sorted unique values, (N,) value index per hash, (U,) copies per value."""
    values, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    return values, inverse.astype(np.int64).reshape(-1), counts.astype(np.int64)


def _members_by_value(inverse: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) item indices grouped by value, ascending within a value; (U,) start of each value."""
    members = np.argsort(inverse, kind="stable").astype(np.int64)
    return members, np.cumsum(counts) - counts


# --- planning ----------------------------------------------------------------------------------


def _split_chunks(n_chunks: int, max_distance: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chunk widths (wider first) and radii with sum(radius + 1) == max_distance + 1."""
    bits = [64 // n_chunks + (c < 64 % n_chunks) for c in range(n_chunks)]
    units = max_distance + 1  # one unit = one step of (radius + 1); wider chunks get the extra
    radii = [units // n_chunks + (c < units % n_chunks) - 1 for c in range(n_chunks)]
    return tuple(bits), tuple(radii)


def _ball_size(bits: int, radius: int) -> int:
    """Number of `bits`-bit flip masks with at most `radius` ones."""
    return sum(math.comb(bits, k) for k in range(radius + 1))


def _brute_cost(n_left: int, n_right: int, self_join: bool) -> float:
    return n_left * n_right * (0.5 if self_join else 1.0) * COST_BRUTE_PAIR


def _multi_index_cost(bits, radii, n_left, n_right, self_join) -> float:
    """Seconds on one core, assuming uniformly spread values."""
    cost = 0.0
    for width, radius in zip(bits, radii):
        if radius < 0:
            continue
        if width > MAX_TABLE_BITS or radius >= width:
            return math.inf
        masks = _ball_size(width, radius) * (0.5 if self_join else 1.0)
        slots = 2.0**width
        left_buckets = slots * -math.expm1(-n_left / slots)
        hit = -math.expm1(-n_right / slots)  # chance a probed bucket is not empty
        cost += masks * (COST_PER_MASK + left_buckets * COST_BUCKET_PROBE)
        cost += masks * n_left * hit * COST_ROW + masks * n_left * n_right / slots * COST_CANDIDATE
    return cost


# --- search over unique values -----------------------------------------------------------------


@dataclass(frozen=True)
class _ChunkTable:
    """One chunk's bucket index over a set of unique values."""

    chunk_mask: np.uint64  # the chunk's bits in the full 64-bit hash
    order: np.ndarray  # (U,) int64 value positions sorted by chunk value
    sorted_values: np.ndarray  # (U,) uint64 values in that order
    sorted_keys: np.ndarray  # (U,) int64 chunk value of each sorted value
    offsets: np.ndarray  # (2**width + 1,) int64 start of each chunk value's bucket in the order
    keys: np.ndarray  # (B,) int64 the non-empty chunk values, ascending
    key_starts: np.ndarray  # (B,) int64 their bucket starts
    key_counts: np.ndarray  # (B,) int64 their bucket sizes


def _search_unique(
    left: np.ndarray,
    right: np.ndarray | None,
    *,
    max_distance: int,
    workers: int | None,
    plan: SearchPlan | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K,) int64 `a`, (K,) int64 `b`, (K,) uint8 distance of every pair within `max_distance`.

    `a` indexes `left`, `b` indexes `right`; `right=None` is a self-join with a < b.
    Both inputs hold unique values; `plan` overrides `plan_search` (tests force each path).
    """
    self_join = right is None
    n_right = left.size if self_join else right.size
    if left.size == 0 or n_right == 0:
        return _empty_pairs()
    plan = plan or plan_search(left.size, None if self_join else n_right, max_distance=max_distance)
    if plan.method == "brute":
        tasks = _brute_tasks(left, left if self_join else right, max_distance, self_join)
    else:
        tasks = _multi_index_tasks(left, right, plan, max_distance, workers or os.cpu_count() or 1)
    results = _run_tasks(tasks, workers)
    a, b, dist = (np.concatenate(parts) for parts in zip(*results)) if results else _empty_pairs()
    if self_join:
        a, b = np.minimum(a, b), np.maximum(a, b)
    return a, b, dist


def _empty_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8)


def _run_tasks(tasks: list, workers: int | None) -> list:
    """Each task's result, in task order; numpy releases the GIL, so threads use the cores."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda task: task(), tasks))


def _brute_tasks(left, right, max_distance, self_join) -> list:
    rows = max(1, min(BRUTE_BLOCK_ROWS, BATCH_CANDIDATES // right.size))
    return [
        lambda start=start: _compare_block(left, right, start, min(start + rows, left.size), max_distance, self_join)
        for start in range(0, left.size, rows)
    ]


def _compare_block(left, right, start, stop, max_distance, self_join):
    """Pairs between left[start:stop] and right (self-join: only right[start:], column > row)."""
    first_column = start if self_join else 0
    dist = np.bitwise_count(left[start:stop, None] ^ right[None, first_column:])  # (rows, cols) uint8
    rows, cols = np.nonzero(dist <= max_distance)
    if self_join:
        keep = cols > rows
        rows, cols = rows[keep], cols[keep]
    return rows + start, cols + first_column, dist[rows, cols]


def _multi_index_tasks(left, right, plan: SearchPlan, max_distance, workers) -> list:
    """One task per (chunk, slice of flip masks), about four per worker per chunk."""
    tasks, earlier, shift = [], [], 0
    for width, radius in zip(plan.chunk_bits, plan.chunk_radii):
        if radius >= 0:
            left_table = _build_chunk_table(left, shift=shift, width=width)
            right_table = left_table if right is None else _build_chunk_table(right, shift=shift, width=width)
            masks = _flip_masks(width, radius)
            for part in np.array_split(masks, min(masks.size, 4 * workers)):
                tasks.append(
                    lambda l=left_table, r=right_table, m=part, e=tuple(earlier): _probe_chunk(
                        l, r, m, e, max_distance=max_distance, self_join=right is None
                    )
                )
            earlier.append((left_table.chunk_mask, radius))
        shift += width
    return tasks


def _build_chunk_table(values: np.ndarray, *, shift: int, width: int) -> _ChunkTable:
    chunk_keys = ((values >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
    order = np.argsort(chunk_keys, kind="stable")
    sizes = np.bincount(chunk_keys, minlength=1 << width)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    keys = np.flatnonzero(sizes)
    return _ChunkTable(
        chunk_mask=np.uint64(((1 << width) - 1) << shift),
        order=order,
        sorted_values=values[order],
        sorted_keys=chunk_keys[order],
        offsets=offsets,
        keys=keys,
        key_starts=offsets[keys],
        key_counts=sizes[keys],
    )


def _flip_masks(width: int, radius: int) -> np.ndarray:
    """(M,) int64 every `width`-bit mask with at most `radius` ones, 0 first."""
    masks = [sum(1 << bit for bit in ones) for k in range(radius + 1) for ones in combinations(range(width), k)]
    return np.array(masks, dtype=np.int64)


def _probe_chunk(left, right, masks, earlier, *, max_distance, self_join):
    """Pairs whose chunk values differ by one of `masks` and that no earlier chunk found."""
    parts = []
    for mask in masks:
        if self_join and mask == 0:
            x_pos, y_start, y_len = _same_bucket_rows(left)
        else:
            x_pos, y_start, y_len = _partner_bucket_rows(left, right, int(mask), self_join)
        for batch in _split_rows(y_len):
            parts.append(
                _check_candidates(left, right, x_pos[batch], y_start[batch], y_len[batch], earlier, max_distance)
            )
    return tuple(np.concatenate(p) for p in zip(*parts)) if parts else _empty_pairs()


def _same_bucket_rows(table: _ChunkTable):
    """Rows (x position, first partner position, partner count) for pairs inside one bucket."""
    x_pos = np.arange(table.order.size)
    y_len = table.offsets[table.sorted_keys + 1] - x_pos - 1  # later members of x's bucket
    keep = np.flatnonzero(y_len > 0)
    return x_pos[keep], x_pos[keep] + 1, y_len[keep]


def _partner_bucket_rows(left: _ChunkTable, right: _ChunkTable, mask: int, self_join: bool):
    """Rows (x position, first partner position, partner count) for buckets `mask` apart."""
    partner = left.keys ^ mask
    y_start = right.offsets[partner]
    y_len = right.offsets[partner + 1] - y_start
    keep = y_len > 0
    if self_join:
        keep &= left.keys < partner  # each unordered bucket pair once
    kept = np.flatnonzero(keep)
    owner, x_pos = _ragged_ranges(left.key_starts[kept], left.key_counts[kept])
    return x_pos, y_start[kept][owner], y_len[kept][owner]


def _split_rows(y_len: np.ndarray) -> list:
    """Slices of rows holding about BATCH_CANDIDATES candidates each."""
    total = np.cumsum(y_len)
    if total.size == 0:
        return []
    cuts = np.searchsorted(total, np.arange(BATCH_CANDIDATES, total[-1], BATCH_CANDIDATES), side="right")
    bounds = [0, *np.unique(cuts).tolist(), y_len.size]
    return [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


def _check_candidates(left, right, x_pos, y_start, y_len, earlier, max_distance):
    """Candidate pairs within `max_distance` and outside every earlier chunk's radius."""
    owner, y_pos = _ragged_ranges(y_start, y_len)
    x_pos = x_pos[owner]
    diff = left.sorted_values[x_pos] ^ right.sorted_values[y_pos]
    hit = np.flatnonzero(np.bitwise_count(diff) <= max_distance)
    for chunk_mask, radius in earlier:  # found there already
        hit = hit[np.bitwise_count(diff[hit] & chunk_mask) > radius]
    dist = np.bitwise_count(diff[hit])
    return left.order[x_pos[hit]], right.order[y_pos[hit]], dist


def _ragged_ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ranges [starts[k], starts[k] + lengths[k]): (T,) owner k and (T,) position."""
    owner = np.repeat(np.arange(lengths.size), lengths)
    first_slot = np.cumsum(lengths) - lengths  # (K,) where range k begins in the output
    return owner, np.arange(owner.size) + (starts - first_slot)[owner]


# --- from unique-value pairs to item pairs and groups ------------------------------------------


def _expand_cross(a_members, a_starts, a_counts, b_members, b_starts, b_counts):
    """(T,) i, (T,) j: every member of value a[k] with every member of value b[k], for each k."""
    owner, a_pos = _ragged_ranges(a_starts, a_counts)
    owner, b_pos = _ragged_ranges(b_starts[owner], b_counts[owner])
    return a_members[a_pos[owner]], b_members[b_pos]


def _expand_self_pairs(a, b, members, starts, counts):
    """(T,) i < j item pairs: members of distinct values a[k], b[k], plus copies of one value."""
    i, j = _expand_cross(members, starts[a], counts[a], members, starts[b], counts[b])
    i, j = np.minimum(i, j), np.maximum(i, j)
    copied = np.flatnonzero(counts > 1)
    owner, x_pos = _ragged_ranges(starts[copied], counts[copied])
    value_end = (starts + counts)[copied][owner]
    owner, y_pos = _ragged_ranges(x_pos + 1, value_end - x_pos - 1)  # later copies of the value
    return np.concatenate([i, members[x_pos[owner]]]), np.concatenate([j, members[y_pos]])


def _pairs_frame(i, j, left_hashes, right_hashes) -> pd.DataFrame:
    """The pairs sorted by (i, j), with their distance recomputed from the hashes."""
    key = i * right_hashes.size + j  # fits int64: sizes are far below 2**31
    del i, j
    key.sort()
    i, j = np.divmod(key, right_hashes.size)
    del key
    dist = np.empty(i.size, np.uint8)
    for lo in range(0, i.size, BATCH_CANDIDATES):
        hi = lo + BATCH_CANDIDATES
        dist[lo:hi] = np.bitwise_count(left_hashes[i[lo:hi]] ^ right_hashes[j[lo:hi]])
    return pd.DataFrame({"i": i, "j": j, "distance": dist}, copy=False)


def _components(a: np.ndarray, b: np.ndarray, n_nodes: int) -> np.ndarray:
    """(n_nodes,) component label per node of the undirected graph with edges a[k]-b[k]."""
    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(n_nodes, n_nodes)).tocsr()
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _number_by_first_member(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0, 1, ... in the order each label first appears."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[inverse.reshape(-1)]
