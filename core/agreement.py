"""Annotator agreement: how far independent labels of the same items agree beyond chance.

Entry point: `agreement_report(votes)`. The single statistics (`percent_agreement`,
`fleiss_kappa`, `krippendorff_alpha`, `label_coincidence`) take the (N, K) count matrix of
`count_votes(votes)`; `cohen_kappa_pairs` and `vote_entropy` take the votes themselves.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

VOTE_COLUMNS = ("item", "annotator", "label")
# A bootstrap resample costs one binomial draw per distinct count pattern (multinomial) or one
# integer draw per item; a binomial costs ~6 integers, so patterns win below N / 8 of them.
_MULTINOMIAL_MAX_SHARE = 1 / 8


@dataclass(frozen=True)
class Estimate:
    """A statistic with its percentile-bootstrap interval over items.

    ``ci_low``/``ci_high`` are nan when no resampling was asked for or the value is undefined;
    ``note`` says why ``value`` is nan ("" when it is defined).
    """

    value: float
    ci_low: float
    ci_high: float
    n_items: int  # items with two or more votes: the only ones that carry agreement
    note: str = ""


@dataclass(frozen=True)
class EncodedVotes:
    """Validated votes as integer codes, sorted by item then annotator (M votes)."""

    items: np.ndarray  # (N,) item ids, sorted
    annotators: np.ndarray  # (J,) annotator ids, sorted
    item: np.ndarray  # (M,) int64 index into items
    annotator: np.ndarray  # (M,) int64 index into annotators
    label: np.ndarray  # (M,) int64 class index 0..n_classes-1
    n_classes: int

    def count_matrix(self) -> np.ndarray:
        """(N, K) int64 votes per item and class, rows in ``items`` order."""
        n, k = len(self.items), self.n_classes
        return np.bincount(self.item * k + self.label, minlength=n * k).reshape(n, k)


@dataclass(frozen=True)
class AgreementReport:
    """Everything `agreement_report` measures on one set of votes."""

    n_votes: int
    n_items: int
    n_annotators: int
    n_classes: int
    percent_agreement: Estimate
    fleiss_kappa: Estimate
    krippendorff_alpha: Estimate
    pairs: pd.DataFrame  # cohen_kappa_pairs(votes): one row per annotator pair
    coincidence: pd.DataFrame  # label_coincidence(counts): (K, K), sums to 1


def encode_votes(votes: pd.DataFrame, *, n_classes: int | None = None) -> EncodedVotes:
    """Validate a long ``votes`` frame (``item``, ``annotator``, ``label``) and code it as integers.

    ``n_classes`` defaults to the largest label + 1. Raises ``ValueError`` naming the first bad
    row for: missing columns, empty input, missing ids, non-integer or out-of-range labels, and
    a second vote by the same annotator on the same item.
    """
    _check_vote_frame(votes)
    labels = _checked_labels(votes, n_classes=n_classes)
    items, item = _factorize_ids(votes, "item")
    annotators, annotator = _factorize_ids(votes, "annotator")
    order = np.lexsort((annotator, item))
    item, annotator, labels = item[order], annotator[order], labels[order]
    same = (item[1:] == item[:-1]) & (annotator[1:] == annotator[:-1])
    if same.any():
        row = votes.index[order[np.flatnonzero(same)[0] + 1]]
        raise ValueError(
            f"votes row {_show(row)}: annotator {_show(votes.at[row, 'annotator'])} voted twice on "
            f"item {_show(votes.at[row, 'item'])} ({int(same.sum())} repeated votes in all); "
            "keep one vote per (item, annotator)"
        )
    k = int(labels.max()) + 1 if n_classes is None else n_classes
    return EncodedVotes(items, annotators, item, annotator, labels, k)


def _check_vote_frame(votes: pd.DataFrame) -> None:
    if not isinstance(votes, pd.DataFrame):
        raise TypeError(f"votes must be a pandas DataFrame, got {type(votes).__name__}")
    missing = [c for c in VOTE_COLUMNS if c not in votes.columns]
    if missing:
        raise ValueError(f"votes lacks column(s) {missing}; it has {list(votes.columns)}")
    if votes.empty:
        raise ValueError("votes is empty: agreement needs at least one vote")
    for column in VOTE_COLUMNS:
        absent = votes[column].isna().to_numpy()
        if absent.any():
            row = votes.index[np.flatnonzero(absent)[0]]
            raise ValueError(
                f"votes row {_show(row)}: {column} is missing ({int(absent.sum())} such rows)"
            )


def _checked_labels(votes: pd.DataFrame, *, n_classes: int | None) -> np.ndarray:
    raw = votes["label"]
    if pd.api.types.is_bool_dtype(raw):
        raise ValueError("votes['label'] holds booleans; it needs integer class indices 0..K-1")
    if not pd.api.types.is_numeric_dtype(raw):  # object or string column: only numbers pass
        typed = [isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in raw]
        _raise_at_first(votes, ~np.array(typed), "is not a number")
    values = raw.to_numpy(dtype=np.float64)  # class indices are small: exact in float64
    _raise_at_first(votes, ~np.isfinite(values), "is not a number")
    _raise_at_first(votes, values != np.round(values), "is not a whole number")
    _raise_at_first(votes, values < 0, "is negative")
    if n_classes is not None:
        _check_whole_option("n_classes", n_classes, minimum=1)
        _raise_at_first(votes, values >= n_classes, f"is out of range 0..{n_classes - 1}")
    return values.astype(np.int64)


def _raise_at_first(votes: pd.DataFrame, bad: np.ndarray, problem: str) -> None:
    if bad.any():
        pos = np.flatnonzero(bad)[0]
        row = votes.index[pos]
        raise ValueError(
            f"votes row {_show(row)} (item {_show(votes['item'].iat[pos])}, "
            f"annotator {_show(votes['annotator'].iat[pos])}): "
            f"label {_show(votes['label'].iat[pos])} {problem}"
            f" ({int(bad.sum())} such rows)"
        )


def _check_whole_option(name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {_show(value)}")


def _show(value) -> str:
    """repr of a value as a user typed it (numpy scalars shown as plain Python numbers)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _factorize_ids(votes: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(U,) sorted distinct ids (mixed types: numbers before strings) and (M,) int64 codes."""
    codes, uniques = pd.factorize(votes[column], sort=True)
    return np.asarray(uniques), codes.astype(np.int64)


def count_votes(votes: pd.DataFrame, *, n_classes: int | None = None) -> pd.DataFrame:
    """The (N, K) vote-count matrix: index ``item`` (sorted), columns ``label`` 0..K-1, int64."""
    enc = encode_votes(votes, n_classes=n_classes)
    return pd.DataFrame(
        enc.count_matrix(),
        index=pd.Index(enc.items, name="item"),
        columns=pd.RangeIndex(enc.n_classes, name="label"),
    )


def _as_counts(counts) -> np.ndarray:
    """Validate an (N, K) matrix of non-negative whole vote counts; return it as float64."""
    array = np.asarray(counts)
    if array.ndim != 2 or array.shape[1] < 1:
        raise ValueError(f"counts must be an (N, K) matrix, got shape {array.shape}")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"counts must be numeric vote counts, got dtype {array.dtype}")
    if array.dtype.kind in "iu":
        bad = array < 0
    else:
        bad = ~np.isfinite(array) | (array < 0) | (array != np.round(array))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"counts[{i}, {j}] = {_show(array[i, j])} is not a non-negative whole count"
        )
    return array.astype(np.float64)


def percent_agreement(
    counts, *, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> Estimate:
    """Mean over items (with two or more votes) of the share of vote pairs that agree.

    ``counts`` is the (N, K) matrix of `count_votes`; the interval resamples items.
    """
    estimates = _agreement_estimates(
        counts, n_resamples=n_resamples, seed=seed, confidence=confidence
    )
    return estimates[0]


def fleiss_kappa(
    counts, *, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> Estimate:
    """Fleiss' kappa in its variable-number-of-raters form, from an (N, K) vote-count matrix.

    kappa = (P - Pe) / (1 - Pe): P is the mean over items of the share of agreeing vote pairs,
    Pe = sum_k p_k^2 with p_k the share of all votes in class k (votes pooled over items). Items
    with fewer than two votes are left out. nan (with a note) when every vote is in one class.
    """
    estimates = _agreement_estimates(
        counts, n_resamples=n_resamples, seed=seed, confidence=confidence
    )
    return estimates[1]


def krippendorff_alpha(
    counts, *, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> Estimate:
    """Krippendorff's alpha, nominal, from per-item value counts (the coincidence-matrix form).

    alpha = 1 - (n - 1) * Do / (n^2 - sum_k n_k^2), where n counts pairable votes (items with two
    or more), n_k those in class k and Do = sum_u (m_u^2 - sum_k n_uk^2) / (m_u - 1) the
    disagreeing coincidences. Any number of votes per item. nan (with a note) when every vote
    is in one class.
    """
    estimates = _agreement_estimates(
        counts, n_resamples=n_resamples, seed=seed, confidence=confidence
    )
    return estimates[2]


def _agreement_estimates(
    counts, *, n_resamples: int, seed: int, confidence: float
) -> tuple[Estimate, Estimate, Estimate]:
    """Percent agreement, Fleiss' kappa and Krippendorff's alpha, with shared bootstrap draws."""
    _check_bootstrap_options(n_resamples=n_resamples, seed=seed, confidence=confidence)
    stats = _item_statistics(_as_counts(counts))
    point = _statistics_from_sums(stats.sum(axis=0, keepdims=True))[0]  # (3,)
    low = high = np.full(3, np.nan)
    if n_resamples and len(stats):
        boot = _bootstrap_statistics(stats, n_resamples=n_resamples, seed=seed)  # (B, 3)
        low, high = _percentile_intervals(boot, defined=~np.isnan(point), confidence=confidence)
    notes = _undefined_notes(point, n_items=len(stats))
    return tuple(
        Estimate(float(point[s]), float(low[s]), float(high[s]), len(stats), notes[s])
        for s in range(3)
    )


def _percentile_intervals(
    boot: np.ndarray, *, defined: np.ndarray, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bounds per column of (B, S) resampled values; nan where the value is undefined.

    A resample whose statistic is undefined (every drawn vote in one class) is left out.
    """
    low, high = np.full(boot.shape[1], np.nan), np.full(boot.shape[1], np.nan)
    tail = 50 * (1 - confidence)
    for column in np.flatnonzero(defined):
        values = boot[:, column][~np.isnan(boot[:, column])]
        if len(values):
            low[column], high[column] = np.percentile(values, [tail, 100 - tail])
    return low, high


def _check_bootstrap_options(*, n_resamples: int, seed: int, confidence: float) -> None:
    _check_whole_option("n_resamples", n_resamples, minimum=0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


def _undefined_notes(point: np.ndarray, *, n_items: int) -> list[str]:
    if n_items == 0:
        return ["no item has two or more votes"] * 3
    one_class = "every vote is in one class: chance agreement is 1, so the statistic is undefined"
    return [one_class if np.isnan(value) else "" for value in point]


# Per-item statistics, one row per item with two or more votes; the three agreement statistics
# are functions of their column sums, so resampling items only needs weighted sums of rows.
# Columns: 0 one (the item count), 1 share of agreeing vote pairs, 2 votes m_u,
# 3 disagreeing coincidences (m_u^2 - sum_k n_uk^2) / (m_u - 1), 4.. the K class counts n_uk.
_FIRST_CLASS_COLUMN = 4


def _item_statistics(counts: np.ndarray) -> np.ndarray:
    votes = counts.sum(axis=1)
    pairable = votes >= 2
    counts, votes = counts[pairable], votes[pairable]  # (N', K), (N',)
    squares = (counts * counts).sum(axis=1)
    agreeing = (squares - votes) / (votes * (votes - 1))
    disagreeing = (votes * votes - squares) / (votes - 1)
    return np.column_stack([np.ones_like(votes), agreeing, votes, disagreeing, counts])


def _statistics_from_sums(sums: np.ndarray) -> np.ndarray:
    """(B, 4 + K) column sums of `_item_statistics` -> (B, 3): percent agreement, kappa, alpha."""
    items, agreeing, votes, disagreeing = sums[:, 0], sums[:, 1], sums[:, 2], sums[:, 3]
    squares = (sums[:, _FIRST_CLASS_COLUMN:] ** 2).sum(axis=1)
    spread = votes * votes - squares  # 0 exactly when every vote is in one class
    with np.errstate(all="ignore"):
        percent = np.where(items > 0, agreeing / items, np.nan)
        chance = squares / (votes * votes)
        kappa = np.where(spread > 0, (percent - chance) / (1 - chance), np.nan)
        alpha = np.where(spread > 0, 1 - (votes - 1) * disagreeing / spread, np.nan)
    return np.column_stack([percent, kappa, alpha])


def _bootstrap_statistics(stats: np.ndarray, *, n_resamples: int, seed: int) -> np.ndarray:
    """Resample items with replacement ``n_resamples`` times -> (B, 3) statistics.

    Items with the same count vector have the same statistics row, so a resample is summarised
    by how often it drew each distinct count vector ("pattern"): (B, P) weights times (P, S).
    """
    patterns, pattern_of_item = np.unique(
        stats[:, _FIRST_CLASS_COLUMN:], axis=0, return_inverse=True
    )
    pattern_stats = np.zeros((len(patterns), stats.shape[1]))
    pattern_stats[pattern_of_item] = stats  # rows of one pattern are identical
    rng = np.random.default_rng(seed)
    weights = _resample_weights(pattern_of_item, len(patterns), n_resamples=n_resamples, rng=rng)
    return _statistics_from_sums(weights @ pattern_stats)


def _resample_weights(
    pattern_of_item: np.ndarray, n_patterns: int, *, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """(B, P) how many times each pattern is drawn when N items are drawn with replacement."""
    n = len(pattern_of_item)
    if n_patterns <= n * _MULTINOMIAL_MAX_SHARE:
        share = np.bincount(pattern_of_item, minlength=n_patterns) / n
        return rng.multinomial(n, share, size=n_resamples).astype(np.float64)
    weights = np.empty((n_resamples, n_patterns))
    rows_per_chunk = max(1, 4_000_000 // n)  # bounds the (rows, N) draw matrix to ~16 MB
    for start in range(0, n_resamples, rows_per_chunk):
        rows = min(rows_per_chunk, n_resamples - start)
        drawn = pattern_of_item[rng.integers(0, n, size=(rows, n), dtype=np.int32)]
        drawn = drawn + n_patterns * np.arange(rows)[:, None]
        flat = np.bincount(drawn.ravel(), minlength=rows * n_patterns)
        weights[start : start + rows] = flat.reshape(rows, n_patterns)
    return weights


def cohen_kappa_pairs(
    votes: pd.DataFrame, *, n_classes: int | None = None, min_shared: int = 20
) -> pd.DataFrame:
    """Cohen's kappa for every annotator pair that labelled at least ``min_shared`` items in common.

    Columns: ``annotator_a``, ``annotator_b`` (a < b in sorted id order), ``n_shared`` (items
    both labelled), ``agreement`` (share of those with the same label), ``kappa`` (nan when
    both used one and the same single class: chance agreement 1). Sorted by a, then b.
    """
    _check_whole_option("min_shared", min_shared, minimum=1)
    return _kappa_pairs(encode_votes(votes, n_classes=n_classes), min_shared=min_shared)


def _kappa_pairs(enc: EncodedVotes, *, min_shared: int) -> pd.DataFrame:
    first, second = _vote_pairs(enc)  # (Q,), (Q,) vote rows; annotator[first] < annotator[second]
    j = len(enc.annotators)
    keys, pair_of, shared = np.unique(
        enc.annotator[first] * j + enc.annotator[second], return_inverse=True, return_counts=True
    )
    kept = shared >= min_shared
    slot = np.cumsum(kept) - 1  # index among kept pairs, valid where kept
    chosen = kept[pair_of]
    tables = _pair_tables(
        slot[pair_of[chosen]], enc.label[first[chosen]], enc.label[second[chosen]],
        n_pairs=int(kept.sum()), n_classes=enc.n_classes,
    )
    agreement, kappa = _kappa_from_tables(tables)
    return pd.DataFrame({
        "annotator_a": enc.annotators[keys[kept] // j],
        "annotator_b": enc.annotators[keys[kept] % j],
        "n_shared": shared[kept].astype(np.int64),
        "agreement": agreement,
        "kappa": kappa,
    })


def _vote_pairs(enc: EncodedVotes) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair of votes on one item, as two arrays of vote rows (first < second)."""
    m = len(enc.item)
    starts = np.flatnonzero(np.r_[True, enc.item[1:] != enc.item[:-1]])
    ends = np.r_[starts[1:], m]
    group_end = np.repeat(ends, ends - starts)  # (M,) end of each vote's item group
    later = group_end - np.arange(m) - 1  # votes after this one on the same item
    first = np.repeat(np.arange(m), later)
    offset = np.arange(len(first)) - np.repeat(np.cumsum(later) - later, later)
    return first, first + 1 + offset


def _pair_tables(
    pair: np.ndarray, label_a: np.ndarray, label_b: np.ndarray, *, n_pairs: int, n_classes: int
) -> np.ndarray:
    """(P, K, K) contingency tables: rows annotator a's label, columns annotator b's."""
    k = n_classes
    flat = np.bincount((pair * k + label_a) * k + label_b, minlength=n_pairs * k * k)
    return flat.reshape(n_pairs, k, k).astype(np.float64)


def _kappa_from_tables(tables: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    total = tables.sum(axis=(1, 2))
    observed = np.trace(tables, axis1=1, axis2=2) / total
    chance = (tables.sum(axis=2) * tables.sum(axis=1)).sum(axis=1) / total**2
    with np.errstate(all="ignore"):
        kappa = np.where(chance < 1, (observed - chance) / (1 - chance), np.nan)
    return observed, kappa


def label_coincidence(counts, *, normalize: str = "all") -> pd.DataFrame:
    """The (K, K) coincidence matrix of labels given to the same item, for a confusion heatmap.

    Cell (c, k) counts ordered pairs of votes on one item with labels c and k, each item's pairs
    weighted 1 / (m_u - 1) (Krippendorff's coincidences; items with one vote are left out).
    ``normalize="all"``: the matrix sums to 1 (symmetric). ``"row"``: each row sums to 1 (the
    share of co-votes given label k when one vote is c; a class never voted gives a nan row).
    """
    if normalize not in ("all", "row"):
        raise ValueError(f"normalize must be 'all' or 'row', got {normalize!r}")
    counts = _as_counts(counts)
    counts = counts[counts.sum(axis=1) >= 2]  # (N', K)
    weighted = counts / (counts.sum(axis=1, keepdims=True) - 1)
    matrix = counts.T @ weighted - np.diag(weighted.sum(axis=0))  # (K, K)
    with np.errstate(all="ignore"):
        scale = matrix.sum() if normalize == "all" else matrix.sum(axis=1, keepdims=True)
        matrix = matrix / scale
    labels = pd.RangeIndex(counts.shape[1], name="label")
    return pd.DataFrame(matrix, index=labels, columns=labels.rename("co_label"))


def vote_entropy(votes: pd.DataFrame, *, n_classes: int | None = None) -> pd.DataFrame:
    """Items ranked by the entropy of their votes, most disputed first (the disagreement list).

    Columns: ``item``, ``n_votes``, ``top_share`` (share of votes for the most voted class),
    ``entropy`` (bits; 0 when unanimous, at most log2(K)). Ties in entropy: more votes first,
    then item order.
    """
    counts = count_votes(votes, n_classes=n_classes)
    array = counts.to_numpy(dtype=np.float64)  # (N, K)
    n_votes = array.sum(axis=1)
    share = array / n_votes[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(share > 0, share * np.log2(share), 0.0).sum(axis=1)
    table = pd.DataFrame({
        "item": counts.index.to_numpy(),
        "n_votes": n_votes.astype(np.int64),
        "top_share": share.max(axis=1),
        "entropy": np.abs(entropy),  # turns -0.0 into 0.0
    })
    order = np.lexsort((np.arange(len(table)), -n_votes, -table["entropy"].to_numpy()))
    return table.iloc[order].reset_index(drop=True)


def agreement_report(
    votes: pd.DataFrame,
    *,
    n_classes: int | None = None,
    min_shared: int = 20,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> AgreementReport:
    """Can these labels be trusted? Agreement statistics with bootstrap intervals over items.

    The three estimates share one set of resamples (same ``seed`` -> same intervals as the
    single-statistic functions); ``pairs`` is `cohen_kappa_pairs`, ``coincidence`` is
    `label_coincidence` normalised to sum 1.
    """
    _check_whole_option("min_shared", min_shared, minimum=1)
    enc = encode_votes(votes, n_classes=n_classes)
    counts = enc.count_matrix()
    percent, kappa, alpha = _agreement_estimates(
        counts, n_resamples=n_resamples, seed=seed, confidence=confidence
    )
    return AgreementReport(
        n_votes=len(enc.item),
        n_items=len(enc.items),
        n_annotators=len(enc.annotators),
        n_classes=enc.n_classes,
        percent_agreement=percent,
        fleiss_kappa=kappa,
        krippendorff_alpha=alpha,
        pairs=_kappa_pairs(enc, min_shared=min_shared),
        coincidence=label_coincidence(counts),
    )
