"""Label Studio JSON export: a list of tasks, each with `data` (the image URL or path) and
`annotations`, each annotation made by one person (`completed_by`) holding `result` items:
`choices` (a whole-image class), `rectanglelabels` and `polygonlabels` (percent of the image).

Entry point: `read(source, labels)` with `labels` the exported JSON file. Each annotation is one
annotator's layer; cancelled annotations and predictions are left out with a note.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from core.formats import (Annotations, FormatError, labels_frame, problem, read_json,
                          resolve_inside, scan_images)

UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio renames uploads to <8 hex>-<name>


class ImageIndex:
    """Finds the image a tool's reference means: the path below the source, else the one image
    with that file name (Label Studio's upload prefix removed)."""

    def __init__(self, source: Path):
        self.source = source
        self.paths = set(scan_images(source))
        self.by_name: dict[str, list[str]] = {}
        for path in sorted(self.paths):
            self.by_name.setdefault(path.rpartition("/")[2], []).append(path)

    def find(self, reference: str) -> tuple[str | None, str | None, str]:
        """(path relative to the source or None; when None, the reason and the action). A
        relative reference climbing out of the source is refused; an absolute one (a tool's
        upload folder, a URL's path) is looked up by its file name."""
        if not reference.startswith("/") and resolve_inside(self.source, reference) is None:
            return None, f"image {reference!r} is outside the source folder", "refused"
        inside = resolve_inside(self.source, reference.lstrip("/"))
        if inside in self.paths:
            return inside, None, ""
        name = reference.replace("\\", "/").rpartition("/")[2]
        for candidate in (name, UPLOAD_PREFIX.sub("", name)):
            found = self.by_name.get(candidate, [])
            if len(found) == 1:
                return found[0], None, ""
            if len(found) > 1:
                return None, (f"image {reference!r} matches {len(found)} files named "
                              f"{candidate!r}"), "skipped"
        return None, f"image {reference!r} not found in the source", "skipped"


def _load(labels: Path) -> list:
    data = read_json(labels)
    if isinstance(data, dict) and "data" in data:
        data = [data]  # one task exported alone
    if not isinstance(data, list):
        raise FormatError(f"{labels}: expected a Label Studio export (a JSON list of tasks)")
    return data


def image_reference(task: dict) -> str:
    """The image path of a task: the first string in `data`, with Label Studio's local-files
    (`?d=`) and URL wrapping removed."""
    data = task.get("data")
    if not isinstance(data, dict):
        raise ValueError("task without `data`")
    value = data.get("image") or next((v for v in data.values() if isinstance(v, str)), None)
    if not isinstance(value, str) or not value:
        raise ValueError("task `data` names no image")
    url = urlparse(value)
    if "d" in parse_qs(url.query):
        return unquote(parse_qs(url.query)["d"][0])
    return unquote(url.path) if url.scheme in ("http", "https", "s3", "gs", "azure-blob") else value


def annotator_name(annotation: dict) -> str:
    """One annotator per `completed_by` (a user id, or a user object with an email)."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    if who is None:
        raise ValueError("annotation without completed_by")
    return f"labelstudio/{who}"


def _fraction(number, what: str) -> float:
    """A percentage of the image size as a fraction."""
    if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
        raise ValueError(f"{what} is not a finite number: {number!r}")
    return float(number) / 100.0


def _one_label(value: dict, key: str, notes: list) -> str:
    names = value.get(key)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"no `{key}` list of class names")
    if len(names) > 1:
        notes.append(f"{len(names)} {key}: kept the first, {names[0]!r}")
    return names[0]


def _rectangle(item: dict, value: dict, notes: list) -> dict:
    name = _one_label(value, "rectanglelabels", notes)
    x, y, w, h = (_fraction(value.get(k), f"`{k}`") for k in ("x", "y", "width", "height"))
    angle = float(value.get("rotation") or 0)
    if not math.isfinite(angle):
        raise ValueError(f"`rotation` is not a finite number: {value['rotation']!r}")
    if angle:  # Label Studio turns the box about its top-left corner, in pixels
        size = (item.get("original_width"), item.get("original_height"))
        if not all(isinstance(v, int | float) and v > 0 for v in size):
            raise ValueError("rotated box without original_width/original_height")
        x, y, w, h = _unrotated_bounds(x, y, w, h, angle, *size)
        notes.append(f"box rotated {angle:g} degrees: kept its enclosing upright box")
    return {"kind": "box", "class_name": name, "x": x, "y": y, "w": w, "h": h, "normalized": True}


def _unrotated_bounds(x, y, w, h, angle, width, height) -> tuple[float, float, float, float]:
    """Enclosing upright box (fractions) of a box turned by `angle` degrees about (x, y)."""
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    px, py, pw, ph = x * width, y * height, w * width, h * height
    corners = [(round(px + dx * cos - dy * sin, 9), round(py + dx * sin + dy * cos, 9))
               for dx, dy in ((0, 0), (pw, 0), (pw, ph), (0, ph))]  # 1e-9 px: exact at 90°
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return (min(xs) / width, min(ys) / height, (max(xs) - min(xs)) / width,
            (max(ys) - min(ys)) / height)


def _polygon(value: dict, notes: list) -> dict:
    name = _one_label(value, "polygonlabels", notes)
    points = value.get("points")
    if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
        raise ValueError("`points` is not a list of [x, y] percentages")
    ring = [[_fraction(px, "a point's x"), _fraction(py, "a point's y")] for px, py in points]
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    return {"kind": "polygon", "class_name": name, "x": min(xs), "y": min(ys),
            "w": max(xs) - min(xs), "h": max(ys) - min(ys), "points": ring, "normalized": True}


def _result_row(item: dict, notes: list) -> dict | None:
    """One label row of a result item; None for item types that are not labels."""
    if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
        raise ValueError("result item without `value`")
    kind, value = item.get("type"), item["value"]
    if kind == "choices":
        return {"kind": "class", "class_name": _one_label(value, "choices", notes)}
    if kind == "rectanglelabels":
        return _rectangle(item, value, notes)
    if kind == "polygonlabels":
        return _polygon(value, notes)
    notes.append(f"result type {kind!r} is not imported")
    return None


def _annotation_rows(annotation: dict, path: str, labels: Path, where: str,
                     problems: list) -> list[dict]:
    if annotation.get("was_cancelled"):
        problems.append(problem(labels, "cancelled annotation left out", location=where,
                                action="noted"))
        return []
    annotator = annotator_name(annotation)
    rows, classes = [], 0
    for k, item in enumerate(annotation.get("result") or []):
        spot, notes = f"{where} result[{k}]", []
        try:
            row = _result_row(item, notes)
        except (ValueError, TypeError, OverflowError) as err:  # overflow: a 400-digit number
            problems.append(problem(labels, str(err), location=spot))
            continue
        problems.extend(problem(labels, note, location=spot, action="noted") for note in notes)
        if row is None:
            continue
        if row["kind"] == "class":
            classes += 1
            if classes > 1:
                problems.append(problem(labels, "a second choices result: the image keeps the "
                                        "first class", location=spot, action="skipped"))
                continue
        rows.append({**row, "path": path, "annotator": annotator, "label_file": str(labels),
                     "location": spot})
    return rows


def _where(task, k: int) -> str:
    has_id = isinstance(task, dict) and task.get("id") is not None
    return f"task[{k}]" + (f" (id {task['id']})" if has_id else "")


def _task_rows(task, k: int, index: ImageIndex, labels: Path, problems: list) -> list[dict]:
    where = _where(task, k)
    if not isinstance(task, dict):
        raise ValueError("task is not a JSON object")
    path, reason, action = index.find(image_reference(task))
    if path is None:
        problems.append(problem(labels, reason, location=where, action=action))
        return []
    if task.get("predictions"):
        problems.append(problem(labels, f"{len(task['predictions'])} prediction(s) left out "
                                "(model output, not people's labels)", location=where,
                                action="noted"))
    rows = []
    for a, annotation in enumerate(task.get("annotations") or []):
        spot = f"{where} annotations[{a}]"
        try:
            if not isinstance(annotation, dict):
                raise ValueError("annotation is not a JSON object")
            rows.extend(_annotation_rows(annotation, path, labels, spot, problems))
        except (ValueError, TypeError) as err:
            problems.append(problem(labels, str(err), location=spot))
    return rows


def read(source: Path, labels: Path | None = None) -> Annotations:
    if labels is None:
        raise FormatError("the labelstudio format needs --labels export.json")
    tasks = _load(labels)
    index = ImageIndex(source)
    rows, problems = [], []
    for k, task in enumerate(tasks):
        try:
            rows.extend(_task_rows(task, k, index, labels, problems))
        except (ValueError, TypeError) as err:
            problems.append(problem(labels, str(err), location=_where(task, k)))
    return Annotations(labels_frame(rows), classes=None, images=None, problems=problems)
