"""Property tests of every importer (core.formats.*, then core.ingest): random and mutated JSON,
XML, text and CSV never raise anything but FormatError (with a message); whatever is parsed is
well formed (finite coordinates, paths inside the source), every problem has a reason, and a
whole ingest of it records its problems and goes on."""
from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import catalog
from core.formats import (LABEL_COLUMNS, FormatError, coco, csvlabels, cvat, imagefolder,
                          labelstudio, voc, yolo)
from core.ingest import ingest
from tests.fixtures import write_png

READER = settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
PIPELINE = settings(max_examples=10, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
ACTIONS = {"skipped", "flagged", "clipped", "refused", "noted"}
IMAGES = ("a.png", "b.png")  # the images of every source folder, 16 x 12 pixels

# ---------------------------------------------------------------- strategies

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-(10 ** 400), 10 ** 400), st.integers(-5, 100))
JUNK = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=8))
JSON = st.recursive(JUNK, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)
IDS = st.one_of(st.integers(-1, 3), st.text(max_size=2), st.none(), st.floats(),
                st.lists(st.integers(), max_size=2))
NAMES = st.one_of(st.sampled_from(["a.png", "b.png", "sub/../a.png", "../a.png", "/etc/passwd",
                                   "../../etc/passwd", "", "a.png\x00", "C:\\a.png",
                                   "/data/upload/1/1a2b3c4d-a.png", "?d=a.png"]),
                  st.text(max_size=12))
IMAGE_REFS = st.one_of(st.sampled_from(IMAGES), NAMES)  # half of them name a real image
COORDS = st.one_of(NUMBERS, st.text(max_size=4), st.none())
CLASS_NAMES = st.one_of(st.sampled_from(["cell", "dog", " cell ", "", "\x00"]), st.text(max_size=6))


def mutated(texts):
    """Texts, and the same texts damaged: cut short, a slice dropped or repeated, noise inserted."""
    def damage(args):
        text, at, length, how, noise = args
        at = at % (len(text) + 1)
        return {"cut": text[:at], "drop": text[:at] + text[at + length:],
                "repeat": text[:at + length] + text[at:], "insert": text[:at] + noise + text[at:],
                "keep": text}[how]

    return st.tuples(texts, st.integers(0, 10 ** 6), st.integers(0, 20),
                     st.sampled_from(["cut", "drop", "repeat", "insert"] + ["keep"] * 4),
                     st.text(max_size=4)).map(damage)


def as_json(value) -> str:
    return json.dumps(value, allow_nan=True)


COCO_DOCS = st.fixed_dictionaries({
    "images": st.lists(st.one_of(st.fixed_dictionaries(
        {"id": IDS, "file_name": NAMES}, optional={"width": COORDS, "height": COORDS}), JSON),
        max_size=4),
    "annotations": st.lists(st.one_of(st.fixed_dictionaries(
        {"image_id": IDS, "category_id": IDS},
        optional={"id": IDS, "bbox": st.one_of(st.lists(COORDS, max_size=5), JSON),
                  "segmentation": st.one_of(st.lists(st.lists(COORDS, max_size=8), max_size=3),
                                            JSON)}), JSON), max_size=6),
    "categories": st.lists(st.one_of(st.fixed_dictionaries({"id": IDS, "name": CLASS_NAMES}),
                                     JSON), max_size=3)})
COCO_TEXTS = st.one_of(mutated(COCO_DOCS.map(as_json)), JSON.map(as_json))

LS_VALUES = st.fixed_dictionaries({}, optional={
    **{key: COORDS for key in ("x", "y", "width", "height", "rotation")},
    **{key: st.one_of(st.lists(CLASS_NAMES, max_size=2), JSON)
       for key in ("rectanglelabels", "polygonlabels", "choices")},
    "points": st.one_of(st.lists(st.lists(COORDS, max_size=3), max_size=5), JSON)})
SMALL = st.one_of(st.integers(-10, 120), st.floats(-10, 120))  # numbers that make a real box
LS_BOX = st.fixed_dictionaries(  # a box good but for its rotation
    {"x": SMALL, "y": SMALL, "width": SMALL, "height": SMALL,
     "rectanglelabels": st.just(["cell"])},
    optional={"rotation": st.one_of(st.sampled_from([math.nan, math.inf, 1e308, 30]), COORDS)})
LS_RESULTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["choices", "rectanglelabels", "polygonlabels", "keypointlabels"]),
     "value": st.one_of(LS_VALUES, LS_BOX, JSON)},
    optional={"original_width": st.one_of(COORDS, st.just(16)),
              "original_height": st.one_of(COORDS, st.just(12))})
LS_TASKS = st.fixed_dictionaries(
    {"data": st.one_of(st.fixed_dictionaries({"image": IMAGE_REFS}), JSON)},
    optional={"id": IDS, "predictions": JSON, "annotations": st.lists(st.one_of(
        st.fixed_dictionaries({"completed_by": st.one_of(IDS, JSON)}, optional={
            "result": st.one_of(st.lists(st.one_of(LS_RESULTS, JSON), max_size=3), JSON),
            "was_cancelled": JUNK}), JSON), max_size=2)})
LS_TEXTS = st.one_of(mutated(st.lists(st.one_of(LS_TASKS, JSON), max_size=4).map(as_json)),
                     JSON.map(as_json))

SPECIAL = st.sampled_from(["nan", "inf", "-inf", "1e400", "-0", "30"])  # numbers that break maths
XML_TEXT = st.one_of(st.sampled_from(["1", "0", "-3", "", " 5 ", "x"]), SPECIAL,
                     st.text(max_size=6))


def _voc(filename, objects) -> str:
    body = "".join(
        f"<object><name>{escape(name)}</name><bndbox>"
        + "".join(f"<{tag}>{escape(value)}</{tag}>" for tag, value in zip(
            ("xmin", "ymin", "xmax", "ymax"), values)) + "</bndbox></object>"
        for name, values in objects)
    name = "" if filename is None else f"<filename>{escape(filename)}</filename>"
    return f"<annotation>{name}{body}</annotation>"


VOC_TEXTS = st.one_of(mutated(st.builds(_voc, st.one_of(st.none(), NAMES), st.lists(st.tuples(
    CLASS_NAMES, st.lists(XML_TEXT, max_size=4)), max_size=3))), st.text(max_size=60))


def _cvat(labels, images) -> str:
    meta = "".join(f"<label><name>{escape(n)}</name></label>" for n in labels)
    parts = []
    for name, shapes in images:
        inner = "".join(f"<{tag} " + " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items())
                        + "/>" for tag, attrs in shapes)
        parts.append(f"<image{'' if name is None else ' name=' + quoteattr(name)}>{inner}</image>")
    return f"<annotations><meta><labels>{meta}</labels></meta>{''.join(parts)}</annotations>"


CVAT_ATTRS = st.dictionaries(st.sampled_from(["label", "xtl", "ytl", "xbr", "ybr", "rotation",
                                              "points"]), XML_TEXT, max_size=7)
CVAT_BOX = st.fixed_dictionaries(  # a box good but for its rotation
    {"label": st.just("cell"), **{k: st.sampled_from(["1", "5", "-2", "30"])
                                  for k in ("xtl", "ytl", "xbr", "ybr")}},
    optional={"rotation": st.one_of(SPECIAL, XML_TEXT)})
CVAT_SHAPES = st.one_of(
    st.tuples(st.sampled_from(["box", "polygon", "tag", "polyline", "points", "other"]),
              CVAT_ATTRS),
    st.tuples(st.just("box"), CVAT_BOX))
CVAT_TEXTS = st.one_of(mutated(st.builds(_cvat, st.lists(CLASS_NAMES, max_size=3), st.lists(
    st.tuples(st.one_of(st.none(), IMAGE_REFS), st.lists(CVAT_SHAPES, max_size=4)), max_size=3))),
    st.text(max_size=60))

YOLO_LINE = st.lists(st.one_of(st.sampled_from(["0", "1", "7", "-1", "0.5", "1e400", "nan", "2.5",
                                                "x", "0.1"]), st.text(max_size=3)),
                     max_size=9).map(" ".join)
YOLO_TEXTS = st.one_of(st.lists(YOLO_LINE, max_size=4).map("\n".join), st.binary(max_size=40))
CSV_TEXTS = mutated(st.lists(st.tuples(NAMES, CLASS_NAMES, st.text(max_size=3)), max_size=5).map(
    lambda rows: "image,label,annotator\n" + "\n".join(
        ",".join(json.dumps(v) if "," in v or '"' in v else v for v in row) for row in rows)))
FILE_NAMES = st.lists(st.tuples(st.sampled_from([b"cat", b"dog", b"caf\xe9", b"x.png", b".hid"]),
                                st.binary(min_size=1, max_size=8).filter(
                                    lambda b: b"/" not in b and b"\x00" not in b and b not in
                                    (b".", b".."))),
                      max_size=4)

# ---------------------------------------------------------------- checks


def write_content(path: Path, content) -> None:
    path.write_bytes(content if isinstance(content, bytes)
                     else content.encode("utf-8", "surrogatepass"))


def assert_well_formed(found) -> None:
    """Labels with finite numbers and paths inside the source; problems with reasons."""
    assert list(found.labels.columns) == LABEL_COLUMNS
    for row in found.labels.to_dict("records"):
        assert isinstance(row["path"], str) and row["path"]
        assert not row["path"].startswith(("/", "../")) and row["path"] != ".."
        assert isinstance(row["class_name"], str)
        for column in ("x", "y", "w", "h"):
            assert row[column] is None or math.isfinite(row[column]), row
        if isinstance(row["points"], list):
            assert all(math.isfinite(v) for point in row["points"] for v in point), row
    for item in found.problems:
        assert item["reason"].strip() and item["action"] in ACTIONS


def read_or_refuse(read, source: Path, labels: Path | None) -> None:
    try:
        found = read(source, labels)
    except FormatError as err:
        assert str(err).strip()
        return
    assert_well_formed(found)


def make_source(folder: Path) -> Path:
    """A source with two images, a YOLO layout and its class names beside them."""
    for k, name in enumerate(IMAGES):
        write_png(folder / name, 16, 12, seed=k)
        write_png(folder / "images" / name, 16, 12, seed=k)
    (folder / "labels").mkdir(exist_ok=True)
    (folder / "data.yaml").write_text("names: [cell, dog]\n")
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_source(tmp_path_factory.mktemp("fuzz") / "src")


# ---------------------------------------------------------------- readers


@pytest.mark.parametrize("read, texts, suffix", [
    (coco.read, COCO_TEXTS, "json"), (labelstudio.read, LS_TEXTS, "json"),
    (cvat.read, CVAT_TEXTS, "xml"), (csvlabels.read, CSV_TEXTS, "csv")],
    ids=["coco", "labelstudio", "cvat", "csv"])
def test_reader_of_one_file_never_crashes(source, read, texts, suffix):
    @READER
    @given(content=st.one_of(texts, st.binary(max_size=80)))
    def check(content):
        labels = source.parent / f"labels.{suffix}"
        write_content(labels, content)
        read_or_refuse(read, source, labels)

    check()


@READER
@given(content=st.one_of(VOC_TEXTS, st.binary(max_size=80)))
def test_voc_read_never_crashes(content):
    with tempfile.TemporaryDirectory() as folder:
        source = make_source(Path(folder))
        write_content(source / "a.xml", content)
        read_or_refuse(voc.read, source, None)


@READER
@given(content=YOLO_TEXTS, names=st.one_of(st.text(max_size=30), st.binary(max_size=30)))
def test_yolo_read_never_crashes(content, names):
    with tempfile.TemporaryDirectory() as folder:
        source = make_source(Path(folder))
        write_content(source / "labels" / "a.txt", content)
        write_content(source / "data.yaml", names)
        read_or_refuse(yolo.read, source, None)


def write_named_files(folder: Path, names: list[tuple[bytes, bytes]]) -> None:
    """Empty image files under raw byte names: class folder / name (non-UTF-8 allowed)."""
    for k, (parent, name) in enumerate(names):
        directory = os.path.join(os.fsencode(folder), parent)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, b"%d" % k + name + b".png"), "wb") as handle:
            handle.write(b"\x89PNG" if k % 2 else b"")


@READER
@given(names=FILE_NAMES)
def test_imagefolder_read_never_crashes(names):
    with tempfile.TemporaryDirectory() as folder:
        write_named_files(Path(folder), names)
        read_or_refuse(imagefolder.read, Path(folder), None)


# ---------------------------------------------------------------- whole ingest

_datasets = itertools.count()


@pytest.fixture(scope="module")
def con():
    con = catalog.open_catalog(":memory:")
    yield con
    con.close()


def ingest_or_refuse(con, source: Path, fmt: str, labels: Path | None) -> None:
    """Ingest into a new dataset: only FormatError may escape; images always go in."""
    name = f"fuzz{next(_datasets)}"
    try:
        summary = ingest(con, source, fmt=fmt, labels=labels, dataset=name, workers=1)
    except FormatError as err:
        assert str(err).strip()
        return
    assert summary.files >= 1
    assert all(item["reason"].strip() for item in summary.examples)
    dataset_id = catalog.find_dataset(con, name).dataset_id
    recorded = con.execute("SELECT count(*) FROM ingest_problems WHERE dataset_id = ?",
                           [dataset_id]).fetchall()[0][0]
    assert recorded == sum(n for n in summary.problems.values()) - summary.unreadable


@pytest.mark.parametrize("fmt, texts, where", [
    ("coco", COCO_TEXTS, "labels.json"), ("labelstudio", LS_TEXTS, "labels.json"),
    ("cvat", CVAT_TEXTS, "labels.xml"), ("csv", CSV_TEXTS, "labels.csv"),
    ("voc", VOC_TEXTS, "src/a.xml"), ("yolo", YOLO_TEXTS, "src/labels/a.txt")])
def test_ingest_never_crashes(con, source, fmt, texts, where):
    labels = source.parent / where

    @PIPELINE
    @given(content=texts)
    def check(content):
        write_content(labels, content)
        ingest_or_refuse(con, source, fmt, labels if fmt in ("coco", "labelstudio", "cvat",
                                                             "csv") else None)

    check()


@PIPELINE
@given(names=FILE_NAMES)
def test_ingest_imagefolder_of_odd_names_never_crashes(con, names):
    with tempfile.TemporaryDirectory() as folder:
        write_named_files(Path(folder), names)
        write_png(Path(folder) / "cat" / "ok.png", 8, 8)
        ingest_or_refuse(con, Path(folder), "imagefolder", None)


ROTATIONS = st.one_of(SPECIAL, st.just(10 ** 400),
                      st.floats(allow_nan=True, allow_infinity=True),
                      st.text(st.characters(min_codepoint=32, max_codepoint=0xD7FF), max_size=4))


@READER
@given(rotation=ROTATIONS)
def test_rotated_boxes_are_finite_or_a_problem(rotation):
    """Both tools that store rotated boxes: any rotation gives a finite box or a problem."""
    with tempfile.TemporaryDirectory() as folder:
        source = make_source(Path(folder))
        value = rotation if isinstance(rotation, str) else repr(rotation)
        cvat_file, ls_file = source / "cvat.xml", source / "ls.json"
        write_content(cvat_file, f'<annotations><image name="a.png"><box label="c" xtl="1" '
                                 f'ytl="1" xbr="5" ybr="5" rotation={quoteattr(value)}/></image>'
                                 '</annotations>')
        box = {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["c"],
               "rotation": rotation}
        write_content(ls_file, as_json([{"data": {"image": "a.png"}, "annotations": [{
            "completed_by": 1, "result": [{"type": "rectanglelabels", "original_width": 16,
                                           "original_height": 12, "value": box}]}]}]))
        for read, labels in ((cvat.read, cvat_file), (labelstudio.read, ls_file)):
            found = read(source, labels)
            assert_well_formed(found)
            assert len(found.labels) + sum(p["action"] == "skipped" for p in found.problems) == 1
