"""Pascal VOC: one XML file per image (<filename>, <size>, <object><name><bndbox>).

Entry point: `read(source, labels)`; XML files beside the images, or in the `labels` folder.
Boxes are stored as x = xmin, y = ymin, w = xmax - xmin, h = ymax - ymin (pixels, as written).
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from core.formats import Annotations, labels_frame, problem, resolve_inside, scan_images


def _number(element, tag: str) -> float:
    node = element.find(tag)
    if node is None or node.text is None:
        raise ValueError(f"missing <{tag}>")
    try:
        number = float(node.text.strip())
    except ValueError as err:
        raise ValueError(f"<{tag}> is not a number: {node.text.strip()!r}") from err
    if not math.isfinite(number):
        raise ValueError(f"<{tag}> is not a finite number: {node.text.strip()!r}")
    return number


def _image_path(source: Path, xml_file: Path, root, images: set[str]) -> str | None:
    name = (root.findtext("filename") or "").strip()
    if name:
        return resolve_inside(source, name)
    stem_matches = [p for p in images if Path(p).stem == xml_file.stem]
    return stem_matches[0] if stem_matches else xml_file.stem


def _objects(xml_file: Path, path: str, root, problems: list) -> list[dict]:
    rows = []
    for k, obj in enumerate(root.iter("object")):
        where = f"object {k + 1}"
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        try:
            if not name:
                raise ValueError("missing <name>")
            if box is None:
                raise ValueError("missing <bndbox>")
            x0, y0, x1, y1 = (_number(box, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as err:
            problems.append(problem(xml_file, str(err), location=where))
            continue
        rows.append({"path": path, "kind": "box", "class_name": name, "x": x0, "y": y0,
                     "w": x1 - x0, "h": y1 - y0, "label_file": str(xml_file), "location": where})
    return rows


def read(source: Path, labels: Path | None = None) -> Annotations:
    folder = labels or source
    images = scan_images(source)
    image_set = set(images)
    rows, problems = [], []
    xml_files = sorted(folder.glob("*.xml"))
    if not xml_files:  # the images still go in, unlabelled: said, not silent
        problems.append(problem(folder, "no VOC XML file here: the images are ingested without "
                                "labels (give --labels FOLDER where the XML files are)",
                                action="noted"))
    for xml_file in xml_files:
        try:
            root = ET.parse(xml_file).getroot()
        except (ET.ParseError, OSError) as err:
            problems.append(problem(xml_file, f"malformed XML: {err}"))
            continue
        path = _image_path(source, xml_file, root, image_set)
        if path is None:
            problems.append(problem(xml_file, "<filename> points outside the source folder",
                                    action="refused"))
            continue
        rows.extend(_objects(xml_file, path, root, problems))
    return Annotations(labels_frame(rows), images=images, problems=problems)
