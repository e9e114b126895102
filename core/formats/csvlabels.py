"""CSV labels: columns `image` (path relative to the source) and `label`, optional `annotator`
and `split`; one row per (image, annotator), so multi-annotator data imports as it is.

Entry point: `read(source, labels)` with `labels` the CSV file.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from core.formats import Annotations, FormatError, labels_frame, problem, resolve_inside


def _rows(labels: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with open(labels, newline="", encoding="utf-8-sig") as handle:
            table = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise FormatError(f"{labels}: cannot read as CSV: {err}") from err
    if not table:
        raise FormatError(f"{labels}: empty file, expected a header with image,label")
    header = [h.strip().lower() for h in table[0]]
    missing = {"image", "label"} - set(header)
    if missing:
        raise FormatError(f"{labels}: missing column(s) {', '.join(sorted(missing))} "
                          f"(found: {', '.join(header) or 'none'})")
    return header, table[1:]


def _has_control(text: str) -> bool:
    """Whether `text` holds a control character (NUL, escape, ...): no file or class name has."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


def read(source: Path, labels: Path | None = None) -> Annotations:
    if labels is None:
        raise FormatError("the csv format needs --labels FILE.csv")
    header, table = _rows(labels)
    col = {name: header.index(name) for name in header}
    rows, splits, problems = [], {}, []
    first: dict[tuple, tuple[int, str]] = {}  # (path, annotator) → (line, label) of its row
    for number, values in enumerate(table, start=2):
        where = f"line {number}"
        if not values:  # a blank line
            continue
        if len(values) != len(header):
            problems.append(problem(labels, f"{len(values)} fields, expected {len(header)}",
                                    location=where))
            continue
        image, label = values[col["image"]].strip(), values[col["label"]].strip()
        path = resolve_inside(source, image) if image else None
        if not image or not label:
            problems.append(problem(labels, "empty image or label", location=where))
        elif _has_control(image + label):
            problems.append(problem(labels, f"control character in image {image!r} or label "
                                    f"{label!r}", location=where))
        elif path is None:
            problems.append(problem(labels, f"path {image!r} is outside the source folder",
                                    location=where, action="refused"))
        else:
            annotator = values[col["annotator"]].strip() if "annotator" in col else None
            seen = first.setdefault((path, annotator or None), (number, label))
            if seen[0] != number:  # one class per image and annotator: the first row counts
                problems.append(problem(labels, (
                    f"repeats line {seen[0]}" if seen[1] == label else
                    f"a second label {label!r} for {image} by the same annotator; line "
                    f"{seen[0]} gave {seen[1]!r}, the first row counts")
                    + " (one row per image and annotator)", location=where))
                continue
            rows.append({"path": path, "annotator": annotator or None, "kind": "class",
                         "class_name": label, "label_file": str(labels), "location": where})
            if "split" in col and values[col["split"]].strip():
                splits[path] = values[col["split"]].strip()
    split_frame = pd.DataFrame({"path": list(splits), "split": list(splits.values())})
    return Annotations(labels_frame(rows), splits=split_frame if splits else None,
                       problems=problems)
