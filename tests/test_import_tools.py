"""Readers for the exports of Label Studio (JSON tasks) and CVAT (XML for images 1.1): small
examples written here, their pixel values worked out by hand, and the malformed inputs each must
turn into problems with reasons or a FormatError."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import catalog
from core.__main__ import main
from core.formats import FormatError, cvat, detect_format, labelstudio, read_annotations
from core.ingest import ingest
from tests.fixtures import open_test_catalog, write_png


def rows_of(annotations) -> list[tuple]:
    """(path, annotator, kind, class, x, y, w, h, points) of each label row."""
    frame = annotations.labels
    return [(r.path, r.annotator, r.kind, r.class_name, r.x, r.y, r.w, r.h, r.points)
            for r in frame.astype(object).where(frame.notna(), None).itertuples()]


def reasons(annotations) -> list[tuple]:
    return [(p["location"], p["reason"], p["action"]) for p in annotations.problems]


@pytest.fixture
def source(tmp_path) -> Path:
    """Two images: cells/a.png (200 x 100) and b.png (50 x 40)."""
    write_png(tmp_path / "src" / "cells" / "a.png", 200, 100)
    write_png(tmp_path / "src" / "b.png", 50, 40, seed=1)
    return tmp_path / "src"


def current(con, dataset: str) -> list[tuple]:
    """(path, annotator, kind, class, x, y, w, h, flag) of the current labels, in event order."""
    ds = catalog.find_dataset(con, dataset)
    return [tuple(r) for r in con.execute("""
        SELECT i.path, a.name, l.kind, c.name, l.x, l.y, l.w, l.h, l.flag
        FROM current_labels l JOIN annotators a USING (annotator_id) JOIN images i USING (image_id)
        JOIN classes c ON c.dataset_id = l.dataset_id AND c.class_id = l.class_id
        WHERE l.dataset_id = ? ORDER BY l.event_id""", [ds.dataset_id]).fetchall()]


# ---------------------------------------------------------------- Label Studio


def rectangle(x, y, w, h, name, **extra) -> dict:
    return {"type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "original_width": 200, "original_height": 100,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                      "rectanglelabels": [name], **extra}}


def ls_tasks() -> list[dict]:
    """Image a.png (200 x 100) labelled by two people, b.png by one (uploaded: renamed)."""
    return [
        {"id": 1, "data": {"image": "/data/local-files/?d=cells/a.png"},
         "annotations": [
             {"id": 11, "completed_by": 3, "result": [
                 {"type": "choices", "value": {"choices": ["blood"]}},
                 rectangle(10, 20, 25, 50, "RBC"),
                 {"type": "polygonlabels", "original_width": 200, "original_height": 100,
                  "value": {"points": [[50, 10], [75, 10], [75, 60]], "polygonlabels": ["WBC"]}}]},
             {"id": 12, "completed_by": {"id": 4, "email": "ann@lab.org"}, "result": [
                 {"type": "choices", "value": {"choices": ["plasma"]}},
                 rectangle(12.5, 20, 25, 50, "RBC")]}],
         "predictions": [{"result": [rectangle(0, 0, 10, 10, "RBC")]}]},
        {"id": 2, "data": {"image": "/data/upload/1/0f3a9c2e-b.png"},
         "annotations": [{"id": 21, "completed_by": 3, "result": [
             {"type": "choices", "value": {"choices": ["plasma"]}}]}]},
    ]


def write_ls(folder: Path, document) -> Path:
    path = folder / "export.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def test_labelstudio_read_classes_boxes_polygons_per_annotator(source, tmp_path):
    found = labelstudio.read(source, write_ls(tmp_path, ls_tasks()))
    assert rows_of(found) == [
        ("cells/a.png", "labelstudio/3", "class", "blood", None, None, None, None, None),
        ("cells/a.png", "labelstudio/3", "box", "RBC", 0.1, 0.2, 0.25, 0.5, None),
        ("cells/a.png", "labelstudio/3", "polygon", "WBC", 0.5, 0.1, 0.25, 0.5,
         [[0.5, 0.1], [0.75, 0.1], [0.75, 0.6]]),
        ("cells/a.png", "labelstudio/ann@lab.org", "class", "plasma", None, None, None, None, None),
        ("cells/a.png", "labelstudio/ann@lab.org", "box", "RBC", 0.125, 0.2, 0.25, 0.5, None),
        ("b.png", "labelstudio/3", "class", "plasma", None, None, None, None, None)]
    assert found.labels["normalized"].tolist() == [False, True, True, False, True, False]
    assert reasons(found) == [("task[0] (id 1)", "1 prediction(s) left out (model output, not "
                                                 "people's labels)", "noted")]


def test_labelstudio_ingest_percentages_become_pixels(source, tmp_path):
    con = open_test_catalog(tmp_path)
    summary = ingest(con, source, fmt="labelstudio", labels=write_ls(tmp_path, ls_tasks()),
                     dataset="d")
    assert summary.labels_added == 6
    boxes = [r for r in current(con, "d") if r[2] != "class"]
    assert boxes == [  # a.png is 200 x 100: x% of 200, y% of 100
        ("cells/a.png", "labelstudio/3", "box", "RBC", 20.0, 20.0, 50.0, 50.0, None),
        ("cells/a.png", "labelstudio/3", "polygon", "WBC", 100.0, 10.0, 50.0, 50.0, None),
        ("cells/a.png", "labelstudio/ann@lab.org", "box", "RBC", 25.0, 20.0, 50.0, 50.0, None)]
    kinds = dict(con.execute("SELECT name, kind FROM annotators").fetchall())
    assert kinds["labelstudio/3"] == kinds["labelstudio/ann@lab.org"] == "human"


def test_labelstudio_read_bad_tasks_become_problems(source, tmp_path):
    tasks = [
        {"id": 1, "data": {"image": "missing.png"}, "annotations": []},
        {"id": 2, "data": {"image": "../outside.png"}, "annotations": []},
        {"id": 3, "data": {}, "annotations": []},
        "not a task",
        {"id": 5, "data": {"image": "b.png"}, "annotations": [
            {"completed_by": 1, "was_cancelled": True, "result": [rectangle(0, 0, 5, 5, "RBC")]},
            {"result": []},
            {"completed_by": 2, "result": [
                rectangle("x", 0, 5, 5, "RBC"),
                rectangle(0, 0, 5, 5, "RBC", rotation=30),
                {"type": "rectanglelabels", "value": {"x": 0, "y": 0, "width": 5, "height": 5,
                                                      "rectanglelabels": []}},
                {"type": "keypointlabels", "value": {"x": 1, "y": 1, "keypointlabels": ["RBC"]}},
                {"type": "polygonlabels",
                 "value": {"points": [[1, 2, 3]], "polygonlabels": ["WBC"]}},
                {"type": "choices", "value": {"choices": ["plasma", "blood"]}},
                {"type": "choices", "value": {"choices": ["blood"]}},
                {"value": "nope"}]}]},
    ]
    found = labelstudio.read(source, write_ls(tmp_path, tasks))
    assert [(r[2], r[3]) for r in rows_of(found)] == [("box", "RBC"), ("class", "plasma")]
    where = "task[4] (id 5) annotations[2] result"
    assert reasons(found) == [
        ("task[0] (id 1)", "image 'missing.png' not found in the source", "skipped"),
        ("task[1] (id 2)", "image '../outside.png' is outside the source folder", "refused"),
        ("task[2] (id 3)", "task `data` names no image", "skipped"),
        ("task[3]", "task is not a JSON object", "skipped"),
        ("task[4] (id 5) annotations[0]", "cancelled annotation left out", "noted"),
        ("task[4] (id 5) annotations[1]", "annotation without completed_by", "skipped"),
        (f"{where}[0]", "`x` is not a finite number: 'x'", "skipped"),
        (f"{where}[1]", "box rotated 30 degrees: kept its enclosing upright box", "noted"),
        (f"{where}[2]", "no `rectanglelabels` list of class names", "skipped"),
        (f"{where}[3]", "result type 'keypointlabels' is not imported", "noted"),
        (f"{where}[4]", "`points` is not a list of [x, y] percentages", "skipped"),
        (f"{where}[5]", "2 choices: kept the first, 'plasma'", "noted"),
        (f"{where}[6]", "a second choices result: the image keeps the first class", "skipped"),
        (f"{where}[7]", "result item without `value`", "skipped")]


def test_labelstudio_rotated_box_keeps_enclosing_box(source, tmp_path):
    # a 20 x 10 px box at (20, 10) turned 90 degrees about its top-left corner covers
    # x 10..20, y 10..30 of the 200 x 100 image
    task = {"data": {"image": "cells/a.png"}, "annotations": [{"completed_by": 1, "result": [
        rectangle(10, 10, 10, 10, "RBC", rotation=90)]}]}
    found = labelstudio.read(source, write_ls(tmp_path, [task]))
    x, y, w, h = rows_of(found)[0][4:8]
    assert (round(x * 200, 6), round(y * 100, 6), round(w * 200, 6), round(h * 100, 6)) == \
        (10.0, 10.0, 10.0, 20.0)


@pytest.mark.parametrize("text, message", [
    ("[{", "malformed JSON"),
    ('{"images": []}', "expected a Label Studio export"),
    ("42", "expected a Label Studio export"),
])
def test_labelstudio_read_unusable_file_raises(source, tmp_path, text, message):
    with pytest.raises(FormatError, match=message):
        labelstudio.read(source, write_ls(tmp_path, text))


def test_labelstudio_read_single_task_object(source, tmp_path):
    task = {"data": {"image": "b.png"}, "annotations": [{"completed_by": 9, "result": [
        {"type": "choices", "value": {"choices": ["blood"]}}]}]}
    assert rows_of(labelstudio.read(source, write_ls(tmp_path, task)))[0][:4] == \
        ("b.png", "labelstudio/9", "class", "blood")


def test_labelstudio_image_name_shared_by_two_files_is_a_problem(source, tmp_path):
    write_png(source / "other" / "b.png", 10, 10)
    task = {"data": {"image": "http://host/data/upload/7/b.png"}, "annotations": []}
    found = labelstudio.read(source, write_ls(tmp_path, [task]))
    assert reasons(found) == [("task[0]", "image '/data/upload/7/b.png' matches 2 files named "
                                          "'b.png'", "skipped")]


# ---------------------------------------------------------------- CVAT


CVAT_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><name>cells</name><labels>
    <label><name>RBC</name><type>rectangle</type></label>
    <label><name>WBC</name><type>polygon</type></label>
    <label><name>blood</name><type>tag</type></label>
  </labels></task></meta>
  <image id="0" name="cells/a.png" width="200" height="100">
    <box label="RBC" source="manual" occluded="0" xtl="10.5" ytl="20" xbr="60.5" ybr="70"/>
    <polygon label="WBC" source="manual" occluded="0" points="100,10;150,10.25;150,60" z_order="0"/>
    <tag label="blood" source="manual"/>
  </image>
  <image id="1" name="b.png" width="50" height="40">
    <box label="RBC" xtl="0" ytl="0" xbr="10" ybr="10" rotation="90"/>
  </image>
</annotations>
"""


def write_cvat(folder: Path, text: str) -> Path:
    path = folder / "annotations.xml"
    path.write_text(text, encoding="utf-8")
    return path


def test_cvat_read_boxes_polygons_tags(source, tmp_path):
    found = cvat.read(source, write_cvat(tmp_path, CVAT_XML))
    assert rows_of(found) == [
        ("cells/a.png", None, "box", "RBC", 10.5, 20.0, 50.0, 50.0, None),
        ("cells/a.png", None, "polygon", "WBC", 100.0, 10.0, 50.0, 50.0,
         [[100.0, 10.0], [150.0, 10.25], [150.0, 60.0]]),
        ("cells/a.png", None, "class", "blood", None, None, None, None, None),
        ("b.png", None, "box", "RBC", 0.0, 0.0, 10.0, 10.0, None)]  # a square turned 90°
    assert found.classes == ["RBC", "WBC", "blood"]
    assert reasons(found) == [("<image> 2 (b.png) <box> 1",
                               "box rotated 90 degrees: kept its enclosing upright box", "noted")]


def test_cvat_ingest_keeps_pixels_and_class_order(source, tmp_path):
    con = open_test_catalog(tmp_path)
    summary = ingest(con, source, fmt="cvat", labels=write_cvat(tmp_path, CVAT_XML), dataset="d")
    assert summary.labels_added == 4
    assert [r for r in current(con, "d") if r[2] == "box"][0] == (
        "cells/a.png", "d/given", "box", "RBC", 10.5, 20.0, 50.0, 50.0, None)
    ds = catalog.find_dataset(con, "d")
    assert catalog.class_table(con, ds.dataset_id)["name"].tolist() == ["RBC", "WBC", "blood"]


def test_cvat_read_bad_elements_become_problems(source, tmp_path):
    text = """<annotations>
      <image id="0" name="cells/a.png" width="200" height="100">
        <box label="RBC" xtl="1" ytl="2" xbr="x" ybr="4"/>
        <box xtl="1" ytl="2" xbr="3" ybr="4"/>
        <box label="RBC" xtl="1" ytl="2" xbr="3"/>
        <polygon label="WBC" points="1,2;3"/>
        <polygon label="WBC" points="1,2;nan,4;5,6"/>
        <polyline label="WBC" points="1,2;3,4"/>
        <tag label="blood"/><tag label="plasma"/>
      </image>
      <image id="1" name="missing.png"/>
      <image id="2" name="../../escape.png"/>
      <image id="3"/>
    </annotations>"""
    found = cvat.read(source, write_cvat(tmp_path, text))
    assert [(r[2], r[3]) for r in rows_of(found)] == [("class", "blood")]
    where = "<image> 1 (cells/a.png)"
    assert reasons(found) == [
        (f"{where} <box> 1", "xbr='x' is not a number", "skipped"),
        (f"{where} <box> 2", "<box> without a label", "skipped"),
        (f"{where} <box> 3", "missing attribute ybr", "skipped"),
        (f"{where} <polygon> 4", "points='1,2;3' are not x,y;x,y;... numbers", "skipped"),
        (f"{where} <polygon> 5", "points='1,2;nan,4;5,6' are not x,y;x,y;... numbers", "skipped"),
        (f"{where} <polyline> 6", "<polyline> shapes are not imported", "noted"),
        (f"{where} <tag> 8", "a second <tag>: the image keeps the first class", "skipped"),
        ("<image> 2 (missing.png)", "image 'missing.png' not found in the source", "skipped"),
        ("<image> 3 (../../escape.png)", "image '../../escape.png' is outside the source folder",
         "refused"),
        ("<image> 4", "<image> without a name", "skipped")]
    assert found.classes is None


@pytest.mark.parametrize("text, message", [
    ("<annotations><image>", "malformed XML"),
    ("<annotation><filename>a.png</filename></annotation>", "expected CVAT XML"),
    ("<annotations><track id='0' label='RBC'/></annotations>", "video XML"),
])
def test_cvat_read_unusable_file_raises(source, tmp_path, text, message):
    with pytest.raises(FormatError, match=message):
        cvat.read(source, write_cvat(tmp_path, text))


def test_unusable_tool_file_still_ingests_images(source, tmp_path):
    con = open_test_catalog(tmp_path)
    summary = ingest(con, source, fmt="cvat", labels=write_cvat(tmp_path, "<oops"), dataset="d")
    assert (summary.files, summary.labels_added, summary.problems) == (2, 0, {"skipped": 1})
    assert "malformed XML" in summary.examples[0]["reason"]


# ---------------------------------------------------------------- registry and command line


def test_detect_format_tells_tools_apart(source, tmp_path):
    assert detect_format(source, write_ls(tmp_path, ls_tasks())) == "labelstudio"
    coco = tmp_path / "instances.json"
    coco.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    assert detect_format(source, coco) == "coco"
    assert detect_format(source, write_cvat(tmp_path, CVAT_XML)) == "cvat"


def test_read_annotations_knows_both_tools(source, tmp_path):
    assert len(read_annotations(source, "labelstudio", write_ls(tmp_path, ls_tasks())).labels) == 6
    assert len(read_annotations(source, "cvat", write_cvat(tmp_path, CVAT_XML)).labels) == 4


def test_main_ingest_labelstudio(source, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SIEVE_HOME", str(tmp_path / "home"))
    labels = write_ls(tmp_path, ls_tasks())
    code = main(["ingest", str(source), "--db", str(tmp_path / "c.duckdb"), "--format",
                 "labelstudio", "--labels", str(labels), "--dataset", "d", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (summary["format"], summary["labels_added"], summary["problems"]) == (
        "labelstudio", 6, {"noted": 1})
