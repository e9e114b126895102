"""Tests for core.agreement: textbook examples worked by hand, then the real CIFAR-10 crowds."""
from __future__ import annotations

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from core.agreement import (
    agreement_report,
    cohen_kappa_pairs,
    count_votes,
    encode_votes,
    fleiss_kappa,
    krippendorff_alpha,
    label_coincidence,
    percent_agreement,
    vote_entropy,
)

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NAN = np.nan

# Krippendorff (2011) "Computing Krippendorff's alpha-reliability", nominal example: 4 observers
# (rows) x 12 units (columns), values 1..5, nan = not coded. Published alpha = 0.743.
KRIPPENDORFF_2011 = np.array([
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
])

# Fleiss (1971) Table 1: 30 patients, 6 psychiatrists each, 5 diagnoses (1..5). kappa = 0.430
# (R irr::kappam.fleiss gives 0.4302445).
FLEISS_1971 = np.array([
    [4, 4, 4, 4, 4, 4], [2, 2, 2, 5, 5, 5], [2, 3, 3, 3, 3, 5], [5, 5, 5, 5, 5, 5],
    [2, 2, 2, 4, 4, 4], [1, 1, 3, 3, 3, 3], [3, 3, 3, 3, 5, 5], [1, 1, 3, 3, 3, 4],
    [1, 1, 4, 4, 4, 4], [5, 5, 5, 5, 5, 5], [1, 4, 4, 4, 4, 4], [1, 2, 4, 4, 4, 4],
    [2, 2, 2, 3, 3, 3], [1, 4, 4, 4, 4, 4], [2, 2, 4, 4, 4, 5], [3, 3, 3, 3, 3, 5],
    [1, 1, 1, 4, 5, 5], [1, 1, 1, 1, 1, 2], [2, 2, 4, 4, 4, 4], [1, 3, 3, 5, 5, 5],
    [5, 5, 5, 5, 5, 5], [2, 4, 4, 4, 4, 4], [2, 2, 4, 5, 5, 5], [1, 1, 4, 4, 4, 4],
    [1, 4, 4, 4, 4, 5], [2, 2, 2, 2, 2, 4], [1, 1, 1, 1, 5, 5], [2, 2, 4, 4, 4, 4],
    [1, 3, 3, 3, 3, 3], [5, 5, 5, 5, 5, 5],
])


def votes_from_reliability(matrix: np.ndarray, *, first_value: int = 1) -> pd.DataFrame:
    """(annotators, items) matrix of values (nan = no vote) -> long votes, labels from 0."""
    annotator, item = np.nonzero(~np.isnan(matrix))
    label = matrix[annotator, item].astype(int) - first_value
    return pd.DataFrame({"item": item, "annotator": annotator, "label": label})


def votes_from_rows(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item", "annotator", "label"])


def reliability_matrix(votes: pd.DataFrame) -> np.ndarray:
    return votes.pivot(index="annotator", columns="item", values="label").to_numpy(dtype=float)


@pytest.fixture(scope="module")
def cifar10n_votes(shared_data) -> pd.DataFrame:
    """CIFAR-10N: 150,000 votes (3 per train image) by 747 workers; worker k gave random_label{k}."""
    labels = pd.read_csv(shared_data / "cifar10n" / "cifar10n_labels.csv")
    side = pd.read_csv(shared_data / "cifar10n" / "side_info_cifar10N.csv")
    first = side["Image-batch"].str.split("--", expand=True).astype(int)  # "0--9" -> 0, 9
    workers = side.set_index(first[0] // 10)  # batch b covers train indices 10b..10b+9
    batch = labels["train_index"] // 10
    return pd.concat([
        pd.DataFrame({
            "item": labels["train_index"],
            "annotator": workers.loc[batch, f"Worker{k}-id"].to_numpy(),
            "label": labels[f"random_label{k}"],
        })
        for k in (1, 2, 3)
    ], ignore_index=True)


@pytest.fixture(scope="module")
def cifar10s_votes(shared_data) -> pd.DataFrame:
    """CIFAR-10S first views (is_repeat == 0); 25 (annotator, image) pairs recur: first trial kept."""
    trials = pd.read_csv(shared_data / "cifar10s" / "cifar10s_annotations_by_annotator.csv")
    trials = trials[trials["is_repeat"] == 0].sort_values(["annotator_id", "trial_index"])
    trials = trials.drop_duplicates(["annotator_id", "cifar10_test_index"])
    return pd.DataFrame({
        "item": trials["cifar10_test_index"].to_numpy(),
        "annotator": trials["annotator_id"].to_numpy(),
        "label": trials["top_class"].map({name: i for i, name in enumerate(CIFAR10_NAMES)}).to_numpy(),
    })


# --- hand-worked examples -------------------------------------------------------------------


def test_krippendorff_alpha_published_nominal_example():
    counts = count_votes(votes_from_reliability(KRIPPENDORFF_2011))
    estimate = krippendorff_alpha(counts, n_resamples=0)
    assert round(estimate.value, 3) == 0.743
    assert estimate.value == pytest.approx(113 / 152, abs=1e-15)  # 1 - 39 * 10 / (40^2 - 1080)
    assert estimate.n_items == 11  # unit 12 has a single value


def test_label_coincidence_published_nominal_example():
    counts = count_votes(votes_from_reliability(KRIPPENDORFF_2011))
    matrix = label_coincidence(counts).to_numpy() * 40  # n = 40 pairable values
    third = 1 / 3
    expected = [
        [7, 4 * third, third, third, 0],
        [4 * third, 10, 4 * third, third, 0],
        [third, 4 * third, 8, third, 0],
        [third, third, third, 4, 0],
        [0, 0, 0, 0, 3],
    ]
    np.testing.assert_allclose(matrix, expected, atol=1e-12)


def test_fleiss_kappa_fleiss_1971_example():
    counts = count_votes(votes_from_reliability(FLEISS_1971.T.astype(float)))
    assert fleiss_kappa(counts, n_resamples=0).value == pytest.approx(0.4302445, abs=5e-8)


def test_fleiss_kappa_wikipedia_example_from_counts():
    # 10 subjects, 14 raters, 5 categories (Wikipedia "Fleiss' kappa"): kappa = 0.210
    counts = np.array([
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ])
    # P = 0.378 (mean item agreement), Pe = 0.213 -> (0.378 - 0.2128...) / (1 - 0.2128...)
    assert round(fleiss_kappa(counts, n_resamples=0).value, 3) == 0.210


def test_percent_agreement_skips_single_votes():
    votes = votes_from_rows([
        ("a", 1, 0), ("a", 2, 0), ("a", 3, 0),  # 3 of 3 pairs agree
        ("b", 1, 0), ("b", 2, 0), ("b", 3, 1),  # 1 of 3
        ("c", 1, 0), ("c", 2, 1),  # 0 of 1
        ("d", 1, 2),  # single vote: no pair
    ])
    estimate = percent_agreement(count_votes(votes), n_resamples=0)
    assert estimate.value == pytest.approx(4 / 9, abs=1e-15)
    assert estimate.n_items == 3


def test_cohen_kappa_pairs_textbook_two_by_two():
    # 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15 -> po 0.7, pe 0.5, kappa 0.4
    cells = [(1, 1)] * 20 + [(1, 0)] * 5 + [(0, 1)] * 10 + [(0, 0)] * 15
    votes = votes_from_rows(
        [(i, "A", a) for i, (a, _) in enumerate(cells)] + [(i, "B", b) for i, (_, b) in enumerate(cells)]
    )
    pairs = cohen_kappa_pairs(votes)
    assert pairs.to_dict("records") == [
        {"annotator_a": "A", "annotator_b": "B", "n_shared": 50, "agreement": 0.7, "kappa": pytest.approx(0.4, abs=1e-15)}
    ]


def test_cohen_kappa_pairs_min_shared_filters_pairs():
    votes = votes_from_rows(
        [(i, "A", i % 2) for i in range(30)] + [(i, "B", i % 2) for i in range(30)]
        + [(i, "C", 0) for i in range(10)]
    )
    pairs = cohen_kappa_pairs(votes, min_shared=20)
    assert pairs[["annotator_a", "annotator_b", "n_shared", "kappa"]].values.tolist() == [["A", "B", 30, 1.0]]
    assert len(cohen_kappa_pairs(votes, min_shared=10)) == 3


def test_cohen_kappa_pairs_single_shared_class_is_nan():
    votes = votes_from_rows([(i, a, 3) for i in range(25) for a in ("A", "B")])
    pairs = cohen_kappa_pairs(votes)
    assert pairs["agreement"].tolist() == [1.0]
    assert np.isnan(pairs["kappa"].iloc[0])


def test_label_coincidence_one_item_normalised_by_row():
    counts = np.array([[2, 1]])  # one item voted 0, 0, 1
    np.testing.assert_allclose(label_coincidence(counts).to_numpy(), [[1 / 3, 1 / 3], [1 / 3, 0]])
    np.testing.assert_allclose(label_coincidence(counts, normalize="row").to_numpy(), [[0.5, 0.5], [1, 0]])


def test_vote_entropy_ranks_most_disputed_first():
    votes = votes_from_rows(
        [("calm", a, 1) for a in range(4)]
        + [("split", a, a % 2) for a in range(4)]
        + [("chaos", a, a) for a in range(4)]
    )
    table = vote_entropy(votes)
    assert table.to_dict("list") == {
        "item": ["chaos", "split", "calm"],
        "n_votes": [4, 4, 4],
        "top_share": [0.25, 0.5, 1.0],
        "entropy": [2.0, 1.0, 0.0],
    }


# --- edge cases -----------------------------------------------------------------------------


def test_krippendorff_alpha_all_agreeing_is_nan_with_reason():
    counts = np.array([[3, 0], [0, 0], [2, 0]])  # every vote is class 0
    alpha = krippendorff_alpha(counts, n_resamples=50)
    kappa = fleiss_kappa(counts, n_resamples=50)
    assert np.isnan(alpha.value) and np.isnan(alpha.ci_low) and np.isnan(kappa.value)
    assert "one class" in alpha.note and "one class" in kappa.note
    assert percent_agreement(counts, n_resamples=0).value == 1.0


def test_agreement_report_one_annotator_is_undefined():
    votes = votes_from_rows([(i, "solo", i % 3) for i in range(10)])
    report = agreement_report(votes, n_resamples=10)
    alpha = report.krippendorff_alpha
    assert np.isnan([alpha.value, alpha.ci_low, alpha.ci_high]).all()
    assert (alpha.n_items, alpha.note) == (0, "no item has two or more votes")
    assert report.pairs.empty and list(report.pairs.columns) == [
        "annotator_a", "annotator_b", "n_shared", "agreement", "kappa"
    ]
    assert (report.n_votes, report.n_items, report.n_annotators, report.n_classes) == (10, 10, 1, 3)


def test_krippendorff_alpha_unused_class_and_single_votes_change_nothing():
    counts = count_votes(votes_from_reliability(KRIPPENDORFF_2011)).to_numpy()
    padded = np.vstack([np.hstack([counts, np.zeros((len(counts), 2), int)]), [[0, 0, 0, 0, 0, 0, 1]]])
    assert krippendorff_alpha(padded, n_resamples=0).value == krippendorff_alpha(counts, n_resamples=0).value


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "empty"),
        ([("a", 1, 10)], "label 10 is out of range 0..9"),
        ([("a", 1, -1)], "label -1 is negative"),
        ([("a", 1, 1.5)], "label 1.5 is not a whole number"),
        ([("a", 1, "cat")], "label 'cat' is not a number"),
        ([("a", 1, 2), ("b", 1, "3")], "label '3' is not a number"),
        ([("a", 1, 2), ("a", 1, 3)], "annotator 1 voted twice on item 'a'"),
        ([("a", None, 2)], "annotator is missing"),
    ],
)
def test_encode_votes_rejects_bad_input_naming_it(rows, message):
    with pytest.raises(ValueError, match=message):
        encode_votes(votes_from_rows(rows), n_classes=10)


def test_encode_votes_rejects_missing_column():
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['label'\]"):
        encode_votes(pd.DataFrame({"item": [1], "annotator": [2]}))


@pytest.mark.parametrize(
    ("counts", "message"),
    [(np.array([1, 2]), "shape"), (np.array([[1, -1]]), r"counts\[0, 1\] = -1"), (np.array([[0.5, 1]]), "whole")],
)
def test_krippendorff_alpha_rejects_bad_counts(counts, message):
    with pytest.raises(ValueError, match=message):
        krippendorff_alpha(counts)


# --- bootstrap ------------------------------------------------------------------------------


def test_krippendorff_alpha_bootstrap_reproducible_with_seed():
    counts = count_votes(votes_from_reliability(FLEISS_1971.T.astype(float)))
    first = krippendorff_alpha(counts, n_resamples=200, seed=7)
    assert krippendorff_alpha(counts, n_resamples=200, seed=7) == first
    assert krippendorff_alpha(counts, n_resamples=200, seed=8) != first
    assert first.ci_low < first.value < first.ci_high


def test_agreement_report_shares_resamples_with_single_statistics():
    votes = votes_from_reliability(FLEISS_1971.T.astype(float))
    report = agreement_report(votes, n_resamples=300, seed=3)
    counts = count_votes(votes)
    assert report.fleiss_kappa == fleiss_kappa(counts, n_resamples=300, seed=3)
    assert report.percent_agreement == percent_agreement(counts, n_resamples=300, seed=3)
    assert report.krippendorff_alpha == krippendorff_alpha(counts, n_resamples=300, seed=3)


# --- real data ------------------------------------------------------------------------------


def test_fleiss_kappa_cifar10h_counts(shared_data):
    counts = np.load(shared_data / "cifar10h" / "cifar10h-counts.npy")  # (10000, 10), 47-63 votes
    estimate = fleiss_kappa(counts, n_resamples=200, seed=0)
    assert round(estimate.value, 3) == 0.915
    assert estimate.ci_low < estimate.value < estimate.ci_high


def test_krippendorff_alpha_cifar10n_matches_package(cifar10n_votes):
    alpha = krippendorff_alpha(count_votes(cifar10n_votes), n_resamples=0).value
    expected = krippendorff.alpha(
        reliability_data=reliability_matrix(cifar10n_votes), level_of_measurement="nominal"
    )
    assert alpha == pytest.approx(expected, abs=1e-9)
    assert round(alpha, 3) == 0.684


def test_krippendorff_alpha_cifar10s_matches_package(cifar10s_votes):
    alpha = krippendorff_alpha(count_votes(cifar10s_votes, n_classes=10), n_resamples=0).value
    expected = krippendorff.alpha(
        reliability_data=reliability_matrix(cifar10s_votes), level_of_measurement="nominal"
    )
    assert alpha == pytest.approx(expected, abs=1e-9)
    assert round(alpha, 3) == 0.750


def test_cohen_kappa_pairs_cifar10n_match_sklearn(cifar10n_votes):
    pairs = cohen_kappa_pairs(cifar10n_votes, min_shared=20)
    assert len(pairs) == 2562
    by_worker = {w: g.set_index("item")["label"] for w, g in cifar10n_votes.groupby("annotator")}
    for row in pairs.nlargest(10, "n_shared").itertuples():
        shared = pd.concat([by_worker[row.annotator_a], by_worker[row.annotator_b]], axis=1, join="inner")
        assert len(shared) == row.n_shared
        assert row.kappa == pytest.approx(cohen_kappa_score(shared.iloc[:, 0], shared.iloc[:, 1]), abs=1e-12)


def test_agreement_report_cifar10n(cifar10n_votes):
    report = agreement_report(cifar10n_votes, n_resamples=1000, seed=0)
    assert (report.n_votes, report.n_items, report.n_annotators, report.n_classes) == (150000, 50000, 747, 10)
    estimates = [report.percent_agreement, report.fleiss_kappa, report.krippendorff_alpha]
    assert [round(e.value, 3) for e in estimates] == [0.715, 0.684, 0.684]
    for estimate in estimates:
        assert estimate.ci_low < estimate.value < estimate.ci_high
        assert estimate.ci_high - estimate.ci_low < 0.01
    assert report.coincidence.to_numpy().sum() == pytest.approx(1.0, abs=1e-12)
    again = agreement_report(cifar10n_votes, n_resamples=1000, seed=0)
    assert again.krippendorff_alpha == report.krippendorff_alpha
