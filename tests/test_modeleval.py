"""core.modeleval: accuracy, per-class precision/recall, kappa with its interval, reliability,
precision versus coverage and uncertainty, on cases worked out by hand."""
import numpy as np
import pandas as pd
import pytest

from core import agreement, modeleval

# 4 images, 2 classes. Confidences 0.9 (right), 0.8 (right), 0.7 (wrong), 0.6 (right).
LABELS = np.array([0, 1, 0, 1])
PROBS = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])


def test_precision_coverage_by_hand():
    curve = modeleval.precision_coverage(LABELS, PROBS)
    assert curve["threshold"].tolist() == [0.9, 0.8, 0.7, 0.6]
    assert curve["coverage"].tolist() == [0.25, 0.5, 0.75, 1.0]
    assert curve["precision"].tolist() == pytest.approx([1, 1, 2 / 3, 3 / 4])


def test_precision_coverage_ties_share_one_row():
    curve = modeleval.precision_coverage([0, 1, 1], [[0.8, 0.2], [0.8, 0.2], [0.3, 0.7]])
    assert curve["threshold"].tolist() == [0.8, 0.7]
    assert curve["images"].tolist() == [2, 3]
    assert curve["precision"].tolist() == pytest.approx([0.5, 2 / 3])


def test_threshold_and_coverage_at_precision():
    curve = modeleval.precision_coverage(LABELS, PROBS)
    assert modeleval.threshold_for_precision(curve, 0.95) == 0.8
    assert modeleval.coverage_at_precision(LABELS, PROBS, 0.95) == 0.5
    assert modeleval.coverage_at_precision(LABELS, PROBS, 0.7) == 1.0
    assert modeleval.threshold_for_precision(curve.iloc[2:], 0.9) is None


def test_per_class_table_by_hand():
    table = modeleval.per_class_table(LABELS, PROBS.argmax(1), ["cat", "dog"])
    # predictions 0, 1, 1, 1: class 0 precision 1/1 recall 1/2; class 1 precision 2/3 recall 2/2
    assert table["precision"].tolist() == pytest.approx([1.0, 2 / 3])
    assert table["recall"].tolist() == pytest.approx([0.5, 1.0])
    assert table["support"].tolist() == [2, 2]


def test_kappa_matches_the_agreement_module():
    rng = np.random.default_rng(0)
    people = rng.integers(0, 3, 200)
    model = np.where(rng.random(200) < 0.7, people, rng.integers(0, 3, 200))
    estimate = modeleval.kappa_estimate(people, model, n_classes=3, n_resamples=500, seed=1)
    votes = pd.DataFrame({"item": np.r_[np.arange(200), np.arange(200)],
                          "annotator": ["people"] * 200 + ["model"] * 200,
                          "label": np.r_[people, model]})
    reference = agreement.cohen_kappa_pairs(votes, n_classes=3)["kappa"].iloc[0]
    assert estimate.value == pytest.approx(reference)
    assert estimate.ci_low < estimate.value < estimate.ci_high
    assert estimate == modeleval.kappa_estimate(people, model, n_classes=3, n_resamples=500, seed=1)


def test_kappa_of_perfect_agreement_is_one():
    assert modeleval.kappa_estimate([0, 1, 2], [0, 1, 2], n_classes=3, n_resamples=0).value == 1.0


def test_reliability_curve_bins_by_confidence():
    curve = modeleval.reliability_curve(LABELS, PROBS, bins=5)
    # bins of width 0.2: 0.6 in (0.4, 0.6], 0.7 and 0.8 in (0.6, 0.8], 0.9 in (0.8, 1]
    assert curve["images"].tolist() == [1, 2, 1]
    assert curve["accuracy"].tolist() == pytest.approx([1.0, 0.5, 1.0])
    assert curve["confidence"].tolist() == pytest.approx([0.6, 0.75, 0.9])


def test_evaluate_predictions_round_trips_through_json():
    evaluation = modeleval.evaluate_predictions(LABELS, PROBS, classes=["cat", "dog"],
                                                n_resamples=50)
    assert evaluation.accuracy == 0.75
    assert evaluation.confusion.tolist() == [[1, 1], [0, 2]]
    again = modeleval.Evaluation.from_json(evaluation.to_json())
    assert again.accuracy == evaluation.accuracy and again.kappa == evaluation.kappa
    pd.testing.assert_frame_equal(again.coverage, evaluation.coverage, check_dtype=False)


def test_evaluate_predictions_without_labels_says_so():
    with pytest.raises(ValueError, match="no held-out labels"):
        modeleval.evaluate_predictions([], np.zeros((0, 2)), classes=["a", "b"])


@pytest.mark.parametrize("strategy, expected", [
    ("least-confidence", [0.1, 0.45, 0.5]),
    ("margin", [0.2, 0.85, 0.9]),
])
def test_uncertainty_strategies(strategy, expected):
    probs = np.array([[0.9, 0.1, 0.0], [0.55, 0.05, 0.4], [0.5, 0.4, 0.1]])
    assert modeleval.uncertainty(probs, strategy=strategy).tolist() == pytest.approx(expected)


def test_uncertainty_entropy_is_highest_when_uniform():
    values = modeleval.uncertainty(np.array([[1.0, 0.0], [0.5, 0.5]]), strategy="entropy")
    assert values.tolist() == pytest.approx([0.0, np.log(2)])


def test_uncertainty_unknown_strategy_names_it():
    with pytest.raises(ValueError, match="'random'"):
        modeleval.uncertainty(np.eye(2), strategy="random")
