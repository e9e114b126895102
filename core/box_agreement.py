"""Agreement on boxes and polygons: objects of two annotators on an image matched one-to-one by
IoU with an optimal (Hungarian) assignment, then precision, recall, F1, the matched-IoU
distribution and Krippendorff's alpha over matched and unmatched objects.

Entry point: `object_agreement(objects, *, iou_threshold=0.5)` → `ObjectAgreement`. A model run
is an annotator like any other, so a micro-model is scored against people the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from core.agreement import krippendorff_alpha

OBJECT_COLUMNS = ("image_id", "annotator", "class_id", "x", "y", "w", "h")


@dataclass(frozen=True)
class ObjectAgreement:
    """`matches`: image_id, annotator_a, annotator_b, class_a, class_b (NaN when unmatched), iou
    — one row per matched pair and per unmatched object. `pairs`: annotator_a, annotator_b,
    class, matched, only_a, only_b, precision, recall, f1, mean_iou — per annotator pair and
    class (class 'all' sums them), with annotator_a taken as the reference. `alpha`: nominal
    Krippendorff's alpha where each matched pair or unmatched object is a unit and 'absent'
    is one more category."""
    iou_threshold: float
    matches: pd.DataFrame
    pairs: pd.DataFrame
    alpha: float


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of boxes a (n, 4) and b (m, 4) given as x, y, w, h."""
    ax0, ay0, ax1, ay1 = a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax1[:, None], bx1[None]) - np.maximum(ax0[:, None], bx0[None]), 0, None)
    ih = np.clip(np.minimum(ay1[:, None], by1[None]) - np.maximum(ay0[:, None], by0[None]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_objects(a: pd.DataFrame, b: pd.DataFrame, *, iou_threshold: float) -> list[tuple]:
    """Optimal one-to-one matching of two annotators' objects on one image (any class: a class
    disagreement on the same object is a matched pair with two classes). Returns tuples
    (row in a or None, row in b or None, iou)."""
    boxes_a = a[["x", "y", "w", "h"]].to_numpy(float)
    boxes_b = b[["x", "y", "w", "h"]].to_numpy(float)
    iou = iou_matrix(boxes_a, boxes_b) if len(a) and len(b) else np.zeros((len(a), len(b)))
    rows, cols = linear_sum_assignment(-iou) if iou.size else (np.array([], int), np.array([], int))
    keep = iou[rows, cols] >= iou_threshold
    rows, cols = rows[keep], cols[keep]
    found = [(int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols)]
    found += [(int(r), None, 0.0) for r in sorted(set(range(len(a))) - set(rows.tolist()))]
    found += [(None, int(c), 0.0) for c in sorted(set(range(len(b))) - set(cols.tolist()))]
    return found


def _match_rows(objects: pd.DataFrame, *, iou_threshold: float) -> pd.DataFrame:
    rows = []
    for image_id, on_image in objects.groupby("image_id", sort=True):
        layers = {name: g for name, g in on_image.groupby("annotator", sort=True)}
        for name_a, name_b in combinations(sorted(layers), 2):
            a, b = layers[name_a], layers[name_b]
            for ra, rb, iou in match_objects(a, b, iou_threshold=iou_threshold):
                rows.append({"image_id": image_id, "annotator_a": name_a, "annotator_b": name_b,
                             "class_a": a["class_id"].iloc[ra] if ra is not None else np.nan,
                             "class_b": b["class_id"].iloc[rb] if rb is not None else np.nan,
                             "iou": iou if ra is not None and rb is not None else np.nan})
    return pd.DataFrame(rows, columns=["image_id", "annotator_a", "annotator_b", "class_a",
                                       "class_b", "iou"])


def _pair_scores(matches: pd.DataFrame) -> pd.DataFrame:
    both = matches["class_a"].notna() & matches["class_b"].notna()
    same = both & (matches["class_a"] == matches["class_b"])
    frame = matches.assign(
        klass=matches["class_a"].fillna(matches["class_b"]).astype("Int64").astype(str),
        matched=same.astype(int), only_a=(matches["class_a"].notna() & ~same).astype(int),
        only_b=(matches["class_b"].notna() & ~same).astype(int),
        matched_iou=matches["iou"].where(same))
    keys = ["annotator_a", "annotator_b"]
    per_class = frame.groupby(keys + ["klass"]).agg(
        matched=("matched", "sum"), only_a=("only_a", "sum"), only_b=("only_b", "sum"),
        mean_iou=("matched_iou", "mean")).reset_index()
    overall = frame.groupby(keys).agg(matched=("matched", "sum"), only_a=("only_a", "sum"),
                                      only_b=("only_b", "sum"),
                                      mean_iou=("matched_iou", "mean")).reset_index()
    table = pd.concat([per_class, overall.assign(klass="all")], ignore_index=True)
    table = table.rename(columns={"klass": "class"})
    with np.errstate(divide="ignore", invalid="ignore"):
        table["precision"] = table["matched"] / (table["matched"] + table["only_b"])
        table["recall"] = table["matched"] / (table["matched"] + table["only_a"])
        table["f1"] = 2 * table["matched"] / (2 * table["matched"] + table["only_a"] + table["only_b"])
    return table


def _alpha(matches: pd.DataFrame, n_classes: int) -> float:
    """Units: each matched pair or unmatched object; values: its class from each side, with
    'absent' (= n_classes) where one side has nothing there."""
    if matches.empty:
        return float("nan")
    absent = n_classes
    a = matches["class_a"].fillna(absent).astype(int).to_numpy()
    b = matches["class_b"].fillna(absent).astype(int).to_numpy()
    counts = np.zeros((len(matches), n_classes + 1), dtype=np.int64)  # (units, K + 1)
    np.add.at(counts, (np.arange(len(a)), a), 1)
    np.add.at(counts, (np.arange(len(b)), b), 1)
    return krippendorff_alpha(counts, n_resamples=0).value


def object_agreement(objects: pd.DataFrame, *, iou_threshold: float = 0.5,
                     n_classes: int | None = None) -> ObjectAgreement:
    """`objects` columns: image_id, annotator, class_id, x, y, w, h (pixels; polygons by their
    bounding box). Every pair of annotators who both drew on an image is compared there."""
    missing = set(OBJECT_COLUMNS) - set(objects.columns)
    if missing:
        raise ValueError(f"objects lack column(s) {', '.join(sorted(missing))}")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    n_classes = n_classes or (int(objects["class_id"].max()) + 1 if len(objects) else 1)
    matches = _match_rows(objects, iou_threshold=iou_threshold)
    return ObjectAgreement(iou_threshold, matches, _pair_scores(matches), _alpha(matches, n_classes))


def dataset_object_agreement(con, dataset_id: int, *, iou_threshold: float = 0.5) -> ObjectAgreement | None:
    """`object_agreement` over the current boxes and polygons of a dataset's layers (people,
    imports and model runs); None when no image has objects from two layers."""
    from core import catalog

    objects = catalog.object_layers(con, dataset_id)
    if objects.empty:
        return None
    n_classes = len(catalog.class_table(con, dataset_id))
    return object_agreement(objects, iou_threshold=iou_threshold, n_classes=max(n_classes, 1))
