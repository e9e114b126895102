"""YOLO: `images/` and `labels/` side by side (optionally with split subfolders, e.g.
images/train), class names in `data.yaml` (`names`) or `classes.txt`. Each label line is
`class cx cy w h` (a box) or `class x1 y1 x2 y2 ...` (a polygon), as fractions of the image size.

Entry point: `read(source, labels)`.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
import yaml

from core.formats import (SPLIT_NAMES, Annotations, FormatError, labels_frame, problem,
                          scan_images)


def read_class_names(source: Path) -> list[str]:
    """Class names in id order from data.yaml (`names`: list or {id: name}) or classes.txt."""
    data_yaml, classes_txt = source / "data.yaml", source / "classes.txt"
    if data_yaml.exists():
        return _names_from_yaml(data_yaml)
    if classes_txt.exists():
        return [line.strip() for line in _text_of(classes_txt).splitlines() if line.strip()]
    raise FormatError(f"{source}: no data.yaml or classes.txt with the class names")


def _text_of(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise FormatError(f"{path}: not UTF-8 text: {err}") from err
    except OSError as err:
        raise FormatError(f"{path}: cannot read: {err}") from err


def _names_from_yaml(data_yaml: Path) -> list[str]:
    try:
        names = (yaml.safe_load(_text_of(data_yaml)) or {}).get("names")
    except (yaml.YAMLError, AttributeError) as err:
        raise FormatError(f"{data_yaml}: malformed YAML: {err}") from err
    if isinstance(names, dict):
        try:
            return [str(names[k]) for k in sorted(names)]
        except TypeError as err:
            raise FormatError(f"{data_yaml}: class ids are not comparable: "
                              f"{', '.join(map(repr, names))}") from err
    if isinstance(names, list):
        return [str(n) for n in names]
    raise FormatError(f"{data_yaml}: no `names` list")


def _parse_line(line: str, names: list[str]) -> dict:
    fields = line.split()
    try:
        class_id, values = int(fields[0]), [float(v) for v in fields[1:]]
    except ValueError as err:
        raise ValueError(f"not numbers: {line.strip()!r}") from err
    for text, value in zip(fields[1:], values):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {text!r}")
    if not 0 <= class_id < len(names):
        raise ValueError(f"unknown class id {class_id} (classes 0..{len(names) - 1})")
    if len(values) == 4:
        cx, cy, w, h = values
        return {"kind": "box", "class_name": names[class_id], "x": cx - w / 2, "y": cy - h / 2,
                "w": w, "h": h, "normalized": True}
    if len(values) >= 6 and len(values) % 2 == 0:
        ring = [[values[i], values[i + 1]] for i in range(0, len(values), 2)]
        xs, ys = values[0::2], values[1::2]
        return {"kind": "polygon", "class_name": names[class_id], "x": min(xs), "y": min(ys),
                "w": max(xs) - min(xs), "h": max(ys) - min(ys), "points": ring, "normalized": True}
    raise ValueError(f"expected 4 numbers (a box) or an even number >= 6 (a polygon) after the "
                     f"class, got {len(values)}")


def _read_label_file(label_file: Path, path: str, names: list[str], problems: list) -> list[dict]:
    try:
        lines = label_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        problems.append(problem(label_file, f"cannot read: {err}"))
        return []
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = _parse_line(line, names)
        except ValueError as err:
            problems.append(problem(label_file, str(err), location=f"line {number}"))
            continue
        rows.append({**row, "path": path, "label_file": str(label_file),
                     "location": f"line {number}"})
    return rows


def read(source: Path, labels: Path | None = None) -> Annotations:
    names = read_class_names(source)
    images_dir, labels_dir = source / "images", labels or source / "labels"
    if not images_dir.is_dir():
        raise FormatError(f"{source}: no images/ folder")
    paths = ["images/" + p for p in scan_images(images_dir)]
    rows, problems, splits, used = [], [], [], set()
    for path in paths:
        inner = Path(path).relative_to("images")
        if len(inner.parts) > 1 and inner.parts[0] in SPLIT_NAMES:
            splits.append({"path": path, "split": inner.parts[0]})
        label_file = (labels_dir / inner).with_suffix(".txt")
        if label_file.exists():
            used.add(label_file)
            rows.extend(_read_label_file(label_file, path, names, problems))
    orphans = sorted(_label_files(labels_dir) - used)
    problems.extend(problem(orphan, "no image of this name in images/ (or not of a type ingest "
                                    "reads): its labels were not imported") for orphan in orphans)
    split_frame = pd.DataFrame(splits, columns=["path", "split"]) if splits else None
    return Annotations(labels_frame(rows), classes=names, images=paths, splits=split_frame,
                       problems=problems)


def _label_files(labels_dir: Path) -> set[Path]:
    """The .txt files below `labels_dir` (hidden ones and a classes.txt left out)."""
    found = set()
    for folder, dirs, files in os.walk(labels_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.update(Path(folder) / name for name in files if name.endswith(".txt")
                     and not name.startswith(".") and name != "classes.txt")
    return found
