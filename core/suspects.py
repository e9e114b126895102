"""Suspect labels by confident learning (Northcutt et al. 2021): which given labels are likely wrong.

Entry point: `find_suspect_labels(given, probs)` takes each image's given class and out-of-sample
predicted probabilities (from k-fold cross-training, `core.autolabel.out_of_sample_probs`, or a
model trained on another split) and returns the images whose label is probably wrong, ranked.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

METHODS = ("prune_by_noise_rate", "prune_by_class", "confident_joint")


@dataclass(frozen=True)
class ConfidentJoint:
    """The counts behind the flags. ``joint[i, j]``: images given class i whose confident class
    is j (calibrated so each row sums to the images given i); ``thresholds[j]``: the mean
    probability of j over images given j."""

    joint: np.ndarray  # (K, K) calibrated confident joint, rows: given, columns: true (estimated)
    thresholds: np.ndarray  # (K,) per-class confidence thresholds
    noise_rate: float  # estimated share of wrong labels: off-diagonal mass of the joint


def _check_inputs(given: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    given, probs = np.asarray(given), np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(given) != len(probs):
        raise ValueError(f"probs must be (N, K) with one row per given label: got {probs.shape} "
                         f"for {len(given)} labels")
    if len(given) == 0:
        raise ValueError("no labelled images to check")
    k = probs.shape[1]
    bad = (given < 0) | (given >= k)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"given label {given[first]} at row {first} is outside 0..{k - 1}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probs must be finite and non-negative")
    return given.astype(np.int64), probs / probs.sum(axis=1, keepdims=True).clip(1e-12)


def estimate_confident_joint(given, probs) -> ConfidentJoint:
    """The calibrated confident joint of (given label, estimated true label)."""
    given, probs = _check_inputs(given, probs)
    n, k = probs.shape
    counts = np.bincount(given, minlength=k)  # (K,) images per given class
    sums = np.bincount(given, weights=probs[np.arange(n), given], minlength=k)
    thresholds = np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)
    above = probs >= thresholds - 1e-12  # (N, K) confidently this class
    confident = np.where(above, probs, -1).argmax(axis=1)
    has = above.any(axis=1)
    raw = np.zeros((k, k))
    np.add.at(raw, (given[has], confident[has]), 1)
    row = raw.sum(axis=1, keepdims=True)
    joint = np.where(row > 0, raw / np.maximum(row, 1) * counts[:, None], 0.0)
    noise = float(1 - np.trace(joint) / max(joint.sum(), 1))
    return ConfidentJoint(joint=joint, thresholds=thresholds, noise_rate=noise)


def _flag_by_noise_rate(given, probs, joint: np.ndarray) -> np.ndarray:
    """For each off-diagonal cell (i, j) flag the round(joint[i, j]) images given i with the
    largest margin p[j] - p[i]; an image flagged by two cells counts once."""
    flagged = np.zeros(len(given), bool)
    k = probs.shape[1]
    for i in range(k):
        members = np.flatnonzero(given == i)
        keep = max(len(members) - 1, 0)  # never flag every image of a class
        for j in range(k):
            take = min(int(round(joint[i, j])), keep) if j != i else 0
            if take:
                margin = probs[members, j] - probs[members, i]
                flagged[members[np.argsort(-margin, kind="stable")[:take]]] = True
    return flagged


def _flag_by_class(given, probs, joint: np.ndarray) -> np.ndarray:
    """For each class i flag the (off-diagonal row sum) images given i least confident in i."""
    flagged = np.zeros(len(given), bool)
    for i in range(probs.shape[1]):
        members = np.flatnonzero(given == i)
        take = min(int(round(joint[i].sum() - joint[i, i])), max(len(members) - 1, 0))
        if take:
            flagged[members[np.argsort(probs[members, i], kind="stable")[:take]]] = True
    return flagged


def flag_label_issues(given, probs, *, method: str = "prune_by_noise_rate") -> np.ndarray:
    """(N,) bool: which labels confident learning flags as wrong. `method` is one of METHODS:
    prune by noise rate (cleanlab's default), prune by class, or the off-diagonal of the
    confident joint (the image's confident class differs from its label)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    given, probs = _check_inputs(given, probs)
    cj = estimate_confident_joint(given, probs)
    if method == "prune_by_noise_rate":
        flagged = _flag_by_noise_rate(given, probs, cj.joint)
    elif method == "prune_by_class":
        flagged = _flag_by_class(given, probs, cj.joint)
    else:
        above = probs >= cj.thresholds - 1e-12
        confident = np.where(above, probs, -1).argmax(axis=1)
        flagged = above.any(axis=1) & (confident != given)
    # an image whose most probable class is its label is never flagged
    return flagged & (probs.argmax(axis=1) != given)


def find_suspect_labels(given, probs, *, method: str = "prune_by_noise_rate") -> pd.DataFrame:
    """The flagged images, most suspect first. Columns: row (index into the inputs), given,
    suggested (most probable class other than the given one), score (1 - p[given]: how likely
    the label is wrong), p_given, p_suggested."""
    given, probs = _check_inputs(given, probs)
    flagged = np.flatnonzero(flag_label_issues(given, probs, method=method))
    p_given = probs[flagged, given[flagged]]
    others = probs[flagged].copy()
    others[np.arange(len(flagged)), given[flagged]] = -1
    suggested = others.argmax(axis=1)
    frame = pd.DataFrame({"row": flagged, "given": given[flagged], "suggested": suggested,
                          "score": 1 - p_given, "p_given": p_given,
                          "p_suggested": probs[flagged, suggested]})
    return frame.sort_values(["score", "row"], ascending=[False, True], kind="stable",
                             ignore_index=True)
