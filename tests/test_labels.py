"""Label import (core.labels.import_labels, through core.ingest): boxes and polygons checked
against their image, classes against the vocabulary, and re-imports that add nothing."""
from __future__ import annotations

import json

import pytest

from core import catalog
from core.ingest import ingest
from core.labels import UNPLACEABLE
from tests.fixtures import open_test_catalog, table_counts, voc_xml, write_broken_images, write_png


@pytest.fixture
def con(tmp_path):
    con = open_test_catalog(tmp_path)
    yield con
    con.close()


def current(con, dataset: str) -> list[tuple]:
    """(annotator, kind, class, x, y, w, h, points, flag) of the current labels, in event order."""
    ds = catalog.find_dataset(con, dataset)
    return [tuple(r) for r in con.execute("""
        SELECT a.name, l.kind, c.name, l.x, l.y, l.w, l.h, l.points, l.flag
        FROM current_labels l JOIN annotators a USING (annotator_id)
        JOIN classes c ON c.dataset_id = l.dataset_id AND c.class_id = l.class_id
        WHERE l.dataset_id = ? ORDER BY l.event_id""", [ds.dataset_id]).fetchall()]


def problems(con, dataset: str) -> list[tuple]:
    """(location, reason, action) of the recorded problems, by location."""
    table = catalog.problem_table(con, catalog.find_dataset(con, dataset).dataset_id)
    return sorted((r.location, r.reason, r.action) for r in table.itertuples())


def voc_source(folder, boxes):
    write_png(folder / "src" / "one.png", 40, 30)
    (folder / "src" / "one.xml").write_text(voc_xml("one.png", boxes))
    return folder / "src"


def test_import_labels_box_partly_outside_clipped_and_flagged(con, tmp_path):
    source = voc_source(tmp_path, [("cat", -5, 10, 20, 40), ("cat", 30, 20, 40, 30)])
    summary = ingest(con, source, fmt="voc", dataset="d")
    assert (summary.labels_added, summary.problems) == (2, {"clipped": 1})
    assert current(con, "d") == [
        ("d/given", "box", "cat", 0.0, 10.0, 20.0, 20.0, None,
         "clipped to the image (was -5, 10, 25, 30)"),
        ("d/given", "box", "cat", 30.0, 20.0, 10.0, 10.0, None, None)]  # touching the corner
    assert problems(con, "d") == [("object 1", "clipped to the image (was -5, 10, 25, 30)",
                                   "clipped")]


def test_import_labels_box_fully_outside_skipped(con, tmp_path):
    source = voc_source(tmp_path, [("cat", 50, 0, 60, 10), ("cat", 1, 1, 11, 11)])
    summary = ingest(con, source, fmt="voc", dataset="d")
    assert (summary.labels_added, summary.problems) == (1, {"skipped": 1})
    assert current(con, "d") == [("d/given", "box", "cat", 1.0, 1.0, 10.0, 10.0, None, None)]
    assert problems(con, "d") == [("object 1", "box (50, 0, 10, 10) lies outside the 40x30 image",
                                   "skipped")]


def test_import_labels_zero_area_box_kept_and_flagged(con, tmp_path):
    source = voc_source(tmp_path, [("cat", 5, 5, 5, 9), ("cat", 7, 7, 7, 7)])
    summary = ingest(con, source, fmt="voc", dataset="d")
    assert (summary.labels_added, summary.problems) == (2, {"flagged": 2})
    assert current(con, "d") == [
        ("d/given", "box", "cat", 5.0, 5.0, 0.0, 4.0, None, "zero-area box (0 x 4 px)"),
        ("d/given", "box", "cat", 7.0, 7.0, 0.0, 0.0, None, "zero-area box (0 x 0 px)")]


def test_import_labels_inverted_box_flagged_as_such(con, tmp_path):
    source = voc_source(tmp_path, [("cat", 9, 5, 4, 9)])  # xmax left of xmin
    assert ingest(con, source, fmt="voc", dataset="d").problems == {"flagged": 1}
    assert current(con, "d") == [("d/given", "box", "cat", 9.0, 5.0, -5.0, 4.0, None,
                                  "inverted box (-5 x 4 px: it ends before it starts)")]


def coco_source(folder, segmentations: list) -> tuple:
    write_png(folder / "src" / "one.png", 40, 30)
    annotations = [{"id": k, "image_id": 1, "category_id": 1, "segmentation": [seg]}
                   for k, seg in enumerate(segmentations)]
    labels = folder / "instances.json"
    labels.write_text(json.dumps({"images": [{"id": 1, "file_name": "one.png"}],
                                  "categories": [{"id": 1, "name": "cat"}],
                                  "annotations": annotations}))
    return folder / "src", labels


def test_import_labels_polygons_clipped_or_skipped(con, tmp_path):
    source, labels = coco_source(tmp_path, [
        [-4, 0, 20, 0, 20, 10],         # partly outside: clipped
        [50, 0, 60, 0, 60, 10],         # right of the image: skipped
        [1, 1, 2, 2],                   # two points: skipped
        [2, 2, 10, 2, 10, 8, 2, 8]])    # inside
    summary = ingest(con, source, fmt="coco", labels=labels, dataset="d")
    assert (summary.labels_added, summary.problems) == (2, {"clipped": 1, "skipped": 2})
    assert current(con, "d") == [
        ("d/given", "polygon", "cat", 0.0, 0.0, 20.0, 10.0,
         "[[0.0, 0.0], [20.0, 0.0], [20.0, 10.0]]", "polygon clipped to the image"),
        ("d/given", "polygon", "cat", 2.0, 2.0, 8.0, 6.0,
         "[[2.0, 2.0], [10.0, 2.0], [10.0, 8.0], [2.0, 8.0]]", None)]
    assert problems(con, "d") == [
        ("annotations[0] (id 0)", "polygon clipped to the image", "clipped"),
        ("annotations[1] (id 1)", "polygon lies outside the 40x30 image", "skipped"),
        ("annotations[2] (id 2)", "polygon with 2 points (at least 3 needed)", "skipped")]


def yolo_source(folder, lines: str, image: bytes | None = None):
    write_png(folder / "images" / "one.png", 40, 30)
    if image is not None:
        (folder / "images" / "one.png").write_bytes(image)
    (folder / "labels").mkdir()
    (folder / "labels" / "one.txt").write_text(lines)
    (folder / "classes.txt").write_text("cat\ndog\n")
    return folder


def test_import_labels_yolo_fractions_scaled_to_pixels(con, tmp_path):
    source = yolo_source(tmp_path / "y", "0 0.5 0.5 0.25 0.5\n1 0.1 0.1 0.3 0.1 0.2 0.4\n")
    summary = ingest(con, source, fmt="yolo", dataset="d")
    assert (summary.labels_added, summary.problems) == (2, {})
    (box, polygon) = current(con, "d")
    assert box[:3] + polygon[:3] == ("d/given", "box", "cat", "d/given", "polygon", "dog")
    assert box[3:7] == pytest.approx((15.0, 7.5, 10.0, 15.0))
    assert polygon[3:7] == pytest.approx((4.0, 3.0, 8.0, 9.0))
    assert sum(json.loads(polygon[7]), []) == pytest.approx([4.0, 3.0, 12.0, 3.0, 8.0, 12.0])


def test_import_labels_yolo_on_unreadable_image_skipped(con, tmp_path):
    truncated = write_broken_images(tmp_path / "broken")["truncated.png"].read_bytes()
    source = yolo_source(tmp_path / "y", "0 0.5 0.5 0.25 0.5\n", image=truncated)
    summary = ingest(con, source, fmt="yolo", dataset="d")
    assert (summary.unreadable, summary.labels_added) == (1, 0)
    assert problems(con, "d") == [("line 1", UNPLACEABLE, "skipped")]


def test_import_labels_unknown_class_skipped_with_fixed_vocabulary(con, tmp_path):
    source = voc_source(tmp_path, [("cat", 1, 1, 5, 5), ("cta", 1, 1, 5, 5)])
    summary = ingest(con, source, fmt="voc", dataset="d", classes=["cat", "dog"])
    assert summary.labels_added == 1
    assert list(catalog.class_table(con, 1)["name"]) == ["cat", "dog"]
    assert problems(con, "d") == [("object 2", "unknown class 'cta'", "skipped")]


def csv_source(folder, text: str):
    write_png(folder / "src" / "a.png", 8, 8, seed=1)
    write_png(folder / "src" / "b.png", 8, 8, seed=2)
    labels = folder / "labels.csv"
    labels.write_text(text)
    return folder / "src", labels


def test_import_labels_image_not_in_source_skipped(con, tmp_path):
    source, labels = csv_source(tmp_path, "image,label\na.png,cat\nghost.png,cat\n")
    summary = ingest(con, source, fmt="csv", labels=labels, dataset="d")
    assert (summary.labels_added, summary.problems) == (1, {"skipped": 1})
    assert problems(con, "d") == [("line 3", "image 'ghost.png' not found in the source",
                                   "skipped")]


def test_import_labels_each_annotator_kept(con, tmp_path):
    source, labels = csv_source(tmp_path, "image,label,annotator\n"
                                          "a.png,cat,alice\na.png,dog,bob\nb.png,dog,alice\n")
    summary = ingest(con, source, fmt="csv", labels=labels, dataset="d")
    assert summary.labels_added == 3
    assert [row[:3] for row in current(con, "d")] == [
        ("alice", "class", "cat"), ("bob", "class", "dog"), ("alice", "class", "dog")]
    kinds = dict(con.execute("SELECT name, kind FROM annotators").fetchall())
    assert kinds == {"d/given": "import", "alice": "human", "bob": "human"}


def test_import_labels_changed_class_replaces_old(con, tmp_path):
    source, labels = csv_source(tmp_path, "image,label,annotator\na.png,cat,alice\n"
                                          "a.png,dog,bob\nb.png,cat,\n")
    ingest(con, source, fmt="csv", labels=labels, dataset="d")
    labels.write_text("image,label,annotator\na.png,bird,alice\na.png,dog,bob\nb.png,dog,\n")
    summary = ingest(con, source, fmt="csv", labels=labels, dataset="d")
    assert (summary.labels_added, summary.labels_unchanged) == (2, 1)
    events = con.execute("""SELECT e.event_id, e.object_id, a.name, c.name, e.replaces
        FROM label_events e JOIN annotators a USING (annotator_id)
        JOIN classes c USING (dataset_id, class_id) ORDER BY e.event_id""").fetchall()
    assert events == [(1, 1, "alice", "cat", None), (2, 2, "bob", "dog", None),
                      (3, 3, "d/given", "cat", None),
                      (4, 1, "alice", "bird", 1), (5, 3, "d/given", "dog", 3)]
    assert [row[:3] for row in current(con, "d")] == [
        ("bob", "class", "dog"), ("alice", "class", "bird"), ("d/given", "class", "dog")]


def test_import_labels_duplicate_boxes_once_each(con, tmp_path):
    source = voc_source(tmp_path, [("cat", 1, 1, 5, 5), ("cat", 1, 1, 5, 5)])
    first = ingest(con, source, fmt="voc", dataset="d")
    before = table_counts(con)
    second = ingest(con, source, fmt="voc", dataset="d")
    assert (first.labels_added, first.labels_unchanged) == (2, 0)
    assert (second.labels_added, second.labels_unchanged) == (0, 2)
    assert table_counts(con) == before
    assert before["label_events"] == 2
