"""core.balance: imbalance figures and sampling weights, on counts worked out by hand."""
import math

import pandas as pd
import pytest

from core.balance import imbalance, sampling_weights


def test_imbalance_uniform_counts():
    shape = imbalance(pd.Series([5, 5, 5, 5], index=list("abcd")))
    assert shape.classes == 4 and shape.ratio == 1.0
    assert shape.effective_classes == pytest.approx(4.0)


def test_imbalance_skewed_counts():
    # shares 0.75 and 0.25: entropy = -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.5623351446
    shape = imbalance(pd.Series([300, 100], index=["big", "small"]))
    assert shape.ratio == 3.0
    assert shape.effective_classes == pytest.approx(math.exp(0.5623351446188083))


def test_imbalance_empty_class_is_infinite():
    assert imbalance(pd.Series([4, 0], index=["a", "b"])).ratio == math.inf


def test_sampling_weights_uniform_target():
    weights = sampling_weights(pd.Series([300, 100], index=["big", "small"]))
    # current shares 0.75 / 0.25, target 0.5 / 0.5 → weights 2/3 and 2
    assert weights["weight"].tolist() == pytest.approx([2 / 3, 2.0])
    # weighted draws per class are then equal: 300 * 2/3 == 100 * 2
    assert (weights["count"] * weights["weight"]).tolist() == pytest.approx([200.0, 200.0])


def test_sampling_weights_custom_target():
    counts = pd.Series([50, 50], index=["a", "b"])
    weights = sampling_weights(counts, target=pd.Series({"a": 3.0, "b": 1.0}))
    assert weights["target_share"].tolist() == [0.75, 0.25]
    assert weights["weight"].tolist() == pytest.approx([1.5, 0.5])


def test_sampling_weights_zero_target_is_refused():
    with pytest.raises(ValueError, match="zero share"):
        sampling_weights(pd.Series([1, 2], index=["a", "b"]), target=pd.Series({"a": 0, "b": 0}))
