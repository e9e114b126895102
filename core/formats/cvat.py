"""CVAT XML for images (format 1.1): `<image name width height>` elements holding `<box label
xtl ytl xbr ybr>`, `<polygon label points="x,y;x,y;...">` and `<tag label>`, in pixels; the
class list in `<meta>` (`<labels><label><name>`).

Entry point: `read(source, labels)` with `labels` the annotations.xml file. Other shapes
(polylines, points, masks, ellipses, cuboids) are left out with a note.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from core.formats import Annotations, FormatError, labels_frame, problem
from core.formats.labelstudio import ImageIndex

SHAPES = ("box", "polygon", "tag")
OTHER_SHAPES = ("polyline", "points", "mask", "ellipse", "cuboid", "skeleton")


def _root(labels: Path) -> ET.Element:
    try:
        root = ET.parse(labels).getroot()
    except (ET.ParseError, OSError) as err:
        raise FormatError(f"{labels}: malformed XML: {err}") from err
    if root.tag != "annotations":
        raise FormatError(f"{labels}: expected CVAT XML with an <annotations> root, "
                          f"found <{root.tag}>")
    if root.find("track") is not None and root.find("image") is None:
        raise FormatError(f"{labels}: CVAT video XML (tracks) is not supported: export the task "
                          "as 'CVAT for images 1.1'")
    return root


def class_names(root: ET.Element) -> list[str] | None:
    """Class names in the order of <meta>'s <labels>, or None when the file has none."""
    names = [(node.findtext("name") or "").strip() for node in root.iter("label")
             if node.find("name") is not None]
    names = [n for n in names if n]
    return list(dict.fromkeys(names)) or None


def _coordinate(element: ET.Element, key: str) -> float:
    text = element.get(key)
    if text is None:
        raise ValueError(f"missing attribute {key}")
    try:
        number = float(text)
    except ValueError as err:
        raise ValueError(f"{key}={text!r} is not a number") from err
    if not math.isfinite(number):
        raise ValueError(f"{key}={text!r} is not a finite number")
    return number


def _box(element: ET.Element, notes: list) -> dict:
    x0, y0, x1, y1 = (_coordinate(element, k) for k in ("xtl", "ytl", "xbr", "ybr"))
    angle = _coordinate(element, "rotation") if element.get("rotation") else 0.0
    if angle:  # CVAT turns the box about its centre
        cx, cy, cos, sin = (x0 + x1) / 2, (y0 + y1) / 2, math.cos(math.radians(angle)), \
            math.sin(math.radians(angle))
        corners = [(round(cx + dx * cos - dy * sin, 9), round(cy + dx * sin + dy * cos, 9))
                   for dx in (x0 - cx, x1 - cx)
                   for dy in (y0 - cy, y1 - cy)]  # rounded to 1e-9 px: exact at 90 degrees
        x0, x1 = min(c[0] for c in corners), max(c[0] for c in corners)
        y0, y1 = min(c[1] for c in corners), max(c[1] for c in corners)
        notes.append(f"box rotated {angle:g} degrees: kept its enclosing upright box")
    return {"kind": "box", "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0}


def _polygon(element: ET.Element) -> dict:
    text = element.get("points") or ""
    try:
        ring = [[float(v) for v in pair.split(",")] for pair in text.split(";") if pair.strip()]
    except ValueError as err:
        raise ValueError(f"points={text[:60]!r} are not x,y;x,y;... numbers") from err
    if not ring or any(len(p) != 2 or not all(map(math.isfinite, p)) for p in ring):
        raise ValueError(f"points={text[:60]!r} are not x,y;x,y;... numbers")
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    return {"kind": "polygon", "x": min(xs), "y": min(ys), "w": max(xs) - min(xs),
            "h": max(ys) - min(ys), "points": ring}


def _shape_row(element: ET.Element, notes: list) -> dict:
    name = (element.get("label") or "").strip()
    if not name:
        raise ValueError(f"<{element.tag}> without a label")
    if element.tag == "tag":
        return {"kind": "class", "class_name": name}
    shape = _box(element, notes) if element.tag == "box" else _polygon(element)
    return {**shape, "class_name": name}


def _image_rows(image: ET.Element, path: str, labels: Path, where: str, problems: list) -> list:
    rows, tags = [], 0
    for k, element in enumerate(image):
        spot = f"{where} <{element.tag}> {k + 1}"
        if element.tag in OTHER_SHAPES:
            problems.append(problem(labels, f"<{element.tag}> shapes are not imported",
                                    location=spot, action="noted"))
            continue
        if element.tag not in SHAPES:
            continue
        notes: list[str] = []
        try:
            row = _shape_row(element, notes)
        except ValueError as err:
            problems.append(problem(labels, str(err), location=spot))
            continue
        problems.extend(problem(labels, n, location=spot, action="noted") for n in notes)
        tags += row["kind"] == "class"
        if row["kind"] == "class" and tags > 1:
            problems.append(problem(labels, "a second <tag>: the image keeps the first class",
                                    location=spot))
            continue
        rows.append({**row, "path": path, "label_file": str(labels), "location": spot})
    return rows


def read(source: Path, labels: Path | None = None) -> Annotations:
    if labels is None:
        raise FormatError("the cvat format needs --labels annotations.xml")
    root = _root(labels)
    index = ImageIndex(source)
    rows, problems = [], []
    for k, image in enumerate(root.iter("image")):
        name = image.get("name")
        where = f"<image> {k + 1}" + (f" ({name})" if name else "")
        path, reason, action = index.find(name) if name else (None, "<image> without a name",
                                                              "skipped")
        if path is None:
            problems.append(problem(labels, reason, location=where, action=action))
            continue
        rows.extend(_image_rows(image, path, labels, where, problems))
    return Annotations(labels_frame(rows), classes=class_names(root), images=None,
                       problems=problems)
