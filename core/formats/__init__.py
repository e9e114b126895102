"""Annotation readers: each format turns a source into `Annotations` (labels + problems).

Entry point: `read_annotations(source, fmt, labels=None)`. Readers only parse; checking boxes
against image sizes and classes against the vocabulary happens once, in `core.ingest`.
"""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pbm", ".jfif"}
SPLIT_NAMES = {"train", "val", "valid", "validation", "test", "dev"}

# One row per label. kind: 'class' | 'box' | 'polygon'. Coordinates in pixels, top-left origin,
# unless `normalized` (YOLO: fractions of the image size, scaled once the size is known).
LABEL_COLUMNS = ["path", "annotator", "kind", "class_name", "x", "y", "w", "h", "points",
                 "normalized", "label_file", "location"]


@dataclass
class Annotations:
    """What a reader found. `classes`: the format's own class list in id order (None: open set);
    `images`: relative paths the format names (None: every image file under the source);
    `splits`: columns path, split; `problems`: dicts with file, location, reason, action."""
    labels: pd.DataFrame
    classes: list[str] | None = None
    images: list[str] | None = None
    splits: pd.DataFrame | None = None
    problems: list[dict] = field(default_factory=list)


class FormatError(Exception):
    """The source as a whole cannot be read in the requested format."""


def utf8_text(text: str) -> str:
    """`text` as valid UTF-8 for the catalog: bytes that are not UTF-8 (a file name's, kept by
    Python as surrogates) shown as backslash escapes, e.g. 'caf\\xe9.png'."""
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # a lone surrogate that no file name produces (JSON '\\ud800')
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


TEXT_COLUMNS = ("path", "annotator", "class_name", "label_file", "location")


def empty_labels() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in LABEL_COLUMNS})


def labels_frame(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return empty_labels()
    rows = [{k: utf8_text(v) if k in TEXT_COLUMNS and isinstance(v, str) else v
             for k, v in row.items()} for row in rows]
    frame = pd.DataFrame(rows)
    for column in LABEL_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame["normalized"] = frame["normalized"].fillna(False).astype(bool)
    return frame[LABEL_COLUMNS]


def problem(file, reason: str, *, location: str | None = None, action: str = "skipped") -> dict:
    return {"file": utf8_text(str(file)), "reason": utf8_text(reason), "action": action,
            "location": None if location is None else utf8_text(location)}


def read_json(labels: Path):
    """The parsed JSON of an annotation file; FormatError naming the file when it cannot be."""
    try:
        return json.loads(labels.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: bad UTF-8 or JSON, a 5,000-digit number
        raise FormatError(f"{labels}: malformed JSON: {err}") from err
    except RecursionError as err:
        raise FormatError(f"{labels}: malformed JSON: nested too deeply") from err


def scan_images(source: Path) -> list[str]:
    """Every file with an image extension below `source`, relative, sorted; hidden ones skipped."""
    found = []
    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        below = os.path.relpath(folder, source)  # once a folder: string joins for its files
        prefix = "" if below == "." else below.replace(os.sep, "/") + "/"
        found.extend(prefix + name for name in files if not name.startswith(".")
                     and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)
    return sorted(found)


def resolve_inside(source: Path, reference: str) -> str | None:
    """`reference` (from an annotation file) as a path relative to `source`, or None when it
    points outside `source` (absolute elsewhere, or climbing out with '..')."""
    base = Path(os.path.abspath(source))
    full = Path(os.path.abspath(base / reference))  # an absolute reference replaces base
    try:
        return full.relative_to(base).as_posix()
    except ValueError:
        return None


def detect_format(source: Path, labels: Path | None) -> str:
    """Guess the format from what is there; raise FormatError when nothing fits."""
    if labels is not None:
        suffix = labels.suffix.lower()
        if suffix == ".json":
            return "labelstudio" if _first_character(labels) == "[" else "coco"
        if suffix == ".xml" and labels.is_file():
            return "cvat"
        if suffix == ".csv":
            return "csv"
        if labels.is_dir() and any(labels.glob("*.xml")):
            return "voc"
        if labels.is_dir() and (source / "images").is_dir():  # YOLO's labels/ given by name
            return "yolo"
        raise FormatError(f"cannot tell the format of the annotations {labels}: auto knows "
                          ".json (COCO or Label Studio), .xml (CVAT), .csv, a folder of VOC "
                          ".xml files and a YOLO labels folder beside images/. Choose the "
                          "format")
    if (source / "labels").is_dir() and ((source / "data.yaml").exists()
                                         or (source / "classes.txt").exists()):
        return "yolo"
    if any(source.glob("*.xml")):
        return "voc"
    entries = [p for p in source.iterdir() if not p.name.startswith(".")]
    annotations = next((p for p in entries if p.is_dir() and p.name.lower() == "annotations"
                        and any(p.glob("*.xml"))), None)
    images = next((p for p in entries if p.is_dir() and p.name.lower() in ("images", "jpegimages")),
                  None)
    if annotations and images:  # a VOC dataset's own folder (BCCD, Pascal VOC): not classes
        raise FormatError(f"{source} looks like a Pascal VOC dataset: ingest its images with "
                          f"their XML files, e.g. `ingest {images} --format voc --labels "
                          f"{annotations}`")
    if any(p.is_dir() or p.suffix.lower() in IMAGE_EXTENSIONS for p in entries):
        return "imagefolder"  # class folders, or images alone: ingested unlabelled
    raise FormatError(f"cannot tell the format of {source}: it holds no image and no class "
                      "folder. Choose the format (imagefolder, csv, coco, voc, yolo, "
                      "labelstudio or cvat) and the annotation file where it has one")


def _first_character(path: Path) -> str:
    """The first non-blank character of a text file ('' when unreadable): '[' starts a Label
    Studio export (a list of tasks), '{' a COCO file."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return handle.read(4096).lstrip()[:1]
    except (OSError, UnicodeDecodeError):
        return ""


READERS = ("imagefolder", "csv", "coco", "voc", "yolo", "labelstudio", "cvat")
_MODULES = {"csv": "csvlabels"}  # format → module of core.formats, where the names differ


def read_annotations(source: Path, fmt: str, labels: Path | None = None) -> Annotations:
    """Parse `source` (and the `labels` file or folder, where the format has one). Only the
    format's own reader is imported (all of them with YAML and XML parsers: 40-70 ms)."""
    if fmt not in READERS:
        raise FormatError(f"unknown format {fmt!r}: use one of {', '.join(READERS)} or auto")
    reader = importlib.import_module(f"core.formats.{_MODULES.get(fmt, fmt)}")
    return reader.read(source, labels)
