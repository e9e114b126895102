"""Consensus labels from several annotators, and how reliable each annotator looks against them.

Entry point: `dawid_skene(votes)` (Dawid-Skene EM with annotators shrunk toward the average
annotator); `majority_vote(votes)` is the baseline.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sparse

from core.agreement import EncodedVotes, encode_votes

_FLOOR = 1e-9  # added to every confusion cell so that log-probabilities stay finite


@dataclass(frozen=True)
class DawidSkeneResult:
    """Dawid-Skene consensus. Arrays follow the row order of ``items`` and ``annotators``.

    ``items`` columns: ``item``, ``label`` (the most probable class; exact ties go to the lower
    class index), ``confidence`` (its posterior probability), ``n_votes``.
    ``annotators`` columns: ``annotator``, ``n_labels``, ``accuracy`` (expected share of their
    labels that are the true class, under the posterior), ``bias`` (total-variation distance
    0..1 between their label distribution and the consensus distribution on the same items),
    ``overused_label`` (the class they give most in excess of the consensus).
    """

    items: pd.DataFrame
    annotators: pd.DataFrame
    posterior: np.ndarray  # (N, K) P(true class | votes)
    confusion: np.ndarray  # (J, K, K) P(annotator gives label l | true class k), [j, k, l]
    label_bias: np.ndarray  # (J, K) annotator's label shares minus consensus shares, same items
    class_prior: np.ndarray  # (K,) estimated share of each true class
    n_iter: int
    converged: bool


def majority_vote(votes: pd.DataFrame, *, n_classes: int | None = None) -> pd.DataFrame:
    """The most voted label of each item; ties go to the lowest class index (as ``np.argmax``).

    ``tied`` flags those items so that they can go to review rather than trust the tie-break.
    Columns: ``item`` (sorted), ``label``, ``n_votes``, ``support`` (share of the item's votes
    for ``label``), ``tied`` (bool: another class has as many votes).
    """
    enc = encode_votes(votes, n_classes=n_classes)
    counts = enc.count_matrix()  # (N, K)
    label = counts.argmax(axis=1)
    top = counts[np.arange(len(label)), label]
    n_votes = counts.sum(axis=1)
    return pd.DataFrame({
        "item": enc.items,
        "label": label.astype(np.int64),
        "n_votes": n_votes.astype(np.int64),
        "support": top / n_votes,
        "tied": (counts == top[:, None]).sum(axis=1) > 1,
    })


def dawid_skene(
    votes: pd.DataFrame,
    *,
    n_classes: int | None = None,
    prior_strength: float = 100.0,
    max_iter: int = 100,
    tol: float = 1e-3,
) -> DawidSkeneResult:
    """Dawid-Skene EM: per-annotator confusion matrices and a posterior over each item's class.

    Each annotator's confusion row k gets a Dirichlet prior worth ``prior_strength`` labels,
    centred on the average annotator's row k (the pooled confusion plus one correct label, so a
    class nobody is believed to show reads as "annotators are right"). An annotator with few
    labels is thus shrunk toward the average annotator; ``prior_strength=0`` is the classic
    maximum-likelihood Dawid-Skene. The default 100 suits crowds like CIFAR-10N/10S, where near
    full pooling is best; for crowds with prolific spammers 10-30 is better (simulated: +1-5
    points). Starts from vote shares; stops when no posterior moves by more than ``tol`` or
    after ``max_iter`` rounds.
    """
    _check_em_options(prior_strength=prior_strength, max_iter=max_iter, tol=tol)
    enc = encode_votes(votes, n_classes=n_classes)
    design = _vote_design(enc)  # (N, J*K): one 1 per vote at column annotator*K + label
    counts = enc.count_matrix().astype(np.float64)
    posterior = counts / counts.sum(axis=1, keepdims=True)  # (N, K)
    converged, n_iter = False, 0
    while n_iter < max_iter and not converged:
        confusion, prior = _maximise(design, posterior, prior_strength=prior_strength)
        updated = _expect(design, confusion, prior)
        converged = bool(np.abs(updated - posterior).max() < tol)
        posterior, n_iter = updated, n_iter + 1
    confusion, prior = _maximise(design, posterior, prior_strength=prior_strength)
    return _dawid_skene_result(
        enc, design, posterior, confusion, prior, n_iter=n_iter, converged=converged
    )


def _check_em_options(*, prior_strength: float, max_iter: int, tol: float) -> None:
    if not np.isfinite(prior_strength) or prior_strength < 0:
        raise ValueError(f"prior_strength must be a finite number >= 0, got {prior_strength!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")


def _vote_design(enc: EncodedVotes) -> sparse.csr_matrix:
    shape = (len(enc.items), len(enc.annotators) * enc.n_classes)
    columns = enc.annotator * enc.n_classes + enc.label
    return sparse.csr_matrix((np.ones(len(columns)), (enc.item, columns)), shape=shape)


def _maximise(
    design: sparse.csr_matrix, posterior: np.ndarray, *, prior_strength: float
) -> tuple[np.ndarray, np.ndarray]:
    """M step: (J, K, K) smoothed confusion matrices and the (K,) class prior."""
    k = posterior.shape[1]
    soft = (design.T @ posterior).reshape(-1, k, k).transpose(0, 2, 1)  # [j, true, given]
    pooled = soft.sum(axis=0) + np.eye(k)  # one correct label keeps unseen classes defined
    average = pooled / pooled.sum(axis=1, keepdims=True)  # (K, K) the average annotator
    smoothed = soft + prior_strength * average + _FLOOR
    confusion = smoothed / smoothed.sum(axis=2, keepdims=True)
    prior = (posterior.sum(axis=0) + 1) / (len(posterior) + k)  # Laplace: no class impossible
    return confusion, prior


def _expect(design: sparse.csr_matrix, confusion: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """E step in log space: (N, K) posterior over each item's true class."""
    k = len(prior)
    log_given = np.log(confusion).transpose(0, 2, 1).reshape(-1, k)  # [j*K + given, true]
    log_joint = design @ log_given + np.log(prior)  # (N, K)
    log_joint -= log_joint.max(axis=1, keepdims=True)
    joint = np.exp(log_joint, out=log_joint)  # in place: this step dominates an iteration
    joint /= joint.sum(axis=1, keepdims=True)
    return joint


def _dawid_skene_result(
    enc: EncodedVotes, design: sparse.csr_matrix, posterior: np.ndarray, confusion: np.ndarray,
    prior: np.ndarray, *, n_iter: int, converged: bool,
) -> DawidSkeneResult:
    label = posterior.argmax(axis=1)
    items = pd.DataFrame({
        "item": enc.items,
        "label": label.astype(np.int64),
        "confidence": posterior[np.arange(len(label)), label],
        "n_votes": np.bincount(enc.item, minlength=len(enc.items)).astype(np.int64),
    })
    annotators, label_bias = _profile_annotators(enc, design, posterior)
    return DawidSkeneResult(
        items, annotators, posterior, confusion, label_bias, prior, n_iter, converged
    )


def _profile_annotators(
    enc: EncodedVotes, design: sparse.csr_matrix, posterior: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    """Per annotator: label count, expected accuracy, and label shares against the consensus."""
    j, k = len(enc.annotators), enc.n_classes
    n_labels = np.bincount(enc.annotator, minlength=j)
    right = np.bincount(enc.annotator, weights=posterior[enc.item, enc.label], minlength=j)
    given = np.bincount(enc.annotator * k + enc.label, minlength=j * k).reshape(j, k)
    soft = (design.T @ posterior).reshape(j, k, k)  # [j, given, true] posterior mass
    consensus = soft.sum(axis=1)  # (J, K) soft consensus classes of the items they labelled
    label_bias = (given - consensus) / n_labels[:, None]
    table = pd.DataFrame({
        "annotator": enc.annotators,
        "n_labels": n_labels.astype(np.int64),
        "accuracy": right / n_labels,
        "bias": 0.5 * np.abs(label_bias).sum(axis=1),
        "overused_label": label_bias.argmax(axis=1).astype(np.int64),
    })
    return table, label_bias
