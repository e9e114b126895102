"""Tests for core.consensus: majority vote and Dawid-Skene, by hand and on CIFAR-10N."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from core.consensus import dawid_skene, majority_vote


def votes_from_rows(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item", "annotator", "label"])


def honest_and_adversarial_votes(n_items: int = 60, n_classes: int = 3) -> pd.DataFrame:
    """Three annotators always right (truth = item % K) and one always one class off."""
    rows = [(i, name, i % n_classes) for i in range(n_items) for name in ("ann", "bob", "cid")]
    rows += [(i, "eve", (i + 1) % n_classes) for i in range(n_items)]
    return votes_from_rows(rows)


@pytest.fixture(scope="module")
def cifar10n(shared_data) -> tuple[pd.DataFrame, pd.Series]:
    """CIFAR-10N votes (worker k of a batch of 10 train indices gave random_label{k}) and truth."""
    labels = pd.read_csv(shared_data / "cifar10n" / "cifar10n_labels.csv")
    side = pd.read_csv(shared_data / "cifar10n" / "side_info_cifar10N.csv")
    first = side["Image-batch"].str.split("--", expand=True).astype(int)  # "0--9" -> 0, 9
    workers = side.set_index(first[0] // 10)
    batch = labels["train_index"] // 10
    votes = pd.concat([
        pd.DataFrame({
            "item": labels["train_index"],
            "annotator": workers.loc[batch, f"Worker{k}-id"].to_numpy(),
            "label": labels[f"random_label{k}"],
        })
        for k in (1, 2, 3)
    ], ignore_index=True)
    return votes, labels.set_index("train_index")["clean_label"]


def accuracy(consensus: pd.DataFrame, truth: pd.Series) -> float:
    return float((consensus["label"].to_numpy() == truth.loc[consensus["item"]].to_numpy()).mean())


# --- by hand --------------------------------------------------------------------------------


def test_majority_vote_ties_go_to_lowest_class():
    votes = votes_from_rows([
        ("x", 1, 2), ("x", 2, 2), ("x", 3, 0),  # 2 wins, 2 of 3
        ("y", 1, 4), ("y", 2, 1),  # tie 1 / 4 -> 1
        ("z", 1, 3),
    ])
    assert majority_vote(votes).to_dict("list") == {
        "item": ["x", "y", "z"],
        "label": [2, 1, 3],
        "n_votes": [3, 2, 1],
        "support": [2 / 3, 0.5, 1.0],
        "tied": [False, True, False],
    }


def test_dawid_skene_finds_adversarial_annotator():
    result = dawid_skene(honest_and_adversarial_votes(), prior_strength=0)
    assert result.converged
    assert result.items["label"].tolist() == [i % 3 for i in range(60)]
    table = result.annotators.set_index("annotator")
    assert table["accuracy"].round(6).to_dict() == {"ann": 1.0, "bob": 1.0, "cid": 1.0, "eve": 0.0}
    assert table["n_labels"].tolist() == [60, 60, 60, 60]
    eve = result.confusion[3]  # rows: true class, columns: label given
    np.testing.assert_allclose(eve, [[0, 1, 0], [0, 0, 1], [1, 0, 0]], atol=1e-6)
    assert table.loc["eve", "bias"] == pytest.approx(0.0, abs=1e-9)  # off, but every class equally


def test_dawid_skene_shrinks_sparse_annotator_toward_average():
    honest = [(i, name, i % 3) for i in range(60) for name in ("ann", "bob", "cid")]
    votes = votes_from_rows(honest + [(0, "new", 1)])  # one vote, wrong (item 0 is class 0)
    plain = dawid_skene(votes, prior_strength=0).confusion[3]
    shrunk = dawid_skene(votes, prior_strength=100).confusion[3]
    np.testing.assert_allclose(plain[0], [0, 1, 0], atol=1e-6)  # one vote decides the whole row
    # average row 0: 60 honest votes + new's 1 + the prior's 1 correct = [61, 1, 0] / 62
    expected = (np.array([0, 1, 0]) + 100 * np.array([61, 1, 0]) / 62) / 101
    np.testing.assert_allclose(shrunk[0], expected, atol=1e-5)  # item 0 is 99.9..% class 0
    np.testing.assert_allclose(shrunk[1], [0, 1, 0], atol=1e-6)  # no data: the average row


def test_dawid_skene_one_annotator_follows_them():
    votes = votes_from_rows([(i, "solo", i % 4) for i in range(12)])
    result = dawid_skene(votes, n_classes=6)
    assert result.items["label"].tolist() == [i % 4 for i in range(12)]
    np.testing.assert_allclose(result.posterior.sum(axis=1), 1.0)
    assert result.posterior[:, 4:].max() < 1e-6  # classes nobody used
    assert result.posterior.shape == (12, 6) and result.confusion.shape == (1, 6, 6)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"prior_strength": -1.0}, "prior_strength"), ({"max_iter": 0}, "max_iter"), ({"tol": 0}, "tol")],
)
def test_dawid_skene_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        dawid_skene(honest_and_adversarial_votes(), **options)


# --- CIFAR-10N ------------------------------------------------------------------------------


def test_majority_vote_cifar10n_accuracy(cifar10n):
    votes, truth = cifar10n
    consensus = majority_vote(votes)
    assert round(accuracy(consensus, truth), 3) == 0.912
    assert int(consensus["tied"].sum()) == 3041  # three different labels


def test_dawid_skene_plain_cifar10n_accuracy(cifar10n):
    votes, truth = cifar10n
    assert round(accuracy(dawid_skene(votes, prior_strength=0).items, truth), 3) == 0.909


def test_dawid_skene_default_cifar10n_beats_majority_vote(cifar10n):
    votes, truth = cifar10n
    result = dawid_skene(votes)
    assert result.converged
    assert round(accuracy(result.items, truth), 3) == 0.919
    assert accuracy(result.items, truth) >= accuracy(majority_vote(votes), truth)
    np.testing.assert_allclose(result.label_bias.sum(axis=1), 0.0, atol=1e-12)
    # estimated vs measured accuracy of workers with at least 50 labels
    measured = (votes["label"].to_numpy() == truth.loc[votes["item"]].to_numpy())
    per_worker = votes.assign(right=measured).groupby("annotator")["right"].agg(["mean", "size"])
    table = result.annotators.set_index("annotator").join(per_worker)
    table = table[table["size"] >= 50]
    assert len(table) == 479
    assert round(spearmanr(table["accuracy"], table["mean"]).statistic, 3) == 0.746
