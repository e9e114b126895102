"""core.suspects: the confident joint and the flagged labels on a case worked out by hand, the
three pruning methods, bad input, and (when installed) agreement with cleanlab."""
import numpy as np
import pytest

from core import suspects

# Six images, two classes. Thresholds: t0 = (.9 + .8 + .2) / 3, t1 = (.9 + .7 + .3) / 3, both
# 0.633. Confident classes: 0, 0, 1 | 1, 1, 0, so images 2 and 5 sit off the diagonal.
GIVEN = np.array([0, 0, 0, 1, 1, 1])
PROBS = np.array([[.9, .1], [.8, .2], [.2, .8], [.1, .9], [.3, .7], [.7, .3]])


def test_estimate_confident_joint_by_hand():
    cj = suspects.estimate_confident_joint(GIVEN, PROBS)
    assert cj.thresholds == pytest.approx([1.9 / 3, 1.9 / 3])
    assert cj.joint.tolist() == [[2, 1], [1, 2]]
    assert cj.noise_rate == pytest.approx(2 / 6)


@pytest.mark.parametrize("method", suspects.METHODS)
def test_flag_label_issues_by_hand(method):
    assert np.flatnonzero(suspects.flag_label_issues(GIVEN, PROBS, method=method)).tolist() == [2, 5]


def test_find_suspect_labels_ranks_most_suspect_first():
    found = suspects.find_suspect_labels(GIVEN, PROBS)
    assert found["row"].tolist() == [2, 5]
    assert found["suggested"].tolist() == [1, 0]
    assert found["score"].tolist() == pytest.approx([0.8, 0.7])


def test_calibration_scales_rows_to_label_counts():
    # t0 = (.1 + .5 + .5 + .3) / 4 = .35, t1 = .85. Class 0's four images: confidently 1, 0,
    # 0 and nothing (.3 < t0, .7 < t1): raw row [2, 1] over 3, scaled to the 4 labels
    given = np.array([0, 0, 0, 0, 1, 1])
    probs = np.array([[.1, .9], [.5, .5], [.5, .5], [.3, .7], [.1, .9], [.2, .8]])
    cj = suspects.estimate_confident_joint(given, probs)
    assert cj.thresholds == pytest.approx([0.35, 0.85])
    assert cj.joint[0].tolist() == pytest.approx([8 / 3, 4 / 3])


def test_a_label_its_model_agrees_with_is_never_flagged():
    given = np.array([0, 0, 1, 1])
    probs = np.array([[.6, .4], [.9, .1], [.2, .8], [.45, .55]])
    assert not suspects.flag_label_issues(given, probs, method="prune_by_class").any()


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="outside 0..1"):
        suspects.find_suspect_labels([0, 2], [[.5, .5], [.5, .5]])
    with pytest.raises(ValueError, match="one row per given label"):
        suspects.find_suspect_labels([0], [[.5, .5], [.5, .5]])
    with pytest.raises(ValueError, match="no labelled images"):
        suspects.find_suspect_labels([], np.zeros((0, 2)))
    with pytest.raises(ValueError, match="unknown method"):
        suspects.flag_label_issues(GIVEN, PROBS, method="vote")


def _noisy_problem(seed: int = 0, n: int = 2000, k: int = 4):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + 3 * np.eye(k)[true]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    given = np.where(rng.random(n) < 0.15, rng.integers(0, k, n), true)
    return true, given, probs


def test_flags_find_most_wrong_labels_on_a_synthetic_problem():
    true, given, probs = _noisy_problem()
    flagged = suspects.flag_label_issues(given, probs)
    wrong = given != true
    assert (flagged & wrong).sum() / flagged.sum() > 0.8
    assert (flagged & wrong).sum() / wrong.sum() > 0.6


def test_agrees_with_cleanlab_on_a_synthetic_problem():
    filter_module = pytest.importorskip("cleanlab.filter")
    _, given, probs = _noisy_problem(seed=1)
    ours = suspects.flag_label_issues(given, probs)
    theirs = filter_module.find_label_issues(given, probs, filter_by="prune_by_noise_rate")
    assert (ours == theirs).mean() > 0.97
