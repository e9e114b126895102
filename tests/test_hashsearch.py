"""Tests for core.hashsearch: exact equality with a brute force, edge cases, grouping."""
from __future__ import annotations

import imagehash
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import hashsearch
from core.hashsearch import (
    SearchPlan,
    count_pairs,
    expand_pairs,
    find_groups_within,
    find_pairs_between,
    find_pairs_within,
    group_pairs,
    list_groups,
    plan_search,
    search_within,
    summarise_pairs,
)

TOP_BIT = 1 << 63


def brute_force_pairs(hashes: np.ndarray, max_distance: int) -> pd.DataFrame:
    """The reference: all N^2 distances, upper triangle, in (i, j) order."""
    dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    i, j = np.nonzero(np.triu(dist <= max_distance, k=1))
    return pd.DataFrame({"i": i.astype(np.int64), "j": j.astype(np.int64), "distance": dist[i, j]})


def brute_force_between(queries: np.ndarray, references: np.ndarray, max_distance: int) -> pd.DataFrame:
    dist = np.bitwise_count(queries[:, None] ^ references[None, :])
    i, j = np.nonzero(dist <= max_distance)
    return pd.DataFrame({"i": i.astype(np.int64), "j": j.astype(np.int64), "distance": dist[i, j]})


def flip_bits(value: np.uint64, n_bits: int, rng: np.random.Generator) -> np.uint64:
    """`value` with `n_bits` distinct random bits flipped (bit 63 included in the draw)."""
    mask = sum(1 << int(bit) for bit in rng.choice(64, n_bits, replace=False))
    return value ^ np.uint64(mask)


def planted_hashes(n: int, *, max_distance: int, seed: int) -> np.ndarray:
    """(n,) uint64 random hashes where a third are copies of others with 0..max_distance+2 bits flipped."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    for k in range(n // 3):
        hashes[n // 3 + k] = flip_bits(hashes[k], k % (max_distance + 3), rng)
    hashes[-5:] = hashes[0]  # a value with 6 copies
    return rng.permutation(hashes)


@pytest.mark.parametrize("max_distance", [0, 1, 2, 4, 6, 8, 10, 12])
def test_find_pairs_within_equals_brute_force(max_distance):
    hashes = planted_hashes(3000, max_distance=max_distance, seed=max_distance)
    expected = brute_force_pairs(hashes, max_distance)
    assert set(np.bincount(expected["distance"], minlength=max_distance + 1).nonzero()[0]) == set(
        range(max_distance + 1)
    )  # every distance 0..max_distance is planted
    pd.testing.assert_frame_equal(find_pairs_within(hashes, max_distance=max_distance), expected)


@pytest.mark.parametrize(
    "max_distance,n_chunks,workers",
    [(0, 3, 1), (1, 4, 2), (2, 3, 2), (3, 8, 1), (5, 6, 2), (8, 3, 1), (8, 4, 2), (8, 9, 2), (10, 5, 1), (13, 7, 2)],
)
def test_search_unique_every_multi_index_plan_equals_brute_force(max_distance, n_chunks, workers):
    values = np.unique(planted_hashes(600, max_distance=max_distance, seed=100 + max_distance))
    bits, radii = hashsearch._split_chunks(n_chunks, max_distance)
    plan = SearchPlan("multi-index", bits, radii, estimated_seconds=0.0)
    a, b, dist = hashsearch._search_unique(values, None, max_distance=max_distance, workers=workers, plan=plan)
    got = pd.DataFrame({"i": a, "j": b, "distance": dist}).sort_values(["i", "j"], ignore_index=True)
    pd.testing.assert_frame_equal(got, brute_force_pairs(values, max_distance))


@pytest.mark.parametrize("self_join", [True, False])
def test_search_unique_brute_plan_equals_brute_force(self_join):
    values = np.unique(planted_hashes(700, max_distance=9, seed=9))
    right = None if self_join else values[::3]
    plan = SearchPlan("brute", (64,), (9,), estimated_seconds=0.0)
    a, b, dist = hashsearch._search_unique(values, right, max_distance=9, workers=2, plan=plan)
    got = pd.DataFrame({"i": a, "j": b, "distance": dist}).sort_values(["i", "j"], ignore_index=True)
    expected = brute_force_pairs(values, 9) if self_join else brute_force_between(values, values[::3], 9)
    pd.testing.assert_frame_equal(got, expected)


@pytest.mark.parametrize("max_distance", [0, 3, 8, 10])
def test_find_pairs_between_equals_brute_force(max_distance):
    rng = np.random.default_rng(7)
    references = planted_hashes(2000, max_distance=max_distance, seed=200 + max_distance)
    queries = np.array([flip_bits(references[k], k % (max_distance + 2), rng) for k in range(0, 2000, 3)])
    queries = np.concatenate([queries, queries[:10], rng.integers(0, 2**64, 300, dtype=np.uint64)])
    got = find_pairs_between(queries, references, max_distance=max_distance)
    pd.testing.assert_frame_equal(got, brute_force_between(queries, references, max_distance))


def test_find_pairs_between_copies_on_both_sides():
    got = find_pairs_between(np.array([1, 1], np.uint64), np.array([1, 3, 1], np.uint64), max_distance=1)
    assert got.values.tolist() == [[0, 0, 0], [0, 1, 1], [0, 2, 0], [1, 0, 0], [1, 1, 1], [1, 2, 0]]


def test_find_pairs_between_forced_multi_index_equals_brute_force():
    rng = np.random.default_rng(8)
    references = np.unique(planted_hashes(800, max_distance=6, seed=8))
    queries = np.unique([flip_bits(value, k % 8, rng) for k, value in enumerate(references[::2])])
    plan = SearchPlan("multi-index", *hashsearch._split_chunks(4, 6), estimated_seconds=0.0)
    a, b, dist = hashsearch._search_unique(queries, references, max_distance=6, workers=2, plan=plan)
    got = pd.DataFrame({"i": a, "j": b, "distance": dist}).sort_values(["i", "j"], ignore_index=True)
    pd.testing.assert_frame_equal(got, brute_force_between(queries, references, 6))


def test_find_pairs_within_empty_input():
    got = find_pairs_within(np.empty(0, np.uint64), max_distance=10)
    assert list(got.columns) == ["i", "j", "distance"]
    assert len(got) == 0
    assert list(got.dtypes) == [np.int64, np.int64, np.uint8]


def test_find_groups_within_empty_input():
    assert find_groups_within(np.empty(0, np.uint64), max_distance=10).tolist() == []


def test_find_pairs_within_one_hash():
    assert len(find_pairs_within(np.array([TOP_BIT], np.uint64), max_distance=64)) == 0
    assert find_groups_within(np.array([5], np.uint64), max_distance=3).tolist() == [0]


def test_find_pairs_within_all_identical():
    hashes = np.full(2000, 0xDEADBEEF_12345678, np.uint64)
    got = find_pairs_within(hashes, max_distance=0)
    assert len(got) == 1_999_000  # 2000 * 1999 / 2
    assert got.iloc[:3].values.tolist() == [[0, 1, 0], [0, 2, 0], [0, 3, 0]]
    assert got.iloc[-1].values.tolist() == [1998, 1999, 0]
    assert int(got["distance"].max()) == 0


def test_find_groups_within_ten_thousand_identical():
    hashes = np.full(10_000, TOP_BIT | 12345, np.uint64)
    hashes[[17, 9_000]] = [1, 3]  # distance 1 from each other, far from the rest
    groups = find_groups_within(hashes, max_distance=4)
    assert groups[17] == groups[9_000] == 1
    assert (np.delete(groups, [17, 9_000]) == 0).all()


def test_find_pairs_within_max_distance_0_keeps_exact_copies():
    hashes = np.array([5, 4, 5, TOP_BIT, TOP_BIT, 5], np.uint64)
    got = find_pairs_within(hashes, max_distance=0)
    assert got.values.tolist() == [[0, 2, 0], [0, 5, 0], [2, 5, 0], [3, 4, 0]]


def test_find_pairs_within_max_distance_64_keeps_every_pair():
    hashes = np.array([0, 2**64 - 1, TOP_BIT, 1], np.uint64)
    got = find_pairs_within(hashes, max_distance=64)
    assert got.values.tolist() == [[0, 1, 64], [0, 2, 1], [0, 3, 1], [1, 2, 63], [1, 3, 63], [2, 3, 2]]


def test_find_pairs_within_top_bit():
    # bit 63 set: these exceed int64; a signed view would make them negative
    hashes = np.array([TOP_BIT, TOP_BIT | 1, 0, 2**64 - 1, (2**64 - 1) ^ TOP_BIT], np.uint64)
    got = find_pairs_within(hashes, max_distance=1)
    assert got.values.tolist() == [[0, 1, 1], [0, 2, 1], [3, 4, 1]]


def test_find_pairs_within_rejects_signed_or_list_input():
    with pytest.raises(TypeError, match="hashes must be a 1-d numpy uint64 array, got a 1-d int64"):
        find_pairs_within(np.array([1, 2], np.int64), max_distance=1)
    with pytest.raises(TypeError, match="got list"):
        find_pairs_within([1, 2], max_distance=1)
    with pytest.raises(ValueError, match="max_distance must be in 0..64, got 65"):
        find_pairs_within(np.array([1], np.uint64), max_distance=65)
    with pytest.raises(TypeError, match="max_distance must be an integer"):
        find_pairs_within(np.array([1], np.uint64), max_distance=2.0)


def test_find_pairs_within_distance_matches_imagehash():
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(2)]
    images.append(images[0].rotate(3))
    phashes = [imagehash.phash(image) for image in images]
    hashes = np.array([int(str(h), 16) for h in phashes], np.uint64)  # Sieve's storage convention
    got = find_pairs_within(hashes, max_distance=64)
    assert got["distance"].tolist() == [phashes[0] - phashes[1], phashes[0] - phashes[2], phashes[1] - phashes[2]]


def test_group_pairs_hand_made():
    pairs = pd.DataFrame({"i": [0, 3, 2], "j": [3, 5, 6], "distance": np.array([1, 2, 0], np.uint8)})
    assert group_pairs(pairs, n_items=7).tolist() == [0, 1, 2, 0, 3, 0, 2]


def test_group_pairs_no_pairs():
    pairs = pd.DataFrame({"i": np.empty(0, np.int64), "j": np.empty(0, np.int64)})
    assert group_pairs(pairs, n_items=3).tolist() == [0, 1, 2]


def test_group_pairs_rejects_index_out_of_range():
    with pytest.raises(ValueError, match="outside 0..2"):
        group_pairs(pd.DataFrame({"i": [0], "j": [3]}), n_items=3)


def test_list_groups_largest_first():
    groups = list_groups(np.array([0, 1, 2, 0, 3, 0, 2, 4, 4]))
    assert groups["group"].tolist() == [0, 2, 4]
    assert groups["size"].tolist() == [3, 2, 2]
    assert [m.tolist() for m in groups["members"]] == [[0, 3, 5], [2, 6], [7, 8]]
    assert list_groups(np.array([0, 1, 2, 0, 3, 0, 2, 4, 4]), min_size=1)["group"].tolist() == [0, 2, 4, 1, 3]


def test_find_groups_within_equals_group_pairs_of_pairs():
    hashes = planted_hashes(3000, max_distance=10, seed=11)
    expected = group_pairs(find_pairs_within(hashes, max_distance=10), n_items=hashes.size)
    got = find_groups_within(hashes, max_distance=10)
    np.testing.assert_array_equal(got, expected)
    # 1000 planted copies, those with k % 13 <= 10 bits flipped merge (847), plus 5 exact copies
    assert got.max() + 1 == 3000 - 847 - 5


def test_plan_search_brute_for_tiny_and_multi_index_for_large():
    assert plan_search(100, max_distance=10).method == "brute"
    large = plan_search(1_000_000, max_distance=8)
    assert large.method == "multi-index"
    assert sum(large.chunk_bits) == 64
    assert sum(r + 1 for r in large.chunk_radii if r >= 0) == 9  # pigeonhole: max_distance + 1


def _brute_summary(hashes: np.ndarray, labels: np.ndarray, max_distance: int):
    """(pairs per label pair, items with a partner per label pair) by comparing every pair."""
    n_labels = labels.max() + 1
    pairs, partners = np.zeros((n_labels, n_labels), int), [set() for _ in hashes]
    dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    for i, j in zip(*np.nonzero(np.triu(dist <= max_distance, 1))):
        s, t = labels[i], labels[j]
        pairs[s, t] += 1
        if s != t:
            pairs[t, s] += 1
        partners[i].add(t)
        partners[j].add(s)
    with_partner = np.zeros_like(pairs)
    for item, found in enumerate(partners):
        for t in found:
            with_partner[labels[item], t] += 1
    return pairs, with_partner


def test_summarise_pairs_equals_counting_every_pair():
    rng = np.random.default_rng(7)
    hashes = rng.integers(0, 2**64, 400, dtype=np.uint64)
    hashes[:60] = hashes[0]  # 60 copies
    hashes[100:110] = hashes[0] ^ np.uint64(0b101)  # 10 near copies of them
    hashes[200:205] = hashes[1] ^ np.uint64(1)
    labels = rng.integers(0, 3, 400)
    found = search_within(hashes, max_distance=3)
    summary = summarise_pairs(found, labels)
    pairs, with_partner = _brute_summary(hashes, labels, 3)
    assert (summary.pairs == pairs).all() and (summary.with_partner == with_partner).all()
    listed = find_pairs_within(hashes, max_distance=3)
    assert count_pairs(found) == summary.total_pairs == len(listed)
    i, j = expand_pairs(found)
    assert (i == listed["i"].to_numpy()).all() and (j == listed["j"].to_numpy()).all()
    assert (summary.group_ids == group_pairs(listed, n_items=400)).all()
