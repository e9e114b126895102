"""Labels as append-only events: importing them with their checks, and (later) edits and undo.

Entry point: `import_labels(con, dataset_id, labels, ...)` turns reader rows into label events,
checking each box and polygon against its image and each class against the vocabulary.
Re-importing the same rows adds nothing; a changed class becomes an event replacing the old one.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from core import catalog
from core.formats import problem

KEY_DECIMALS = 3  # geometry is compared at 1/1000 pixel when deciding "already imported"


def _fit_box(x, y, w, h, width, height) -> tuple[tuple | None, str | None, str | None]:
    """(box to keep or None, flag, action) for a box against an image of width x height."""
    if w < 0 or h < 0:  # xmax < xmin or ymax < ymin in the file
        return (x, y, w, h), f"inverted box ({w:g} x {h:g} px: it ends before it starts)", \
            "flagged"
    if w == 0 or h == 0:
        return (x, y, w, h), f"zero-area box ({w:g} x {h:g} px)", "flagged"
    if width is None or pd.isna(width):
        return (x, y, w, h), None, None
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        return None, f"box ({x:g}, {y:g}, {w:g}, {h:g}) lies outside the {width}x{height} image", "skipped"
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
        flag = f"clipped to the image (was {x:g}, {y:g}, {w:g}, {h:g})"
        return (x0, y0, x1 - x0, y1 - y0), flag, "clipped"
    return (x, y, w, h), None, None


def _fit_polygon(points, width, height) -> tuple[list | None, str | None, str | None]:
    if not isinstance(points, list) or len(points) < 3:
        return None, f"polygon with {len(points) if isinstance(points, list) else 0} points " \
                     "(at least 3 needed)", "skipped"
    if width is None or pd.isna(width):
        return points, None, None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    if max(xs) <= 0 or max(ys) <= 0 or min(xs) >= width or min(ys) >= height:
        return None, f"polygon lies outside the {width}x{height} image", "skipped"
    clipped = [[min(max(px, 0.0), float(width)), min(max(py, 0.0), float(height))]
               for px, py in points]
    if clipped != points:
        return clipped, "polygon clipped to the image", "clipped"
    return points, None, None


def _check_geometry(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Scale normalised coordinates, clip or flag boxes and polygons; drop what cannot be kept."""
    whole = frame["kind"] == "class"
    shapes, problems = _check_shapes(frame[~whole])
    return pd.concat([frame[whole].assign(flag=None), shapes], ignore_index=True), problems


UNPLACEABLE = ("the image could not be read, so coordinates given as fractions of its size "
               "cannot be placed")


def _fit_shape(row) -> tuple[tuple | None, list | None, str | None, str | None]:
    """(box, points, flag, action) of one box or polygon row, in pixels; box None: not kept."""
    width, height = row.width, row.height
    box = (row.x, row.y, row.w, row.h)
    points = row.points if isinstance(row.points, list) else None  # NaN for boxes in mixed files
    if row.normalized:
        if width is None or pd.isna(width):
            return None, None, UNPLACEABLE, "skipped"
        box = (row.x * width, row.y * height, row.w * width, row.h * height)
        points = [[px * width, py * height] for px, py in points] if points else points
    if row.kind == "polygon":
        points, flag, action = _fit_polygon(points, width, height)
        if points is None:
            return None, None, flag, action
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)), points, flag, action
    box, flag, action = _fit_box(*box, width, height)
    return box, points, flag, action


def _check_shapes(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    keep, kept, problems = [], [], []
    for row in frame.itertuples(index=False):
        box, points, flag, action = _fit_shape(row)
        if action:
            problems.append(problem(row.label_file, flag, location=row.location, action=action))
        keep.append(box is not None)
        if box is not None:
            kept.append((box, points, flag))
    frame = frame[keep].copy()
    frame[["x", "y", "w", "h"]] = np.array([k[0] for k in kept], float).reshape(-1, 4)
    frame["points"] = [json.dumps(k[1]) if k[1] is not None else None for k in kept]
    frame["flag"] = [k[2] for k in kept]
    return frame, problems


def _attach_images(con, dataset_id: int, labels: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    images = catalog.image_paths(con, dataset_id)
    merged = labels.merge(images, on="path", how="left")
    missing = merged["image_id"].isna()
    problems = [problem(r.label_file, f"image {r.path!r} not found in the source",
                        location=r.location) for r in merged[missing].itertuples()]
    return merged[~missing], problems


def _attach_classes(con, dataset_id: int, labels: pd.DataFrame, *, vocabulary, fixed: bool):
    if vocabulary:
        catalog.add_classes(con, dataset_id, list(vocabulary))
    if not fixed:
        catalog.add_classes(con, dataset_id, sorted(labels["class_name"].dropna().unique()))
    classes = catalog.class_table(con, dataset_id)
    merged = labels.merge(classes.rename(columns={"name": "class_name"}), on="class_name",
                          how="left")
    unknown = merged["class_id"].isna()
    problems = [problem(r.label_file, f"unknown class {r.class_name!r}", location=r.location)
                for r in merged[unknown].itertuples()]
    return merged[~unknown], problems


def _key(frame: pd.DataFrame) -> pd.Series:
    """Identity of an object for re-import: image, annotator, kind, class and geometry."""
    parts = [frame["image_id"].astype("int64").astype(str), frame["annotator_id"].astype(str),
             frame["kind"], frame["class_id"].astype("int64").astype(str)]
    for column in ("x", "y", "w", "h"):
        parts.append(frame[column].astype(float).round(KEY_DECIMALS).astype(str))
    parts.append(frame["points"].fillna(""))
    key = parts[0]
    for part in parts[1:]:
        key = key + "|" + part
    return key


def _new_events(con, dataset_id: int, rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Rows not already current for their annotator (multiset-aware), as events; + unchanged."""
    annotators = sorted(rows["annotator_id"].unique().tolist())
    current = catalog.current_objects(con, dataset_id, annotators)
    rows = rows.assign(key=_key(rows))
    rows["nth"] = rows.groupby("key").cumcount()
    whole = rows["kind"] == "class"
    current_class = current[current["kind"] == "class"]
    objects = current[current["kind"] != "class"]
    objects = objects.assign(key=_key(objects) if len(objects) else pd.Series(dtype=object))
    objects["nth"] = objects.groupby("key").cumcount()
    geo = rows[~whole].merge(objects[["key", "nth"]], on=["key", "nth"], how="left", indicator=True)
    geo_new = geo[geo["_merge"] == "left_only"].drop(columns="_merge")
    cls = rows[whole].drop_duplicates(["image_id", "annotator_id"], keep="last")
    cls = cls.merge(current_class[["image_id", "annotator_id", "class_id", "event_id", "object_id"]]
                    .rename(columns={"class_id": "old_class", "event_id": "replaces"}),
                    on=["image_id", "annotator_id"], how="left")
    cls_new = cls[cls["old_class"].isna() | (cls["old_class"] != cls["class_id"])]
    unchanged = len(rows) - len(geo_new) - len(cls_new)
    return pd.concat([cls_new, geo_new], ignore_index=True), unchanged


def import_labels(con, dataset_id: int, labels: pd.DataFrame, *, annotator: str,
                  vocabulary: list[str] | None = None, fixed: bool = False,
                  source: str = "import", job_id: int | None = None) -> tuple[int, int, list]:
    """Append reader rows (`core.formats.LABEL_COLUMNS`) as events.

    Rows without an annotator belong to `annotator` (kind 'import'); named ones are people.
    Returns (events added, rows already present, problems).
    """
    if labels is None or not len(labels):
        if vocabulary:
            catalog.add_classes(con, dataset_id, list(vocabulary))
        return 0, 0, []
    labels = labels.copy()
    own = labels["annotator"].isna()
    labels.loc[own, "annotator"] = annotator
    ids = catalog.get_or_create_annotators(con, [annotator], kind="import")
    ids |= catalog.get_or_create_annotators(con, labels.loc[~own, "annotator"].tolist(), kind="human")
    labels["annotator_id"] = labels["annotator"].map(ids)
    labels, missing = _attach_images(con, dataset_id, labels)
    labels, unknown = _attach_classes(con, dataset_id, labels, vocabulary=vocabulary, fixed=fixed)
    labels, geometry = _check_geometry(labels)
    events, unchanged = _new_events(con, dataset_id, labels)
    events = _as_event_frame(events, dataset_id=dataset_id, source=source, job_id=job_id)
    con.begin()
    try:
        added = catalog.append_label_events(con, events)
        con.commit()
    except Exception:
        con.rollback()
        raise
    return added, unchanged, missing + unknown + geometry


def _as_event_frame(rows: pd.DataFrame, *, dataset_id: int, source: str, job_id) -> pd.DataFrame:
    frame = pd.DataFrame({
        "event_id": pd.Series([None] * len(rows), dtype="Int64"),
        "object_id": rows.get("object_id", pd.Series([None] * len(rows))).astype("Int64").values,
        "dataset_id": dataset_id, "image_id": rows["image_id"].astype("int64").values,
        "annotator_id": rows["annotator_id"].astype("int64").values,
        "kind": rows["kind"].values, "op": "set",
        "class_id": rows["class_id"].astype("int64").values,
        "x": rows["x"].astype(float).values, "y": rows["y"].astype(float).values,
        "w": rows["w"].astype(float).values, "h": rows["h"].astype(float).values,
        "points": rows["points"].values, "source": source,
        "model_run_id": pd.Series([None] * len(rows), dtype="Int64"),
        "score": np.nan, "replaces": rows.get("replaces", pd.Series([None] * len(rows)))
        .astype("Int64").values, "flag": rows["flag"].values, "job_id": job_id,
        "created_at": catalog.now()})
    return frame
