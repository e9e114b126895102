"""Exact near-duplicate search over 64-bit perceptual hashes (uint64, imagehash bit order).

Entry points: `find_pairs_within` (every pair of one set within a Hamming distance),
`find_pairs_between` (queries against references) and `find_groups_within` (group ids without
listing pairs); `group_pairs` and `list_groups` turn a pair list into groups. `search_within`
returns the pairs among unique values (`ValuePairs`), which `count_pairs`, `expand_pairs` and
`summarise_pairs` (groups and pair counts per label pair, never listing the pairs) read.
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

# Cost model, seconds per unit of work on one core (numpy 2.4, 2-core x86-64 VM, fitted by hand to
# timings of every plan for N = 1k..1M, max_distance = 4..16; choices matter, not absolute values).
COST_BRUTE_PAIR = 4.5e-9  # one XOR + popcount + compare in the blocked brute force
COST_BUCKET_PROBE = 10e-9  # one (bucket, flip mask) lookup in a chunk table
COST_ROW = 25e-9  # one (item, partner bucket) row expanded into candidates
COST_CANDIDATE = 18e-9  # one candidate pair gathered, XORed, counted and filtered
COST_PER_MASK = 100e-6  # fixed numpy call overhead per (chunk, flip mask)
COST_TABLE_SLOT = 10e-9  # one of the 2**width slots of a chunk's bucket table, built and freed


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
    found = search_within(hashes, max_distance=max_distance, workers=workers)
    return _pairs_frame(_item_pair_keys(found), hashes, hashes)


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
    rows = [_cross_rows(q_members, q_starts[a], q_counts[a], r_starts[b], r_counts[b])]
    keys = _pair_keys(rows, r_members, n_right=references.size, ordered=False)
    return _pairs_frame(keys, queries, references)


def find_groups_within(
    hashes: np.ndarray, *, max_distance: int, workers: int | None = None
) -> np.ndarray:
    """(N,) int64 group id per hash: connected components of the pairs within `max_distance`.

    Equal to `group_pairs(find_pairs_within(hashes, ...), n_items=N)` but never lists the pairs:
    identical hashes are one node, so 10,000 copies of one hash cost one value, not 50M pairs.
    Groups are numbered 0, 1, ... in the order of their first member.
    """
    return _value_groups(search_within(hashes, max_distance=max_distance, workers=workers))


@dataclass(frozen=True)
class ValuePairs:
    """The pairs found among the unique values of N items, before expanding them to items."""

    a: np.ndarray  # (K,) int64 unique-value index, a < b
    b: np.ndarray  # (K,) int64 unique-value index
    inverse: np.ndarray  # (N,) int64 unique-value index of each item
    counts: np.ndarray  # (U,) int64 items per unique value


@dataclass(frozen=True)
class PairSummary:
    """Groups and pair counts of a search, per item label (e.g. the split), without the pairs."""

    group_ids: np.ndarray  # (N,) int64 group per item, numbered by first member (as group_pairs)
    pairs: np.ndarray  # (L, L) int64 pairs between labels s != t (symmetric); [s, s]: within s
    with_partner: np.ndarray  # (L, L) int64 items of label s with at least one partner of label t

    @property
    def total_pairs(self) -> int:
        return int(np.triu(self.pairs).sum())


def search_within(hashes: np.ndarray, *, max_distance: int, workers: int | None = None) -> ValuePairs:
    """The pairs within `max_distance` among the unique values of `hashes` ((N,) uint64)."""
    hashes = _check_hashes(hashes, "hashes")
    _check_max_distance(max_distance)
    values, inverse, counts = _unique_hashes(hashes)
    a, b, _ = _search_unique(values, None, max_distance=max_distance, workers=workers)
    return ValuePairs(a, b, inverse, counts)


def count_pairs(found: ValuePairs) -> int:
    """Item pairs behind `found`: each value pair's copies times copies, plus pairs of copies."""
    counts = found.counts
    return int((counts[found.a] * counts[found.b]).sum() + (counts * (counts - 1) // 2).sum())


def expand_pairs(found: ValuePairs) -> tuple[np.ndarray, np.ndarray]:
    """(T,) int64 i and (T,) int64 j, i < j, sorted by (i, j): every item pair behind `found`."""
    keys = _item_pair_keys(found)
    if keys.size > 1 and (keys[1:] < keys[:-1]).any():
        keys.sort()
    shift = _key_shift(found.inverse.size)
    return np.right_shift(keys, shift), keys & ((1 << shift) - 1)


def summarise_pairs(found: ValuePairs, labels: np.ndarray, *, n_labels: int | None = None) -> PairSummary:
    """Groups, pairs per label pair and items with a partner per label pair, from value pairs
    alone: exact, and cheap however many item pairs there are (10,000 copies: one value).
    `labels` is (N,) int64 in 0..L-1 (L = `n_labels`, default labels.max() + 1)."""
    labels = np.asarray(labels, dtype=np.int64)
    n_labels = int(labels.max()) + 1 if n_labels is None else n_labels
    copies = np.zeros((found.counts.size, n_labels), np.int64)  # (U, L) items per value and label
    np.add.at(copies, (found.inverse, labels), 1)
    cross = copies[found.a].T @ copies[found.b]  # (L, L) value a's items in s against value b's in t
    within = copies.T @ copies  # (L, L) copies of one value, s != t
    np.fill_diagonal(within, (np.diag(within) - copies.sum(axis=0)) // 2)
    pairs = cross + cross.T - np.diag(np.diag(cross)) + within
    neighbours = np.zeros_like(copies)  # (U, L) items of each label among a value's partner values
    np.add.at(neighbours, found.a, copies[found.b])
    np.add.at(neighbours, found.b, copies[found.a])
    with_partner = np.zeros((n_labels, n_labels), np.int64)
    for s in range(n_labels):
        others = copies.copy()
        others[:, s] -= 1  # an item is not its own partner
        with_partner[s] = copies[:, s] @ ((others > 0) | (neighbours > 0))
    return PairSummary(_value_groups(found), pairs, with_partner)


def _item_pair_keys(found: ValuePairs) -> np.ndarray:
    """(T,) int64 pair keys (see `_pair_keys`) of every item pair behind `found`, i < j."""
    members, starts = _members_by_value(found.inverse, found.counts)
    a, b, counts = found.a, found.b, found.counts
    rows = [_cross_rows(members, starts[a], counts[a], starts[b], counts[b]), _copy_rows(members, starts, counts)]
    return _pair_keys(rows, members, n_right=found.inverse.size, ordered=True)


def _value_groups(found: ValuePairs) -> np.ndarray:
    return _number_by_first_member(_components(found.a, found.b, found.counts.size)[found.inverse])


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
    for n_chunks in range(math.ceil(64 / MAX_TABLE_BITS), 17):  # chunks of 24 down to 4 bits
        bits, radii = _split_chunks(n_chunks, max_distance)
        cost = _multi_index_cost(bits, radii, n_left, n_right, self_join)
        plans.append(SearchPlan("multi-index", bits, radii, cost))
    return min(plans, key=lambda plan: plan.estimated_seconds)


# --- validation and dedupe ---------------------------------------------------------------------


def _check_hashes(hashes: np.ndarray, name: str) -> np.ndarray:
    if isinstance(hashes, np.ndarray) and hashes.size >= 2**31:
        raise ValueError(f"{name} holds {hashes.size:,} hashes; at most 2**31 - 1 are supported")
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
    """Chunk widths (wider first) and radii with sum(radius + 1) == max_distance + 1.

    With more chunks than max_distance + 1, the extra ones get radius -1 (unused): the
    max_distance differing bits still leave one of the used chunks unchanged.
    """
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
        cost += slots * COST_TABLE_SLOT * (1 if self_join else 2)
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
    offsets: np.ndarray  # (2**width + 1,) int64 start of each chunk value's bucket in the order
    occupied: np.ndarray  # (2**width,) bool whether a chunk value has a bucket (4 MiB at 22 bits)
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
    n_tasks = 4 * (workers or os.cpu_count() or 1)
    if plan.method == "brute":
        tasks = _brute_tasks(left, left if self_join else right, max_distance, self_join, n_tasks)
    else:
        tasks = _multi_index_tasks(left, right, plan, max_distance, n_tasks)
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


def _brute_tasks(left, right, max_distance, self_join, n_tasks) -> list:
    """Blocks of rows dealt round-robin to `n_tasks` tasks (self-join blocks shrink down the list)."""
    rows = max(1, min(BRUTE_BLOCK_ROWS, BATCH_CANDIDATES // right.size))
    starts = list(range(0, left.size, rows))
    return [
        lambda mine=starts[k::n_tasks]: _compare_blocks(left, right, mine, rows, max_distance, self_join)
        for k in range(min(n_tasks, len(starts)))
    ]


def _compare_blocks(left, right, starts, rows, max_distance, self_join):
    """Pairs between left[start:start + rows] and right, for each start; scratch reused per block."""
    scratch = (np.empty(rows * right.size, np.uint64), np.empty(rows * right.size, np.uint8))
    parts = [_compare_block(left, right, start, rows, max_distance, self_join, scratch) for start in starts]
    return tuple(np.concatenate(p) for p in zip(*parts))


def _compare_block(left, right, start, rows, max_distance, self_join, scratch):
    """Pairs between left[start:start + rows] and right (self-join: right[start:], column > row)."""
    block = left[start : start + rows, None]
    first_column = start if self_join else 0
    shape = (block.size, right.size - first_column)
    diff = np.bitwise_xor(block, right[None, first_column:], out=scratch[0][: shape[0] * shape[1]].reshape(shape))
    dist = np.bitwise_count(diff, out=scratch[1][: diff.size].reshape(shape))  # (rows, cols) uint8
    r, c = np.nonzero(dist <= max_distance)
    if self_join:
        keep = c > r
        r, c = r[keep], c[keep]
    return r + start, c + first_column, dist[r, c]


def _multi_index_tasks(left, right, plan: SearchPlan, max_distance, n_tasks) -> list:
    """Up to `n_tasks` tasks per chunk, each a slice of the chunk's flip masks."""
    tasks, earlier, shift = [], [], 0
    for width, radius in zip(plan.chunk_bits, plan.chunk_radii):
        if radius >= 0:
            left_table = _build_chunk_table(left, shift=shift, width=width)
            right_table = left_table if right is None else _build_chunk_table(right, shift=shift, width=width)
            masks = _flip_masks(width, radius)
            for part in np.array_split(masks, min(masks.size, n_tasks)):
                tasks.append(
                    lambda l=left_table, r=right_table, m=part, e=tuple(earlier): _probe_chunk(
                        l, r, m, e, max_distance=max_distance, self_join=right is None
                    )
                )
            earlier.append((left_table.chunk_mask, radius))
        shift += width
    return tasks


def _build_chunk_table(values: np.ndarray, *, shift: int, width: int) -> _ChunkTable:
    chunk_keys = ((values >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int32)
    order = np.argsort(chunk_keys)
    sizes = np.bincount(chunk_keys, minlength=1 << width)  # (2**width,) int64
    offsets = np.empty(sizes.size + 1, np.int64)
    offsets[0] = 0
    np.cumsum(sizes, out=offsets[1:])
    keys = np.flatnonzero(sizes)
    return _ChunkTable(
        chunk_mask=np.uint64(((1 << width) - 1) << shift),
        order=order,
        sorted_values=values[order],
        offsets=offsets,
        occupied=sizes > 0,
        keys=keys,
        key_starts=offsets[keys],
        key_counts=sizes[keys],
    )


def _flip_masks(width: int, radius: int) -> np.ndarray:
    """(M,) int64 every `width`-bit mask with at most `radius` ones, ascending (0 first)."""
    masks = [sum(1 << bit for bit in ones) for k in range(radius + 1) for ones in combinations(range(width), k)]
    return np.sort(np.array(masks, dtype=np.int64))


def _probe_chunk(left, right, masks, earlier, *, max_distance, self_join):
    """Pairs whose chunk values differ by one of `masks` (ascending) and no earlier chunk found."""
    parts, top_bit, buckets = [], None, (left.keys, left.key_starts, left.key_counts)
    scratch = (np.empty(left.keys.size, np.int64), np.empty(left.keys.size, bool))  # reused per mask
    for mask in masks.tolist():
        if self_join and mask == 0:
            x_pos, y_start, y_len = _same_bucket_rows(left)
        else:
            if self_join and mask.bit_length() != top_bit:
                top_bit = mask.bit_length()  # ascending masks: each top bit's masks are adjacent
                buckets = _buckets_without_bit(left, top_bit - 1)
            x_pos, y_start, y_len = _partner_bucket_rows(buckets, right, mask, scratch)
        for batch in _split_rows(y_len):
            parts.append(
                _check_candidates(left, right, x_pos[batch], y_start[batch], y_len[batch], earlier, max_distance)
            )
    return tuple(np.concatenate(p) for p in zip(*parts)) if parts else _empty_pairs()


def _buckets_without_bit(table: _ChunkTable, bit: int):
    """(keys, starts, counts) of the buckets whose chunk value has `bit` clear.

    For a mask whose highest one is `bit`, these are exactly the buckets with key < key ^ mask,
    so a self-join visits each unordered bucket pair once and reads half the buckets.
    """
    keep = np.flatnonzero((table.keys & (1 << bit)) == 0)
    return table.keys[keep], table.key_starts[keep], table.key_counts[keep]


def _same_bucket_rows(table: _ChunkTable):
    """Rows (x position, first partner position, partner count) for pairs inside one bucket."""
    x_pos = np.arange(table.order.size)
    y_len = np.repeat(table.key_starts + table.key_counts, table.key_counts) - x_pos - 1  # later members
    keep = np.flatnonzero(y_len > 0)
    return x_pos[keep], x_pos[keep] + 1, y_len[keep]


def _partner_bucket_rows(buckets, right: _ChunkTable, mask: int, scratch):
    """Rows (x position, first partner position, partner count) for buckets `mask` apart."""
    keys, starts, counts = buckets
    partner = np.bitwise_xor(keys, mask, out=scratch[0][: keys.size])  # reused: no page faults
    found = np.flatnonzero(np.take(right.occupied, partner, out=scratch[1][: keys.size]))
    partner = partner[found]
    y_start = right.offsets[partner]
    y_len = right.offsets[partner + 1] - y_start
    owner, x_pos = _ragged_ranges(starts[found], counts[found])
    return x_pos, y_start[owner], y_len[owner]


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


def _cross_rows(a_members, a_starts, a_counts, b_starts, b_counts):
    """Rows (item x, first partner position, partner count): each member of value a[k] against value b[k]."""
    owner, a_pos = _ragged_ranges(a_starts, a_counts)
    return a_members[a_pos], b_starts[owner], b_counts[owner]


def _copy_rows(members, starts, counts):
    """Rows (item x, first partner position, partner count): each copy of a value against its later copies."""
    copied = np.flatnonzero(counts > 1)
    owner, x_pos = _ragged_ranges(starts[copied], counts[copied])
    value_end = (starts + counts)[copied][owner]
    return members[x_pos], x_pos + 1, value_end - x_pos - 1


def _pair_keys(rows, partner_members, *, n_right: int, ordered: bool) -> np.ndarray:
    """(T,) int64 key (i << shift) | j of every (row item, partner) pair; `ordered` swaps to i < j.

    Written batch by batch into one array: 50M pairs of one repeated hash need 400 MiB, not 2 GiB.
    """
    x, y_start, y_len = (np.concatenate(part) for part in zip(*rows))
    keys, filled, shift = np.empty(int(y_len.sum()), np.int64), 0, _key_shift(n_right)
    for batch in _split_rows(y_len):
        owner, y_pos = _ragged_ranges(y_start[batch], y_len[batch])
        i, j = x[batch][owner], partner_members[y_pos]
        if ordered:
            i, j = np.minimum(i, j), np.maximum(i, j)
        np.left_shift(i, shift, out=keys[filled : filled + i.size])
        keys[filled : filled + i.size] |= j
        filled += i.size
    return keys


def _key_shift(n_right: int) -> int:
    """Bits for j in a pair key; i < 2**31 and j < 2**32 keep the key inside int64."""
    return max(1, (n_right - 1).bit_length())


def _pairs_frame(keys: np.ndarray, left_hashes, right_hashes) -> pd.DataFrame:
    """The pairs behind `keys` (consumed) sorted by (i, j), with distances from the hashes."""
    if keys.size > 1 and (keys[1:] < keys[:-1]).any():  # already sorted when one value repeats
        keys.sort()  # in place
    shift = _key_shift(right_hashes.size)
    j = keys & ((1 << shift) - 1)
    i = np.right_shift(keys, shift, out=keys)
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
