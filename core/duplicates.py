"""Duplicates: exact copies (same bytes, same pixels), near duplicates by perceptual hash or
image embedding, the leakage they cause between splits, and their resolution as reversible image
events.

Entry points: `find_duplicates(con, dataset, method=..., max_distance=...)` → `DuplicateReport`
(methods: perceptual hashes, or embeddings from `core.embeddings`; past `max_pairs` pairs the
report keeps groups and counts and `pairs_of_group` lists one group's pairs on demand);
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

from core import catalog, embeddings, users
from core.hashsearch import expand_pairs, group_pairs, list_groups, search_within, summarise_pairs

METHODS = ("phash", "dhash", "embedding")
HASH_METHODS = ("phash", "dhash")
# Hashes, chosen from measurement (bench/calibrate_duplicates.py, table in bench/RESULTS.md): on
# the 4,000 CIFAR-10 JPEG / lossless pairs, phash at distance 4 finds 99.92% of them with 47 false
# matches against 50,000 other images; going to 6 adds 3 true pairs for 41 more false ones.
# dhash needs distance 8 for the same recall, with 174 false matches. Embeddings (distance =
# 1 - cosine similarity) find as many true pairs as either hash at small numbers of returned
# pairs and far more from 1,500 on, on 2,100 edited copies of CIFAR-10 test images among the
# 10,000 originals (bench/embeddings.py, table in bench/RESULTS.md): at 2,100 pairs 93.6% of the
# copies against phash's 69.0%, thanks to crops and shifts, which no hash threshold catches.
# At 0.1 they return 1,661 pairs there, 97.7% of them planted (77% of the copies; phash at 4:
# 57% in 1,210 pairs); on the 60,000 CIFAR-10 images 0.1 gives 1,385 pairs, 0.2 gives 5,058
# with chains of plain pictures (a group of 136), so the default stays at 0.1.
DEFAULT_METHOD = "embedding"
DEFAULT_DISTANCE = {"phash": 4, "dhash": 8, "embedding": 0.1}
PAIR_CAP = 200_000  # past this many pairs a report lists groups and counts, not pairs
GROUP_PAIR_MEMBERS = 200  # pairs_of_group compares at most this many members of one group


@dataclass(frozen=True)
class DuplicateReport:
    """`pairs`: a, b (paths), image_a, image_b, distance, split_a, split_b — near-duplicate pairs
    within `max_distance` (excluded images left out). `groups`: group, size, image_ids, paths,
    splits — connected groups of those pairs, largest first. `exact`: group, kind ('bytes' or
    'pixels'), image_id, path, split — identical files and identical decoded pixels.
    `leakage`: split_a, split_b, pairs, images_a, images_b, share_a — pairs across splits.
    `max_distance` is a Hamming distance for hashes, 1 - cosine similarity for embeddings.
    `pair_count` counts every pair found; `pairs` lists them only when there are at most the
    search's `max_pairs` (`pairs_listed`), else it is empty and groups and leakage still hold."""
    method: str
    max_distance: float
    images: int
    pairs: pd.DataFrame
    groups: pd.DataFrame
    exact: pd.DataFrame
    leakage: pd.DataFrame
    pair_count: int = 0
    pairs_listed: bool = True


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


def _pairs_table(table: pd.DataFrame, i: np.ndarray, j: np.ndarray, distance: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "a": table["path"].to_numpy()[i], "b": table["path"].to_numpy()[j],
        "image_a": table["image_id"].to_numpy()[i], "image_b": table["image_id"].to_numpy()[j],
        "distance": distance,
        "split_a": table["split"].to_numpy()[i], "split_b": table["split"].to_numpy()[j]})


def _groups_table(table: pd.DataFrame, group_ids: np.ndarray) -> pd.DataFrame:
    groups = list_groups(group_ids, min_size=2)
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
                    max_distance: float | None = None, with_exact: bool = True,
                    max_pairs: int | None = None, progress=None) -> DuplicateReport:
    """Everything the Duplicates page and the `duplicates` command show, for one dataset.
    Unreadable images have no hashes and are left out (the Overview lists them with reasons);
    images excluded by an earlier resolution are left out too. With more than `max_pairs`
    pairs (default PAIR_CAP; 10,000 copies of one image make 50M) pairs are counted, not listed.
    `progress(done, total, message)` follows the embedding of a dataset not embedded yet."""
    distance = check_threshold(method, max_distance)
    table = catalog.hash_table(con, dataset.dataset_id)
    found, distance_of = _search(con, dataset, table, method, distance, progress)
    codes, names = pd.factorize(table["split"], use_na_sentinel=False)
    summary = summarise_pairs(found, codes, n_labels=len(names))
    listed = summary.total_pairs <= (PAIR_CAP if max_pairs is None else max_pairs)
    i, j = expand_pairs(found) if listed else (np.empty(0, np.int64),) * 2
    exact = exact_groups(dataset.root, table) if with_exact else exact_groups(dataset.root, table.head(0))
    sizes = table.groupby("split", dropna=False).size()
    return DuplicateReport(method, distance, len(table), _pairs_table(table, i, j, distance_of(i, j)),
                           _groups_table(table, summary.group_ids), exact,
                           _leakage_of_summary(summary, list(names), sizes),
                           summary.total_pairs, listed)


def check_threshold(method: str, max_distance: float | None) -> float:
    """The search's largest distance: the method's default, or `max_distance` checked (a
    Hamming distance 0..64 for hashes, 1 - cosine similarity 0..2 for embeddings)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if max_distance is None:
        return DEFAULT_DISTANCE[method]
    if method == "embedding":
        if not 0 <= float(max_distance) <= 2:
            raise ValueError(f"embedding threshold is 1 - cosine similarity, in 0..2; got {max_distance}")
        return float(max_distance)
    if float(max_distance) != int(max_distance) or not 0 <= int(max_distance) <= 64:
        raise ValueError(f"{method} threshold is a Hamming distance, a whole number in 0..64; "
                         f"got {max_distance}")
    return int(max_distance)


def _search(con, dataset, table: pd.DataFrame, method: str, distance: float, progress):
    """(value pairs within `distance`, distance_of(i, j) -> (T,) distances of item pairs)."""
    if method in HASH_METHODS:
        hashes = table[method].to_numpy(dtype=np.uint64)
        return (search_within(hashes, max_distance=int(distance)),
                lambda i, j: np.bitwise_count(hashes[i] ^ hashes[j]).astype(int))
    found = embeddings.dataset_embeddings(con, dataset, progress=progress)
    vectors = embeddings.vectors_for(found, table["image_id"])
    return (embeddings.search_above(vectors, min_similarity=1 - distance),
            lambda i, j: np.round(1 - embeddings.pair_similarity(vectors, i, j), 4))


def _leakage_of_summary(summary, names: list, split_sizes: pd.Series) -> pd.DataFrame:
    """`leakage_summary`'s table from pair counts per split pair (no pair list needed)."""
    order = sorted(range(len(names)), key=lambda k: str(names[k]))
    rows = [{"split_a": names[s], "split_b": names[t], "pairs": int(summary.pairs[s, t]),
             "images_a": int(summary.with_partner[s, t]), "images_b": int(summary.with_partner[t, s])}
            for x, s in enumerate(order) for t in order[x + 1:] if summary.pairs[s, t]]
    leak = pd.DataFrame(rows, columns=["split_a", "split_b", "pairs", "images_a", "images_b"])
    leak["share_a"] = leak["images_a"] / leak["split_a"].map(split_sizes).astype(float)
    return leak


def pairs_of_group(con, dataset: catalog.Dataset, image_ids: list[int], *, method: str,
                   max_distance: float, max_members: int = GROUP_PAIR_MEMBERS) -> pd.DataFrame:
    """The pairs among the first `max_members` images of one group (a report that holds groups
    only lists none), closest first; columns as `DuplicateReport.pairs`."""
    distance = check_threshold(method, max_distance)
    table = catalog.hash_table(con, dataset.dataset_id)
    table = table[table["image_id"].isin(list(image_ids)[:max_members])].reset_index(drop=True)
    found, distance_of = _search(con, dataset, table, method, distance, None)
    i, j = expand_pairs(found)
    pairs = _pairs_table(table, i, j, distance_of(i, j))
    return pairs.sort_values(["distance", "a", "b"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------- resolution (image events)


def _batch_name(kind: str) -> str:
    return f"{kind}-{catalog.now().strftime('%Y%m%d%H%M%S%f')}"


def resolve_keep_one(con, dataset: catalog.Dataset, keep: int, others: list[int], *,
                     author: str | None, reason: str = "duplicate") -> str:
    """Exclude `others`, keeping `keep`; returns the resolution's batch name (for undo)."""
    users.require(con, author, "review")
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
    users.require(con, author, "review")
    frame = pd.DataFrame({"image_id": image_ids, "action": "exclude", "split": None, "reason": reason})
    batch = _batch_name("exclude")
    catalog.append_image_events(con, dataset.dataset_id, frame, author=author, batch=batch)
    return batch


def move_group(con, dataset: catalog.Dataset, image_ids: list[int], split: str, *,
               author: str | None, reason: str = "duplicate group kept in one split") -> str:
    """Move every image of a group into `split` (so no copy leaks across splits)."""
    users.require(con, author, "review")
    if not split:
        raise ValueError("a split name is needed to move a group")
    frame = pd.DataFrame({"image_id": image_ids, "action": "move", "split": split, "reason": reason})
    batch = _batch_name("move")
    catalog.append_image_events(con, dataset.dataset_id, frame, author=author, batch=batch)
    return batch


def undo_resolution(con, dataset: catalog.Dataset, batch: str, *, author: str | None) -> str:
    """Reverse one resolution with new events: excluded images are included again, moved images
    go back to the split they had before."""
    users.require(con, author, "review")
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
    users.require(con, author, "review")
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
    integral = pd.api.types.is_integer_dtype(pairs["distance"])
    thresholds = range(int(pairs["distance"].max()) + 1 if len(pairs) else 0) if integral else \
        np.unique(np.ceil(np.round(pairs["distance"].to_numpy() * 100, 6)) / 100)  # embeddings: 0.01 steps
    for threshold in thresholds:
        within = judged[judged["distance"] <= threshold]
        dup = int((within["verdict"] == "duplicate").sum())
        rows.append({"threshold": threshold, "marked": len(within), "duplicates": dup,
                     "precision": dup / len(within) if len(within) else np.nan,
                     "recall": dup / total_dup if total_dup else np.nan})
    return pd.DataFrame(rows, columns=["threshold", "marked", "duplicates", "precision", "recall"])


def duplicate_annotations(con, dataset: catalog.Dataset, *, min_iou: float = 0.9) -> pd.DataFrame:
    """Pairs of boxes of the same class on the same image, in the same layer, with IoU >=
    `min_iou` (a double click). Columns: image_id, path, class, object_a, object_b, iou, and
    for the fix annotator_id, class_id, event_b and the second box's x, y, w, h."""
    boxes = catalog.current_boxes(con, dataset.dataset_id)
    if boxes.empty:
        return pd.DataFrame(columns=["image_id", "path", "class", "object_a", "object_b", "iou",
                                     "annotator_id", "class_id", "event_b", "x", "y", "w", "h"])
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
    users.require(con, author, "review")
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
            "pair_count": report.pair_count, "pairs_listed": report.pairs_listed,
            "pairs": pairs.to_dict("records"), "groups": report.groups["paths"].tolist(),
            "exact": exact.reset_index(drop=True).to_dict("records"),
            "leakage": report.leakage.to_dict("records")}


def format_report(name: str, report: DuplicateReport) -> str:
    lines = [f"{name}: {report.images:,} readable images, {report.method} within distance "
             f"{report.max_distance}: {report.pair_count:,} near-duplicate pairs"
             f"{'' if report.pairs_listed else ' (too many to list)'} in "
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
    without searching again: the page's slider and split filter. A report without listed pairs
    narrows by splits only (groups holding both splits, their leakage row)."""
    if not report.pairs_listed:
        return _narrow_groups(report, max_distance, splits)
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
                           _groups_table(lookup, group_pairs(found, n_items=len(lookup))),
                           report.exact, leakage_summary(pairs, sizes), len(pairs))


def _narrow_groups(report: DuplicateReport, max_distance: float,
                   splits: tuple[str, str] | None) -> DuplicateReport:
    if max_distance != report.max_distance:
        raise ValueError(f"the report holds {report.pair_count:,} pairs in groups only: search "
                         f"again at distance {max_distance} instead of narrowing it")
    if splits is None:
        return report
    wanted = {str(s) for s in splits}
    groups = report.groups[[wanted <= set(found) for found in report.groups["splits"]]]
    leak = report.leakage[[{str(a), str(b)} == wanted for a, b in
                           zip(report.leakage["split_a"], report.leakage["split_b"])]]
    return DuplicateReport(report.method, max_distance, report.images, report.pairs,
                           groups.reset_index(drop=True), report.exact, leak.reset_index(drop=True),
                           int(leak["pairs"].sum()), False)


def pixel_difference(first: Image.Image, second: Image.Image) -> tuple[Image.Image, float]:
    """(|first - second| as an image, mean absolute difference per channel 0-255); the second
    image is resized to the first's size when they differ."""
    a = np.asarray(first.convert("RGB"), dtype=np.int16)
    b = np.asarray(second.convert("RGB").resize(first.size, Image.Resampling.LANCZOS), np.int16)
    diff = np.abs(a - b).astype(np.uint8)  # (H, W, 3)
    return Image.fromarray(diff), float(diff.mean())
