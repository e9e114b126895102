"""COCO instances JSON: images, categories, annotations with `bbox` [x, y, w, h] and polygon
`segmentation` [[x1, y1, x2, y2, ...], ...].

Entry point: `read(source, labels)` with `labels` the JSON file; image `file_name`s are relative
to `source`. An object with a polygon is stored as a polygon bounded by its points; each part
of a multi-part polygon becomes its own polygon; RLE masks keep only their box.
"""
from __future__ import annotations

import math
from pathlib import Path

from core.formats import (Annotations, FormatError, labels_frame, problem, read_json,
                          resolve_inside)


def _load(labels: Path) -> dict:
    data = read_json(labels)
    if not isinstance(data, dict):
        raise FormatError(f"{labels}: expected a JSON object with images, annotations, categories")
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise FormatError(f"{labels}: missing key(s) {', '.join(missing)}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise FormatError(f"{labels}: {key!r} is not a list")
    return data


def _finite(values) -> list[float]:
    numbers = [float(v) for v in values]  # an int beyond 1e308 raises OverflowError: recorded
    for number in numbers:
        if not math.isfinite(number):
            raise ValueError(f"not a finite number: {number}")
    return numbers


def _lookup(table: dict, key, message: str):
    """table[key]; else ValueError(message with {key} filled in), also for an unhashable key
    (a list or an object where an id belongs)."""
    try:
        return table[key]
    except (KeyError, TypeError):
        raise ValueError(message.format(key=repr(key))) from None


def _id_order(key):
    """Sort key for COCO ids: numbers in numeric order, then anything else as text."""
    is_number = isinstance(key, int | float) and not isinstance(key, bool)
    return (0, key, "") if is_number else (1, 0, str(key))


def _index(labels: Path, data: dict, source: Path, problems: list) -> tuple[dict, dict]:
    categories, images = {}, {}
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat \
                or not isinstance(cat["id"], int | float | str):
            problems.append(problem(labels, "category without id or name", location=f"categories[{k}]"))
            continue
        categories[cat["id"]] = str(cat["name"])
    for k, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image \
                or not isinstance(image["id"], int | float | str):
            problems.append(problem(labels, "image without id or file_name", location=f"images[{k}]"))
            continue
        path = resolve_inside(source, str(image["file_name"]))
        if path is None:
            problems.append(problem(labels, f"file_name {image['file_name']!r} is outside the "
                                    "source folder", location=f"images[{k}]", action="refused"))
            continue
        images[image["id"]] = path
    return categories, images


def _polygons(segmentation) -> list[list[list[float]]]:
    if not isinstance(segmentation, list):
        return []
    rings = [seg for seg in segmentation if isinstance(seg, list) and len(seg) >= 2]
    rings = [_finite(seg[:len(seg) - len(seg) % 2]) for seg in rings]
    return [[[seg[i], seg[i + 1]] for i in range(0, len(seg), 2)] for seg in rings]


def _ring_box(ring: list[list[float]]) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def _rows_of(ann: dict, path: str, name: str, labels: Path, where: str, problems: list) -> list:
    base = {"path": path, "class_name": name, "label_file": str(labels), "location": where}
    bbox = ann.get("bbox")
    rings = _polygons(ann.get("segmentation"))
    if not rings:
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise ValueError("no bbox [x, y, w, h] and no polygon")
        x, y, w, h = _finite(bbox)
        if isinstance(ann.get("segmentation"), dict):
            problems.append(problem(labels, "RLE mask not supported: its box is kept",
                                    location=where, action="noted"))
        return [{**base, "kind": "box", "x": x, "y": y, "w": w, "h": h}]
    rows = []
    for ring in rings:  # each part of a multi-part polygon is bounded by its own box
        x, y, w, h = _ring_box(ring)
        rows.append({**base, "kind": "polygon", "x": x, "y": y, "w": w, "h": h, "points": ring})
    return rows


def read(source: Path, labels: Path | None = None) -> Annotations:
    if labels is None:
        raise FormatError("the coco format needs --labels instances.json")
    data = _load(labels)
    problems: list[dict] = []
    categories, images = _index(labels, data, source, problems)
    rows = []
    for k, ann in enumerate(data["annotations"]):
        has_id = isinstance(ann, dict) and ann.get("id") is not None
        where = f"annotations[{k}]" + (f" (id {ann['id']})" if has_id else "")
        try:
            if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
                raise ValueError("annotation without image_id or category_id")
            name = _lookup(categories, ann["category_id"], "unknown category_id {key}")
            path = _lookup(images, ann["image_id"], "image_id {key} is not among the images")
            rows.extend(_rows_of(ann, path, name, labels, where, problems))
        except (ValueError, TypeError, OverflowError) as err:
            problems.append(problem(labels, str(err), location=where))
    classes = [categories[c] for c in sorted(categories, key=_id_order)]
    return Annotations(labels_frame(rows), classes=classes, images=None, problems=problems)
