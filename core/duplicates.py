"""Duplicates: exact copies (same bytes, same pixels), near duplicates by perceptual hash, the
leakage they cause between splits, and their resolution as reversible image events.

Entry points: `find_duplicates(con, dataset, method=..., max_distance=...)` → `DuplicateReport`;
`resolve_keep_one`, `move_group`, `exclude_images`, `undo_resolution` write image events;
`mark_pairs` records people's verdicts and `threshold_quality` turns them into precision/recall.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from core import catalog
from core.hashsearch import find_pairs_within, group_pairs, list_groups

METHODS = ("phash", "dhash")
# Chosen from measurement (bench/calibrate_duplicates.py, table in bench/RESULTS.md): on the
# 4,000 CIFAR-10 JPEG / lossless pairs, phash at distance 4 finds 99.92% of them with 47 false
# matches against 50,000 other images; going to 6 adds 3 true pairs for 41 more false ones.
# dhash needs distance 8 for the same recall, with 174 false matches.
DEFAULT_METHOD = "phash"
DEFAULT_DISTANCE = {"phash": 4, "dhash": 8}


@dataclass(frozen=True)
class DuplicateReport:
    """`pairs`: a, b (paths), image_a, image_b, distance, split_a, split_b — near-duplicate pairs
    within `max_distance` (excluded images left out). `groups`: group, size, image_ids, paths,
    splits — connected groups of those pairs, largest first. `exact`: group, kind ('bytes' or
    'pixels'), image_id, path, split — identical files and identical decoded pixels.
    `leakage`: split_a, split_b, pairs, images_a, images_b, share_b — pairs across splits."""
    method: str
    max_distance: int
    images: int
    pairs: pd.DataFrame
    groups: pd.DataFrame
    exact: pd.DataFrame
    leakage: pd.DataFrame


def _pixel_digest(root: str, path: str) -> str | None:
    try:
        with Image.open(os.path.join(root, path)) as image:
            pixels = ImageOps.exif_transpose(image).convert("RGB")
            return hashlib.sha256(pixels.tobytes() + repr(pixels.size).encode()).hexdigest()
    except Exception:  # noqa: BLE001 — an unreadable file has no pixels to compare
        return None


def exact_groups(root: str, table: pd.DataFrame) -> pd.DataFrame:
    """Groups of identical bytes (sha256) and of identical decoded pixels. Pixel identity is
    checked only where both perceptual hashes and the size agree, then decoded and compared.
    Columns: group, kind, image_id, path, split."""
    frames = []
    by_bytes = table[table.duplicated("sha256", keep=False)]
    for k, (_, members) in enumerate(by_bytes.groupby("sha256", sort=False)):
        frames.append(members.assign(group=f"bytes-{k}", kind="bytes"))
    distinct = table.drop_duplicates("sha256")
    candidates = distinct[distinct.duplicated(["phash", "dhash"], keep=False)]
    digests = candidates.assign(pixels=[_pixel_digest(root, p) for p in candidates["path"]])
    digests = digests[digests["pixels"].notna() & digests.duplicated("pixels", keep=False)]
    for k, (_, members) in enumerate(digests.groupby("pixels", sort=False)):
        everyone = table[table["sha256"].isin(members["sha256"])]  # with their byte copies
        frames.append(everyone.assign(group=f"pixels-{k}", kind="pixels"))
    if not frames:
        return pd.DataFrame(columns=["group", "kind", "image_id", "path", "split"])
    return pd.concat(frames)[["group", "kind", "image_id", "path", "split"]].reset_index(drop=True)


def _pairs_table(table: pd.DataFrame, found: pd.DataFrame) -> pd.DataFrame:
    i, j = found["i"].to_numpy(), found["j"].to_numpy()
    return pd.DataFrame({
        "a": table["path"].to_numpy()[i], "b": table["path"].to_numpy()[j],
        "image_a": table["image_id"].to_numpy()[i], "image_b": table["image_id"].to_numpy()[j],
        "distance": found["distance"].to_numpy().astype(int),
        "split_a": table["split"].to_numpy()[i], "split_b": table["split"].to_numpy()[j]})


def _groups_table(table: pd.DataFrame, found: pd.DataFrame) -> pd.DataFrame:
    groups = list_groups(group_pairs(found, n_items=len(table)), min_size=2)
    ids, paths, splits = table["image_id"].to_numpy(), table["path"].to_numpy(), table["split"].to_numpy()
    return pd.DataFrame({"group": np.arange(len(groups)), "size": groups["size"].to_numpy(),
                         "image_ids": [ids[m].tolist() for m in groups["members"]],
                         "paths": [paths[m].tolist() for m in groups["members"]],
                         "splits": [sorted(set(splits[m].astype(str))) for m in groups["members"]]})


def leakage_summary(pairs: pd.DataFrame, split_sizes: pd.Series) -> pd.DataFrame:
    """Near-duplicate pairs whose images sit in different splits, per split pair (ordered by
    name, so train-test reads split_a=test, split_b=train). Columns: split_a, split_b, pairs,
    images_a, images_b (distinct images of each side involved), share_a (images_a / size of
    split_a: for test-train, the share of the test split that has a near copy in train)."""
    cross = pairs[pairs["split_a"].astype(str) != pairs["split_b"].astype(str)].copy()
    if cross.empty:
        return pd.DataFrame(columns=["split_a", "split_b", "pairs", "images_a", "images_b", "share_a"])
    swap = cross["split_a"].astype(str) > cross["split_b"].astype(str)
    for left, right in (("split_a", "split_b"), ("image_a", "image_b")):
        cross.loc[swap, [left, right]] = cross.loc[swap, [right, left]].to_numpy()
    summary = cross.groupby(["split_a", "split_b"]).agg(
        pairs=("image_a", "size"), images_a=("image_a", "nunique"),
        images_b=("image_b", "nunique")).reset_index()
    summary["share_a"] = summary["images_a"] / summary["split_a"].map(split_sizes).astype(float)
    return summary


def find_duplicates(con, dataset: catalog.Dataset, *, method: str = DEFAULT_METHOD,
                    max_distance: int | None = None, with_exact: bool = True) -> DuplicateReport:
    """Everything the Duplicates page and the `duplicates` command show, for one dataset.
    Unreadable images have no hashes and are left out (the Overview lists them with reasons);
    images excluded by an earlier resolution are left out too."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    distance = DEFAULT_DISTANCE[method] if max_distance is None else int(max_distance)
    table = catalog.hash_table(con, dataset.dataset_id)
    hashes = table[method].to_numpy(dtype=np.uint64)
    found = find_pairs_within(hashes, max_distance=distance)
    pairs = _pairs_table(table, found)
    sizes = table.groupby("split", dropna=False).size()
    exact = exact_groups(dataset.root, table) if with_exact else exact_groups(dataset.root, table.head(0))
    return DuplicateReport(method, distance, len(table), pairs, _groups_table(table, found), exact,
                           leakage_summary(pairs, sizes))


# ---------------------------------------------------------------- resolution (image events)


def _batch_name(kind: str) -> str:
    return f"{kind}-{catalog.now().strftime('%Y%m%d%H%M%S%f')}"


def resolve_keep_one(con, dataset: catalog.Dataset, keep: int, others: list[int], *,
                     author: str | None, reason: str = "duplicate") -> str:
    """Exclude `others`, keeping `keep`; returns the resolution's batch name (for undo)."""
    if keep in others:
        raise ValueError(f"image {keep} is both kept and excluded")
    path = catalog.image_facts(con, dataset.dataset_id, [keep])["path"]
    kept = path.iloc[0] if len(path) else str(keep)
    frame = pd.DataFrame({"image_id": others, "action": "exclude", "split": None,
                          "reason": f"{reason} of {kept}"})
    batch = _batch_name("keep-one")
    catalog.append_image_events(con, dataset.dataset_id, frame, author=author, batch=batch)
    return batch


def exclude_images(con, dataset: catalog.Dataset, image_ids: list[int], *, author: str | None,
                   reason: str) -> str:
    """Exclude images (e.g. the test-side copies of a leak): one reversible batch."""
    frame = pd.DataFrame({"image_id": image_ids, "action": "exclude", "split": None, "reason": reason})
    batch = _batch_name("exclude")
    catalog.append_image_events(con, dataset.dataset_id, frame, author=author, batch=batch)
    return batch


def move_group(con, dataset: catalog.Dataset, image_ids: list[int], split: str, *,
               author: str | None, reason: str = "duplicate group kept in one split") -> str:
    """Move every image of a group into `split` (so no copy leaks across splits)."""
    if not split:
        raise ValueError("a split name is needed to move a group")
    frame = pd.DataFrame({"image_id": image_ids, "action": "move", "split": split, "reason": reason})
    batch = _batch_name("move")
    catalog.append_image_events(con, dataset.dataset_id, frame, author=author, batch=batch)
    return batch


def undo_resolution(con, dataset: catalog.Dataset, batch: str, *, author: str | None) -> str:
    """Reverse one resolution with new events: excluded images are included again, moved images
    go back to the split they had before."""
    events = catalog.image_events_of_batch(con, dataset.dataset_id, batch)
    if events.empty:
        raise ValueError(f"no resolution named {batch!r} in dataset {dataset.name!r}")
    back = pd.DataFrame({
        "image_id": events["image_id"],
        "action": events["action"].map({"exclude": "include", "include": "exclude", "move": "move"}),
        "split": np.where(events["action"] == "move", events["previous_split"], None),
        "reason": f"undo of {batch}"})
    undo = _batch_name("undo")
    catalog.append_image_events(con, dataset.dataset_id, back, author=author, batch=undo)
    return undo


# ---------------------------------------------------------------- people's verdicts


def mark_pairs(con, dataset: catalog.Dataset, pairs: pd.DataFrame, verdict: str, *,
               method: str, author: str | None) -> int:
    """Record 'duplicate' / 'not duplicate' for these pairs (columns image_a, image_b, distance)."""
    if verdict not in ("duplicate", "not duplicate"):
        raise ValueError(f"verdict must be 'duplicate' or 'not duplicate', got {verdict!r}")
    frame = pairs[["image_a", "image_b", "distance"]].assign(verdict=verdict, method=method)
    return catalog.add_pair_marks(con, dataset.dataset_id, frame, author=author)


def threshold_quality(pairs: pd.DataFrame, marks: pd.DataFrame) -> pd.DataFrame:
    """Precision and recall per distance threshold, from people's marks on shown pairs.

    `pairs`: image_a, image_b, distance (the pairs found at the widest threshold searched);
    `marks`: image_a, image_b, verdict. Recall is relative to the marked duplicates found at the
    widest threshold. Columns: threshold, marked, duplicates, precision, recall."""
    key = pairs.assign(lo=pairs[["image_a", "image_b"]].min(axis=1),
                       hi=pairs[["image_a", "image_b"]].max(axis=1))
    judged = key.merge(marks.rename(columns={"image_a": "lo", "image_b": "hi"}), on=["lo", "hi"])
    total_dup = int((judged["verdict"] == "duplicate").sum())
    rows = []
    for threshold in range(int(pairs["distance"].max()) + 1 if len(pairs) else 0):
        within = judged[judged["distance"] <= threshold]
        dup = int((within["verdict"] == "duplicate").sum())
        rows.append({"threshold": threshold, "marked": len(within), "duplicates": dup,
                     "precision": dup / len(within) if len(within) else np.nan,
                     "recall": dup / total_dup if total_dup else np.nan})
    return pd.DataFrame(rows, columns=["threshold", "marked", "duplicates", "precision", "recall"])


def duplicate_annotations(con, dataset: catalog.Dataset, *, min_iou: float = 0.9) -> pd.DataFrame:
    """Pairs of boxes of the same class on the same image, in the same layer, with IoU >=
    `min_iou` (a double click). Columns: image_id, path, class, object_a, object_b, iou."""
    boxes = catalog.current_boxes(con, dataset.dataset_id)
    if boxes.empty:
        return pd.DataFrame(columns=["image_id", "path", "class", "object_a", "object_b", "iou"])
    pairs = boxes.merge(boxes, on=["image_id", "annotator_id", "class_id"], suffixes=("_a", "_b"))
    pairs = pairs[pairs["object_id_a"] < pairs["object_id_b"]]
    ix = np.maximum(0, np.minimum(pairs["x_a"] + pairs["w_a"], pairs["x_b"] + pairs["w_b"])
                    - np.maximum(pairs["x_a"], pairs["x_b"]))
    iy = np.maximum(0, np.minimum(pairs["y_a"] + pairs["h_a"], pairs["y_b"] + pairs["h_b"])
                    - np.maximum(pairs["y_a"], pairs["y_b"]))
    inter = ix * iy
    union = pairs["w_a"] * pairs["h_a"] + pairs["w_b"] * pairs["h_b"] - inter
    iou = np.where(union > 0, inter / union.where(union > 0, 1), 0.0)
    found = pairs.assign(iou=iou)[iou >= min_iou]
    return pd.DataFrame({"image_id": found["image_id"], "path": found["path_a"],
                         "class": found["class_a"], "object_a": found["object_id_a"],
                         "object_b": found["object_id_b"], "iou": found["iou"],
                         "annotator_id": found["annotator_id"], "class_id": found["class_id"],
                         "event_b": found["event_id_b"], "x": found["x_b"], "y": found["y_b"],
                         "w": found["w_b"], "h": found["h_b"]}).reset_index(drop=True)


def delete_duplicate_boxes(con, dataset: catalog.Dataset, doubles: pd.DataFrame, *,
                           author: str | None) -> int:
    """The one-click fix: delete the second box of each pair (a 'delete' event in its layer that
    replaces the box's current event, and says who removed it and why)."""
    doubles = doubles.drop_duplicates("object_b")
    doubles = doubles[~doubles["object_b"].isin(doubles["object_a"])]  # chains keep one box
    events = pd.DataFrame({
        "event_id": pd.Series([None] * len(doubles), dtype="Int64"),
        "object_id": doubles["object_b"].astype("Int64").values, "dataset_id": dataset.dataset_id,
        "image_id": doubles["image_id"].values, "annotator_id": doubles["annotator_id"].values,
        "kind": "box", "op": "delete", "class_id": doubles["class_id"].values,
        "x": doubles["x"].values, "y": doubles["y"].values, "w": doubles["w"].values,
        "h": doubles["h"].values, "points": None, "source": "review",
        "model_run_id": pd.Series([None] * len(doubles), dtype="Int64"), "score": None,
        "replaces": doubles["event_b"].astype("Int64").values,
        "flag": [f"duplicate of object {a} (IoU {iou:.2f}), removed by {author}"
                 for a, iou in zip(doubles["object_a"], doubles["iou"])],
        "job_id": None, "created_at": catalog.now()})
    return catalog.append_label_events(con, events)


# ---------------------------------------------------------------- reports


def report_json(report: DuplicateReport) -> dict:
    """The `duplicates --json` document."""
    pairs = report.pairs[["a", "b", "distance", "split_a", "split_b"]]
    exact = report.exact.groupby("group").agg(kind=("kind", "first"), paths=("path", list))
    return {"method": report.method, "threshold": report.max_distance, "images": report.images,
            "pairs": pairs.to_dict("records"), "groups": report.groups["paths"].tolist(),
            "exact": exact.reset_index(drop=True).to_dict("records"),
            "leakage": report.leakage.to_dict("records")}


def format_report(name: str, report: DuplicateReport) -> str:
    lines = [f"{name}: {report.images:,} readable images, {report.method} within distance "
             f"{report.max_distance}: {len(report.pairs):,} near-duplicate pairs in "
             f"{len(report.groups):,} groups (largest {report.groups['size'].max() if len(report.groups) else 0})",
             f"  exact copies: {report.exact['group'].nunique():,} groups "
             f"({(report.exact['kind'] == 'bytes').sum():,} images with identical bytes, "
             f"{(report.exact['kind'] == 'pixels').sum():,} with identical pixels)"]
    for row in report.leakage.itertuples(index=False):
        lines.append(f"  leakage {row.split_a}<->{row.split_b}: {row.pairs:,} pairs, "
                     f"{row.images_a:,} {row.split_a} images affected ({row.share_a:.2%} of "
                     f"{row.split_a})")
    for row in report.groups.head(10).itertuples(index=False):
        lines.append(f"  group of {row.size}: {', '.join(row.paths[:4])}"
                     + (" ..." if row.size > 4 else ""))
    return "\n".join(lines)


def narrow(report: DuplicateReport, max_distance: int, *, splits: tuple[str, str] | None = None,
           split_sizes: pd.Series | None = None) -> DuplicateReport:
    """The same report at a smaller distance (and optionally only pairs between two splits),
    without searching again: the page's slider and split filter."""
    pairs = report.pairs[report.pairs["distance"] <= max_distance]
    if splits is not None:
        a, b = (str(s) for s in splits)
        sa, sb = pairs["split_a"].astype(str), pairs["split_b"].astype(str)
        pairs = pairs[((sa == a) & (sb == b)) | ((sa == b) & (sb == a))]
    ids = pd.unique(np.concatenate([pairs["image_a"].to_numpy(), pairs["image_b"].to_numpy()]))
    position = {image_id: k for k, image_id in enumerate(ids)}
    found = pd.DataFrame({"i": pairs["image_a"].map(position), "j": pairs["image_b"].map(position),
                          "distance": pairs["distance"]})
    lookup = pd.concat([
        pairs[["image_a", "a", "split_a"]].set_axis(["image_id", "path", "split"], axis=1),
        pairs[["image_b", "b", "split_b"]].set_axis(["image_id", "path", "split"], axis=1)]
    ).drop_duplicates("image_id").set_index("image_id").loc[ids].reset_index()
    sizes = split_sizes if split_sizes is not None else pd.Series(dtype=float)
    return DuplicateReport(report.method, max_distance, report.images, pairs.reset_index(drop=True),
                           _groups_table(lookup, found), report.exact,
                           leakage_summary(pairs, sizes))


def pixel_difference(first: Image.Image, second: Image.Image) -> tuple[Image.Image, float]:
    """(|first - second| as an image, mean absolute difference per channel 0-255); the second
    image is resized to the first's size when they differ."""
    a = np.asarray(first.convert("RGB"), dtype=np.int16)
    b = np.asarray(second.convert("RGB").resize(first.size, Image.Resampling.LANCZOS), np.int16)
    diff = np.abs(a - b).astype(np.uint8)  # (H, W, 3)
    return Image.fromarray(diff), float(diff.mean())
