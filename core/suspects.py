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
LARGE = 10_000  # more labels than this are cross-trained on coarser (smaller) patch features


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


# ---------------------------------------------------------------- on a catalog


def _given_labels(con, dataset, *, split: str | None, classes) -> tuple[pd.DataFrame, list[str]]:
    """People's labels of the split (columns image_id, path, split, class_id, label) and the
    class names in label order."""
    from core import catalog

    labels = catalog.human_class_labels(con, dataset.dataset_id, split=split)
    table = catalog.class_table(con, dataset.dataset_id)
    if classes:
        table = table[table["name"].isin(classes)]
    table = table[table["class_id"].isin(labels["class_id"])]
    index = {c: k for k, c in enumerate(table["class_id"])}
    labels = labels[labels["class_id"].isin(index)]
    return labels.assign(label=labels["class_id"].map(index)), table["name"].tolist()


def _load_pixels(paths: list[str], size: int, *, engine: str, ray_address: str | None):
    """(N, size, size, 3) pixels, read here or by Ray tasks (`core.rayengine`)."""
    if engine == "ray":
        from core import rayengine

        return rayengine.load_images(paths, size=size, address=ray_address)
    from core import micromodel

    return micromodel.load_images(paths, size=size)


def find_label_issues(con, dataset, *, split: str | None = None, train_split: str | None = None,
                      folds: int = 5, classes=None, config=(), seed: int = 0,
                      weights: str | None = None, progress=None, engine: str = "local",
                      ray_address: str | None = None) -> pd.DataFrame:
    """People's labels of `split` that are probably wrong, most suspect first.

    Out-of-sample probabilities come from `folds`-fold cross-training within the split, or,
    with `train_split`, from one model trained on that split's labels. `config`: MicroConfig
    fields to override as (field, value) pairs. `engine` 'ray': images are read (and, with
    `train_split`, predicted) by tasks on the Ray cluster at `ray_address`; models train here.
    Columns: image_id, image (path as stored), split, given, suggested (class names), score
    (1 - p[given]), p_given, p_suggested.
    """
    from core import micromodel

    if engine != "local":
        from core.rayengine import check_engine

        check_engine(engine)

    given, names = _given_labels(con, dataset, split=split, classes=classes)
    if len(names) < 2:
        raise ValueError(f"people labelled {len(names)} class(es) in "
                         f"{split or 'the dataset'}: suspect labels need two or more")
    overrides = dict(config)
    if len(given) > LARGE and overrides.get("arch", "patches") == "patches":
        overrides.setdefault("pool", 2)  # a 2x2 pyramid keeps N x D features in memory
    cfg = micromodel.MicroConfig(classes=tuple(names), seed=seed, **overrides)
    paths = [f"{dataset.root}/{p}" for p in given["path"]]
    pixels = _load_pixels(paths, cfg.image_size, engine=engine, ray_address=ray_address)
    if train_split is None:
        probs = micromodel.cross_val_proba(pixels, given["label"].to_numpy(), config=cfg,
                                           folds=folds, weights=weights, progress=progress)
    else:
        train, train_names = _given_labels(con, dataset, split=train_split, classes=names)
        if train_names != names:
            raise ValueError(f"split {train_split!r} has labels of {', '.join(train_names)}, "
                             f"but {split or 'the dataset'} has {', '.join(names)}")
        images = _load_pixels([f"{dataset.root}/{p}" for p in train["path"]], cfg.image_size,
                              engine=engine, ray_address=ray_address)
        model = micromodel.train_micromodel(images, train["label"].to_numpy(), config=cfg,
                                            unlabelled=pixels, weights=weights,
                                            progress=progress).model
        probs = (micromodel.predict_proba(model, pixels) if engine == "local" else
                 _cluster_proba(model, paths, ray_address))
    return _issue_table(given.reset_index(drop=True), names, probs)


def _cluster_proba(model, paths: list[str], ray_address: str | None) -> np.ndarray:
    """`predict_proba` of the files by Ray tasks: each reads its share and runs the model."""
    from core import rayengine

    return rayengine.predict_files(model, paths, address=ray_address)


def _issue_table(given: pd.DataFrame, names: list[str], probs: np.ndarray) -> pd.DataFrame:
    found = find_suspect_labels(given["label"].to_numpy(), probs)
    rows = given.iloc[found["row"].to_numpy()]
    return pd.DataFrame({"image_id": rows["image_id"].to_numpy(), "image": rows["path"].to_numpy(),
                         "split": rows["split"].to_numpy(),
                         "given": np.array(names, dtype=object)[found["given"].to_numpy()],
                         "suggested": np.array(names, dtype=object)[found["suggested"].to_numpy()],
                         "score": found["score"].to_numpy(), "p_given": found["p_given"].to_numpy(),
                         "p_suggested": found["p_suggested"].to_numpy()})


def send_to_queue(con, dataset, issues: pd.DataFrame, *, created_by: str | None = None,
                  name: str = "suspect labels") -> int:
    """A review queue (kind 'suspect') of the issues in their order, each with its reason; a
    lead's act (`created_by`)."""
    from core import queues

    reasons = [f"given {g}, likely {s} (p {ps:.2f} vs {pg:.2f})" for g, s, ps, pg in
               zip(issues["given"], issues["suggested"], issues["p_suggested"], issues["p_given"])]
    items = pd.DataFrame({"image_id": issues["image_id"].to_numpy(), "reason": reasons})
    return queues.create_queue(con, dataset.dataset_id, name, "suspect", items,
                               created_by=created_by)


def issues_csv(issues: pd.DataFrame) -> str:
    """The issues as CSV text: image, split, given, suggested, score, p_given, p_suggested."""
    columns = ["image", "split", "given", "suggested", "score", "p_given", "p_suggested"]
    return issues[columns].to_csv(index=False, float_format="%.4f")
