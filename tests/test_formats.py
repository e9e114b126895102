"""The annotation readers (core.formats): one small example per format, then the bad inputs each
must turn into problems with reasons, and property tests that the text readers never crash."""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.formats import (LABEL_COLUMNS, FormatError, coco, csvlabels, detect_format, imagefolder,
                          read_annotations, resolve_inside, scan_images, voc, yolo)
from tests.fixtures import voc_xml, write_png

ACTIONS = {"skipped", "flagged", "clipped", "refused", "noted"}


def rows_of(annotations) -> list[dict]:
    """Label rows as dicts without the bookkeeping columns, in reader order."""
    frame = annotations.labels.drop(columns=["label_file"])
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def reasons(annotations) -> list[tuple]:
    return [(p["location"], p["reason"], p["action"]) for p in annotations.problems]


# ---------------------------------------------------------------- helpers shared by formats


def test_resolve_inside_refuses_paths_outside(tmp_path):
    assert resolve_inside(tmp_path, "a/b.png") == "a/b.png"
    assert resolve_inside(tmp_path, "a/../b.png") == "b.png"
    assert resolve_inside(tmp_path, "../b.png") is None
    assert resolve_inside(tmp_path, "/etc/passwd") is None
    assert resolve_inside(tmp_path, str(tmp_path / "c.png")) == "c.png"


def test_scan_images_skips_hidden_and_non_images(tmp_path):
    for name in ("b.png", "a/c.JPG", ".hidden.png", ".cache/d.png", "notes.txt"):
        write_png(tmp_path / name, 4, 4)
    assert scan_images(tmp_path) == ["a/c.JPG", "b.png"]


def test_detect_format_by_layout(tmp_path):
    (tmp_path / "x.csv").write_text("image,label\n")
    assert detect_format(tmp_path, tmp_path / "x.csv") == "csv"
    assert detect_format(tmp_path, tmp_path / "x.json") == "coco"
    write_png(tmp_path / "cat" / "a.png", 4, 4)
    assert detect_format(tmp_path, None) == "imagefolder"
    (tmp_path / "labels").mkdir()
    (tmp_path / "classes.txt").write_text("cat\n")
    assert detect_format(tmp_path, None) == "yolo"


@pytest.mark.parametrize("name", ["labels.tsv", "labels.txt", "data.yaml", "no_such_folder"])
def test_detect_format_refuses_an_annotation_file_of_no_known_kind(tmp_path, name):
    """A --labels file that auto cannot place is an error, never an imagefolder ingest that
    quietly drops the labels the user asked for."""
    write_png(tmp_path / "cat" / "a.png", 4, 4)
    if "." in name:
        (tmp_path / name).write_text("a.png\tcat\n")
    with pytest.raises(FormatError, match=f"cannot tell the format of the annotations "
                                          f".*{name}: auto knows .*Choose the format"):
        detect_format(tmp_path, tmp_path / name)


def test_detect_format_takes_a_yolo_labels_folder_given_by_name(tmp_path):
    source = make_yolo(tmp_path, "0 0.5 0.5 0.5 0.5\n")
    assert detect_format(source, source / "labels") == "yolo"


def test_detect_format_images_alone_are_an_unlabelled_imagefolder(tmp_path):
    write_png(tmp_path / "a.png", 4, 4)
    assert detect_format(tmp_path, None) == "imagefolder"
    annotations = read_annotations(tmp_path, "imagefolder")
    assert annotations.images == ["a.png"] and len(annotations.labels) == 0


def test_detect_format_points_a_voc_dataset_folder_to_its_parts(tmp_path):
    """BCCD's own folder (images/, annotations/ of XML files): not two classes 'images' and
    'annotations' but a VOC dataset, which the message says how to ingest."""
    write_png(tmp_path / "images" / "a.png", 4, 4)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "a.xml").write_text(voc_xml("a.png", []))
    with pytest.raises(FormatError, match="looks like a Pascal VOC dataset: ingest its images "
                                          "with their XML files, e.g. `ingest .*images --format "
                                          "voc --labels .*annotations`"):
        detect_format(tmp_path, None)


def test_voc_without_xml_files_says_so(tmp_path):
    write_png(tmp_path / "a.png", 4, 4)
    annotations = voc.read(tmp_path)
    assert annotations.images == ["a.png"] and len(annotations.labels) == 0
    [note] = annotations.problems
    assert note["action"] == "noted" and note["reason"].startswith("no VOC XML file here")


def test_detect_format_nothing_fits_raises(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here\n")
    with pytest.raises(FormatError, match="cannot tell the format .* no image"):
        detect_format(tmp_path, None)


def test_read_annotations_unknown_format_raises(tmp_path):
    with pytest.raises(FormatError, match="unknown format 'kitti'"):
        read_annotations(tmp_path, "kitti")


# ---------------------------------------------------------------- imagefolder


def test_imagefolder_read_class_folders(tmp_path):
    write_png(tmp_path / "cat" / "x.png", 4, 4)
    write_png(tmp_path / "dog" / "y.png", 4, 4)
    write_png(tmp_path / "loose.png", 4, 4)  # directly in the source: unlabelled
    found = imagefolder.read(tmp_path)
    assert found.images == ["cat/x.png", "dog/y.png", "loose.png"]
    assert found.classes == ["cat", "dog"]
    assert [(r["path"], r["kind"], r["class_name"]) for r in rows_of(found)] == [
        ("cat/x.png", "class", "cat"), ("dog/y.png", "class", "dog")]
    assert found.splits is None
    assert found.problems == [{"file": str(tmp_path / "loose.png"), "action": "noted",
                               "location": None,
                               "reason": "not in a class folder: ingested without a label"}]


def test_imagefolder_images_alone_are_not_noted(tmp_path):
    write_png(tmp_path / "a.png", 4, 4)
    write_png(tmp_path / "b.png", 4, 4)
    assert imagefolder.read(tmp_path).problems == []


def test_imagefolder_read_split_then_class(tmp_path):
    write_png(tmp_path / "train" / "cat" / "x.png", 4, 4)
    write_png(tmp_path / "val" / "dog" / "y.png", 4, 4)
    found = imagefolder.read(tmp_path)
    assert [(r["path"], r["class_name"]) for r in rows_of(found)] == [
        ("train/cat/x.png", "cat"), ("val/dog/y.png", "dog")]
    assert found.splits.to_dict("records") == [{"path": "train/cat/x.png", "split": "train"},
                                               {"path": "val/dog/y.png", "split": "val"}]


# ---------------------------------------------------------------- csv


def write_csv(folder: Path, text: str) -> Path:
    path = folder / "labels.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_csvlabels_read_multiple_annotators_per_image(tmp_path):
    labels = write_csv(tmp_path, "image,label,annotator,split\n"
                                 "a.png,cat,alice,train\na.png,dog,bob,train\nb.png,dog,,test\n")
    found = csvlabels.read(tmp_path, labels)
    got = [(r["path"], r["class_name"], r["annotator"], r["location"]) for r in rows_of(found)]
    assert got == [
        ("a.png", "cat", "alice", "line 2"), ("a.png", "dog", "bob", "line 3"),
        ("b.png", "dog", None, "line 4")]
    assert found.splits.to_dict("records") == [{"path": "a.png", "split": "train"},
                                               {"path": "b.png", "split": "test"}]
    assert found.problems == []


def test_csvlabels_read_bad_rows_become_problems(tmp_path):
    labels = write_csv(tmp_path, "Image, Label\na.png,cat\n"
                                 "b.png\n"                  # too few fields
                                 "c.png,\n"                 # empty label
                                 "../outside.png,cat\n"     # climbs out of the source
                                 "/etc/passwd,cat\n"        # absolute path elsewhere
                                 "\n")                      # a blank line is no row at all
    found = csvlabels.read(tmp_path, labels)
    assert [r["path"] for r in rows_of(found)] == ["a.png"]
    assert reasons(found) == [
        ("line 3", "1 fields, expected 2", "skipped"),
        ("line 4", "empty image or label", "skipped"),
        ("line 5", "path '../outside.png' is outside the source folder", "refused"),
        ("line 6", "path '/etc/passwd' is outside the source folder", "refused")]


def test_csvlabels_read_a_second_row_for_an_image_and_annotator_is_a_problem(tmp_path):
    """One row per (image, annotator): a second one is reported, never dropped unsaid."""
    labels = write_csv(tmp_path, "image,label,annotator\n"
                                 "a.png,cat,alice\na.png,dog,alice\na.png,cat,alice\n"
                                 "a.png,dog,bob\nb.png,cat,\nb.png,dog,\n")
    found = csvlabels.read(tmp_path, labels)
    assert [(r["path"], r["class_name"], r["annotator"]) for r in rows_of(found)] == [
        ("a.png", "cat", "alice"), ("a.png", "dog", "bob"), ("b.png", "cat", None)]
    assert reasons(found) == [
        ("line 3", "a second label 'dog' for a.png by the same annotator; line 2 gave 'cat', "
                   "the first row counts (one row per image and annotator)", "skipped"),
        ("line 4", "repeats line 2 (one row per image and annotator)", "skipped"),
        ("line 7", "a second label 'dog' for b.png by the same annotator; line 6 gave 'cat', "
                   "the first row counts (one row per image and annotator)", "skipped")]


def test_csvlabels_read_missing_column_raises(tmp_path):
    labels = write_csv(tmp_path, "file,class\na.png,cat\n")
    with pytest.raises(FormatError,
                       match=r"missing column\(s\) image, label \(found: file, class\)"):
        csvlabels.read(tmp_path, labels)


def test_csvlabels_read_empty_file_raises(tmp_path):
    with pytest.raises(FormatError, match="empty file"):
        csvlabels.read(tmp_path, write_csv(tmp_path, ""))


def test_csvlabels_read_not_utf8_raises(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"image,label\ncaf\xe9.png,cat\n")
    with pytest.raises(FormatError, match="cannot read as CSV"):
        csvlabels.read(tmp_path, labels)


# ---------------------------------------------------------------- coco


def coco_document(**changes) -> dict:
    """One 40 x 30 image with a box, a polygon and a two-part polygon."""
    document = {
        "images": [{"id": 7, "file_name": "one.png", "width": 40, "height": 30}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 100, "image_id": 7, "category_id": 1, "bbox": [2, 3, 10, 5]},
            {"id": 101, "image_id": 7, "category_id": 2, "bbox": [5, 5, 10, 7],
             "segmentation": [[5, 5, 15, 5, 15, 12]]},
            {"id": 102, "image_id": 7, "category_id": 1, "bbox": [0, 0, 30, 25],
             "segmentation": [[0, 0, 4, 0, 4, 4], [20, 20, 30, 20, 30, 25, 20, 25]]},
        ]}
    document.update(changes)
    return document


def write_json(folder: Path, document) -> Path:
    path = folder / "instances.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def test_coco_read_boxes_and_polygons(tmp_path):
    found = coco.read(tmp_path, write_json(tmp_path, coco_document()))
    got = [(r["kind"], r["class_name"], r["x"], r["y"], r["w"], r["h"], r["points"])
           for r in rows_of(found)]
    assert got == [
        ("box", "cat", 2.0, 3.0, 10.0, 5.0, None),
        ("polygon", "dog", 5.0, 5.0, 10.0, 7.0, [[5.0, 5.0], [15.0, 5.0], [15.0, 12.0]]),
        # a multi-part polygon: one polygon per part, each with its own bounds
        ("polygon", "cat", 0.0, 0.0, 4.0, 4.0, [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0]]),
        ("polygon", "cat", 20.0, 20.0, 10.0, 5.0,
         [[20.0, 20.0], [30.0, 20.0], [30.0, 25.0], [20.0, 25.0]]),
    ]
    assert {r["path"] for r in rows_of(found)} == {"one.png"}
    assert found.classes == ["cat", "dog"]
    assert found.problems == []


def test_coco_read_classes_in_numeric_id_order(tmp_path):
    categories = [{"id": i, "name": f"c{i}"} for i in (10, 2, 1)]
    found = coco.read(tmp_path, write_json(tmp_path, coco_document(categories=categories,
                                                                   annotations=[])))
    assert found.classes == ["c1", "c2", "c10"]


def test_coco_read_malformed_json_raises(tmp_path):
    with pytest.raises(FormatError, match="malformed JSON"):
        coco.read(tmp_path, write_json(tmp_path, '{"images": [}'))


@pytest.mark.parametrize("document, message", [
    ({"images": [], "categories": []}, "missing key(s) annotations"),
    ([1, 2], "expected a JSON object"),
    ({"images": [], "categories": [], "annotations": 5}, "'annotations' is not a list"),
])
def test_coco_read_missing_keys_raises(tmp_path, document, message):
    with pytest.raises(FormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        coco.read(tmp_path, write_json(tmp_path, document))


def test_coco_read_bad_entries_become_problems(tmp_path):
    document = coco_document(
        images=[{"id": 7, "file_name": "one.png"}, {"id": 8, "file_name": "../escape.png"},
                {"file_name": "no_id.png"}],
        categories=[{"id": 1, "name": "cat"}, {"name": "no id"}],
        annotations=[
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 2, 2]},
            {"id": 2, "image_id": 7, "category_id": 99, "bbox": [0, 0, 2, 2]},
            {"id": 3, "image_id": 8, "category_id": 1, "bbox": [0, 0, 2, 2]},
            {"id": 4, "image_id": 7, "bbox": [0, 0, 2, 2]},
            {"id": 5, "image_id": 7, "category_id": 1},
            {"id": 6, "image_id": 7, "category_id": 1, "bbox": [0, "x", 2, 2]},
            {"id": 7, "image_id": 7, "category_id": 1, "bbox": [1, 1, 2, 2],
             "segmentation": {"counts": "abc", "size": [30, 40]}},
            {"id": 8, "image_id": 7, "category_id": 1, "bbox": [0, float("nan"), 2, 2]},
        ])
    found = coco.read(tmp_path, write_json(tmp_path, document))
    assert [(r["kind"], r["x"], r["y"]) for r in rows_of(found)] == [("box", 0.0, 0.0),
                                                                     ("box", 1.0, 1.0)]
    assert reasons(found) == [
        ("categories[1]", "category without id or name", "skipped"),
        ("images[1]", "file_name '../escape.png' is outside the source folder", "refused"),
        ("images[2]", "image without id or file_name", "skipped"),
        ("annotations[1] (id 2)", "unknown category_id 99", "skipped"),
        ("annotations[2] (id 3)", "image_id 8 is not among the images", "skipped"),
        ("annotations[3] (id 4)", "annotation without image_id or category_id", "skipped"),
        ("annotations[4] (id 5)", "no bbox [x, y, w, h] and no polygon", "skipped"),
        ("annotations[5] (id 6)", "could not convert string to float: 'x'", "skipped"),
        ("annotations[6] (id 7)", "RLE mask not supported: its box is kept", "noted"),
        ("annotations[7] (id 8)", "not a finite number: nan", "skipped"),
    ]


# ---------------------------------------------------------------- voc

def test_voc_read_one_image(tmp_path):
    write_png(tmp_path / "one.png", 40, 30)
    boxes = [("cat", 2, 3, 12, 8), ("dog", 5, 5, 5, 9)]
    (tmp_path / "one.xml").write_text(voc_xml("one.png", boxes))
    found = voc.read(tmp_path)
    assert found.images == ["one.png"]
    assert [(r["path"], r["kind"], r["class_name"], r["x"], r["y"], r["w"], r["h"], r["location"])
            for r in rows_of(found)] == [
        ("one.png", "box", "cat", 2.0, 3.0, 10.0, 5.0, "object 1"),
        ("one.png", "box", "dog", 5.0, 5.0, 0.0, 4.0, "object 2")]
    assert found.problems == []


def test_voc_read_labels_folder_apart(tmp_path):
    write_png(tmp_path / "images" / "one.png", 40, 30)
    (tmp_path / "xml").mkdir()
    (tmp_path / "xml" / "one.xml").write_text(voc_xml("one.png", [("cat", 2, 3, 12, 8)]))
    found = voc.read(tmp_path / "images", tmp_path / "xml")
    assert [(r["path"], r["class_name"]) for r in rows_of(found)] == [("one.png", "cat")]


def test_voc_read_bad_files_become_problems(tmp_path):
    (tmp_path / "a_malformed.xml").write_text("<annotation><object></annotation>")
    (tmp_path / "b_outside.xml").write_text(voc_xml("../secret.png", [("cat", 0, 0, 2, 2)]))
    (tmp_path / "c_missing.xml").write_text(
        "<annotation><filename>c.png</filename>"
        "<object><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>"
        "<object><name>cat</name></object>"
        "<object><name>cat</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>2</xmax>"
        "</bndbox></object>"
        "<object><name>cat</name><bndbox><xmin>one</xmin><ymin>0</ymin><xmax>2</xmax>"
        "<ymax>2</ymax></bndbox></object>"
        "<object><name>cat</name><bndbox><xmin>inf</xmin><ymin>0</ymin><xmax>2</xmax>"
        "<ymax>2</ymax></bndbox></object>"
        "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax>"
        "<ymax>2</ymax></bndbox></object></annotation>")
    found = voc.read(tmp_path)
    assert [(r["path"], r["location"]) for r in rows_of(found)] == [("c.png", "object 6")]
    problems = [(Path(p["file"]).name, p["location"], p["reason"], p["action"])
                for p in found.problems]
    assert problems[0][:2] == ("a_malformed.xml", None)
    assert problems[0][2].startswith("malformed XML: mismatched tag: line 1")
    assert problems[1:] == [
        ("b_outside.xml", None, "<filename> points outside the source folder", "refused"),
        ("c_missing.xml", "object 1", "missing <name>", "skipped"),
        ("c_missing.xml", "object 2", "missing <bndbox>", "skipped"),
        ("c_missing.xml", "object 3", "missing <ymax>", "skipped"),
        ("c_missing.xml", "object 4", "<xmin> is not a number: 'one'", "skipped"),
        ("c_missing.xml", "object 5", "<xmin> is not a finite number: 'inf'", "skipped"),
    ]


# ---------------------------------------------------------------- yolo


def make_yolo(folder: Path, lines: str, *, names: str = "classes",
              split: str | None = None) -> Path:
    """images/[split/]one.png (40 x 30) with labels/[split/]one.txt holding `lines`; class
    names cat, dog in classes.txt or data.yaml (as a list, or as an {id: name} map)."""
    inner = f"{split}/one" if split else "one"
    write_png(folder / "images" / f"{inner}.png", 40, 30)
    (folder / "labels" / inner).parent.mkdir(parents=True, exist_ok=True)
    (folder / "labels" / f"{inner}.txt").write_text(lines)
    if names == "classes":
        (folder / "classes.txt").write_text("cat\ndog\n")
    elif names == "yaml_list":
        (folder / "data.yaml").write_text("names: [cat, dog]\n")
    else:
        (folder / "data.yaml").write_text("names:\n  1: dog\n  0: cat\n")
    return folder


@pytest.mark.parametrize("names", ["classes", "yaml_list", "yaml_map"])
def test_yolo_read_box_and_polygon(tmp_path, names):
    source = make_yolo(tmp_path, "0 0.5 0.5 0.25 0.5\n\n1 0.1 0.1 0.3 0.1 0.2 0.4\n", names=names)
    found = yolo.read(source)
    assert found.classes == ["cat", "dog"]
    assert found.images == ["images/one.png"]
    got = [(r["path"], r["kind"], r["class_name"], r["normalized"], r["location"], r["points"])
           for r in rows_of(found)]
    assert got == [("images/one.png", "box", "cat", True, "line 1", None),
                   ("images/one.png", "polygon", "dog", True, "line 3",
                    [[0.1, 0.1], [0.3, 0.1], [0.2, 0.4]])]
    boxes = found.labels[["x", "y", "w", "h"]].to_numpy(float)  # (2, 4) fractions of the image
    assert boxes == pytest.approx(np.array([[0.375, 0.25, 0.25, 0.5], [0.1, 0.1, 0.2, 0.3]]))
    assert found.splits is None


def test_yolo_read_split_subfolders(tmp_path):
    found = yolo.read(make_yolo(tmp_path, "1 0.5 0.5 0.5 0.5\n", split="train"))
    got = [(r["path"], r["class_name"]) for r in rows_of(found)]
    assert got == [("images/train/one.png", "dog")]
    assert found.splits.to_dict("records") == [{"path": "images/train/one.png", "split": "train"}]


def test_yolo_read_names_label_files_without_an_image(tmp_path):
    source = make_yolo(tmp_path, "0 0.5 0.5 0.5 0.5\n", split="train")
    (source / "labels" / "train" / "gone.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (source / "labels" / "classes.txt").write_text("cat\ndog\n")  # names kept beside labels
    found = yolo.read(source)
    assert [(r["path"], r["class_name"]) for r in rows_of(found)] == [
        ("images/train/one.png", "cat")]
    assert found.problems == [{
        "file": str(source / "labels" / "train" / "gone.txt"), "location": None,
        "action": "skipped",
        "reason": "no image of this name in images/ (or not of a type ingest reads): its "
                  "labels were not imported"}]


def test_yolo_read_bad_lines_become_problems(tmp_path):
    source = make_yolo(tmp_path, "2 0.5 0.5 0.1 0.1\n"     # class index beyond the names
                                 "-1 0.5 0.5 0.1 0.1\n"
                                 "0 0.5 0.5 0.1\n"          # three numbers
                                 "0 a b c d\n"
                                 "0 nan 0.5 0.1 0.1\n"
                                 "0 0.5 0.5 0.1 0.1\n")
    found = yolo.read(source)
    assert [r["location"] for r in rows_of(found)] == ["line 6"]
    assert reasons(found) == [
        ("line 1", "unknown class id 2 (classes 0..1)", "skipped"),
        ("line 2", "unknown class id -1 (classes 0..1)", "skipped"),
        ("line 3", "expected 4 numbers (a box) or an even number >= 6 (a polygon) after the "
                   "class, got 3", "skipped"),
        ("line 4", "not numbers: '0 a b c d'", "skipped"),
        ("line 5", "not a finite number: 'nan'", "skipped"),
    ]


def test_yolo_read_label_file_not_utf8_is_a_problem(tmp_path):
    source = make_yolo(tmp_path, "")
    (source / "labels" / "one.txt").write_bytes(b"0 0.5 0.5 0.1 0.1 \xff\n")
    found = yolo.read(source)
    assert len(found.labels) == 0
    got = [(p["location"], p["reason"].split(":")[0]) for p in found.problems]
    assert got == [(None, "cannot read")]


@pytest.mark.parametrize("files, message", [
    ({}, "no data.yaml or classes.txt"),
    ({"data.yaml": "names: [cat\n"}, "malformed YAML"),
    ({"data.yaml": "nc: 2\n"}, "no `names` list"),
    ({"data.yaml": "names: {0: cat, b: dog}\n"}, "class ids are not comparable"),
    ({"classes.txt": b"caf\xe9\n"}, "not UTF-8"),
])
def test_yolo_read_class_names_unusable_raises(tmp_path, files, message):
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(FormatError, match=message):
        yolo.read_class_names(tmp_path)


def test_yolo_read_without_images_folder_raises(tmp_path):
    (tmp_path / "classes.txt").write_text("cat\n")
    with pytest.raises(FormatError, match="no images/ folder"):
        yolo.read(tmp_path)


# ---------------------------------------------------------------- property: never crash

TOKENS = ["0", "1", "2", "-1", "0.5", "1e400", "nan", "inf", "-0.2", "x", " ", " ", "\t", "\n",
          "\r\n", ",", '"', "image", "label", "annotator", "split", "a.png", "../b.png", "/",
          "\x00", "é", "\ufeff"]
TEXTS = st.one_of(st.text(max_size=200),
                  st.lists(st.sampled_from(TOKENS), max_size=60).map("".join))
CONTENTS = st.one_of(TEXTS, st.binary(max_size=200))
PROPERTY = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def write_content(path: Path, content) -> None:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


def assert_well_formed(found) -> None:
    assert list(found.labels.columns) == LABEL_COLUMNS
    for item in found.problems:
        assert item["reason"] and item["action"] in ACTIONS
    for column in ("x", "y", "w", "h"):
        values = found.labels[column].dropna().astype(float)
        assert all(math.isfinite(v) for v in values)


@PROPERTY
@given(content=st.one_of(TEXTS.map(lambda t: "image,label,annotator,split\n" + t), CONTENTS))
def test_csvlabels_read_never_crashes(content):
    with tempfile.TemporaryDirectory() as folder:
        labels = Path(folder) / "labels.csv"
        write_content(labels, content)
        try:
            found = csvlabels.read(Path(folder), labels)
        except FormatError as err:
            assert str(err)
            return
        assert_well_formed(found)
        assert all(r["path"] and not r["path"].startswith("..") for r in rows_of(found))


@PROPERTY
@given(content=CONTENTS)
def test_yolo_read_label_file_never_crashes(content):
    with tempfile.TemporaryDirectory() as folder:
        source = make_yolo(Path(folder), "")
        write_content(source / "labels" / "one.txt", content)
        assert_well_formed(yolo.read(source))


@PROPERTY
@given(content=CONTENTS)
def test_yolo_read_class_names_never_crashes(content):
    with tempfile.TemporaryDirectory() as folder:
        write_content(Path(folder) / "data.yaml", content)
        try:
            names = yolo.read_class_names(Path(folder))
        except FormatError as err:
            assert str(err)
            return
        assert all(isinstance(n, str) for n in names)
