"""Exports (core.export) and augmentation (core.augment): round trips through the catalog that
must give back the same boxes, files and annotators; the options (splits, exclusions, model
labels, EXIF, weights, oversampling); safe writing (refusing a non-empty folder, no half-written
file after an interruption); the command line. The Export page: tests/test_export_page.py."""
from __future__ import annotations

import json
import os
from collections import Counter
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from core import augment, catalog, export
from core.__main__ import main
from core.balance import sampling_weights
from core.export import ExportOptions, export_dataset
from core.ingest import ingest
from tests.fixtures import encode, open_test_catalog, scene, write_png

# ---------------------------------------------------------------- fixtures

YOLO_LABELS = {  # image (width x height) → label file text, 6 decimals as the writer prints
    "train/a.png": (64, 48, "0 0.500000 0.500000 0.250000 0.500000\n"
                            "1 0.125000 0.250000 0.093750 0.125000\n"),
    "train/b.png": (32, 32, "1 0.250000 0.250000 0.500000 0.500000\n"
                            "0 0.125000 0.125000 0.875000 0.125000 0.500000 0.750000\n"),
    "val/c.png": (40, 20, "0 0.500000 0.500000 1.000000 1.000000\n"),
}
YOLO_YAML = "train: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n"


def write_yolo_source(folder: Path) -> Path:
    """A YOLO dataset: three images with boxes and a polygon, one background image."""
    for k, (name, (width, height, text)) in enumerate(YOLO_LABELS.items()):
        write_png(folder / "images" / name, width, height, seed=k)
        (folder / "labels" / name).with_suffix(".txt").parent.mkdir(parents=True, exist_ok=True)
        (folder / "labels" / name).with_suffix(".txt").write_text(text)
    write_png(folder / "images" / "train" / "empty.png", 16, 16, seed=9)
    (folder / "data.yaml").write_text(YOLO_YAML)
    return folder


@pytest.fixture
def yolo_con(tmp_path):
    con = open_test_catalog(tmp_path)
    ingest(con, write_yolo_source(tmp_path / "yolo"), fmt="yolo", dataset="boxes", workers=1)
    yield con, catalog.find_dataset(con, "boxes")
    con.close()


VOTES = ("image,label,annotator\na.png,cat,\na.png,cat,alice\na.png,dog,bob\nb.png,dog,\n"
         "b.png,dog,alice\nc.png,cat,carol\nc.png,dog,bob\nc.png,cat,alice\n")


@pytest.fixture
def votes_con(tmp_path):
    """Three images; the given labels on a and b; alice, bob and carol vote."""
    for k, name in enumerate("abc"):
        write_png(tmp_path / "src" / f"{name}.png", 24, 24, seed=k)
    (tmp_path / "votes.csv").write_text(VOTES)
    con = open_test_catalog(tmp_path)
    ingest(con, tmp_path / "src", fmt="csv", labels=tmp_path / "votes.csv", dataset="votes",
           workers=1)
    yield con, catalog.find_dataset(con, "votes")
    con.close()


def label_rows(con, dataset: str) -> list[tuple]:
    """Sorted (file name, annotator, kind, class, x, y, w, h, flag) of every current label."""
    ds = catalog.find_dataset(con, dataset)
    rows = con.execute("""SELECT i.path, a.name, l.kind, c.name, l.x, l.y, l.w, l.h, l.flag
        FROM current_labels l JOIN annotators a USING (annotator_id) JOIN images i USING (image_id)
        JOIN classes c ON c.dataset_id = l.dataset_id AND c.class_id = l.class_id
        WHERE l.dataset_id = ?""", [ds.dataset_id]).fetchall()
    return sorted((Path(p).name, *rest) for p, *rest in rows)


def fresh_catalog(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    return open_test_catalog(folder)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# ---------------------------------------------------------------- BCCD: VOC → catalog → COCO


@pytest.fixture(scope="module")
def bccd(shared_data, tmp_path_factory):
    """BCCD ingested from its VOC files, with its train / val / test splits."""
    root = shared_data / "bccd"
    con = open_test_catalog(tmp_path_factory.mktemp("bccd"))
    ingest(con, root / "images", fmt="voc", labels=root / "annotations", dataset="bccd",
           workers=1)  # in-process: a worker pool after an AppTest in this process fails
    ds = catalog.find_dataset(con, "bccd")
    for split in ("train", "val", "test"):
        stems = (root / "splits" / f"{split}.txt").read_text().split()
        catalog.set_splits(con, ds.dataset_id, pd.DataFrame(
            {"path": [f"{s}.jpg" for s in stems], "split": split}))
    yield con, ds
    con.close()


def test_export_coco_round_trip_bccd_same_boxes(bccd, tmp_path):
    con, ds = bccd
    summary = export_dataset(con, ds, tmp_path / "coco", ExportOptions(format="coco"))
    assert (summary.images, summary.objects) == (364, 4888)
    flagged = [a for split in ("train", "val", "test") for a in json.loads(
        (tmp_path / "coco" / "annotations" / f"instances_{split}.json").read_text())["annotations"]
        if "attributes" in a]
    assert sorted(a["attributes"]["flag"] for a in flagged) == ["zero-area box (0 x 0 px)"] * 2
    again = fresh_catalog(tmp_path / "again")
    for split in ("train", "val", "test"):
        ingest(again, tmp_path / "coco" / "images", fmt="coco", dataset="bccd", workers=1,
               labels=tmp_path / "coco" / "annotations" / f"instances_{split}.json")
    before, after = label_rows(con, "bccd"), label_rows(again, "bccd")
    assert len(after) == 4888
    assert [r[2:8] for r in before] == [r[2:8] for r in after]  # class and box, to the pixel
    assert [r[0] for r in before] == [r[0] for r in after]
    assert [r[8] for r in after if r[8]] == ["zero-area box (0 x 0 px)"] * 2


def test_export_coco_loads_in_pycocotools_and_cocoeval_runs(bccd, tmp_path):
    from pycocotools import coco as coco_api, cocoeval  # pinned in requirements-dev.txt

    con, ds = bccd
    export_dataset(con, ds, tmp_path / "coco", ExportOptions(format="coco", images="link",
                                                             splits=("test",)))
    truth = coco_api.COCO(str(tmp_path / "coco" / "annotations" / "instances_test.json"))
    assert len(truth.getImgIds()) == 72 and len(truth.getCatIds()) == 3
    detections = truth.loadRes([{"image_id": a["image_id"], "category_id": a["category_id"],
                                 "bbox": a["bbox"], "score": 1.0}
                                for a in truth.dataset["annotations"]])
    evaluation = cocoeval.COCOeval(truth, detections, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] > 0.99  # the labels scored against themselves


def test_export_voc_round_trip_bccd_same_boxes(bccd, tmp_path):
    con, ds = bccd
    export_dataset(con, ds, tmp_path / "voc", ExportOptions(format="voc", images="link"))
    assert (tmp_path / "voc" / "ImageSets" / "Main" / "test.txt").read_text().count("\n") == 72
    again = fresh_catalog(tmp_path / "again")
    ingest(again, tmp_path / "voc" / "JPEGImages", fmt="voc", dataset="bccd", workers=1,
           labels=tmp_path / "voc" / "Annotations")
    assert label_rows(again, "bccd") == label_rows(con, "bccd")


# ---------------------------------------------------------------- YOLO, CSV, Parquet, ImageFolder


def test_export_yolo_round_trip_identical_files(yolo_con, tmp_path):
    con, ds = yolo_con
    summary = export_dataset(con, ds, tmp_path / "out", ExportOptions(format="yolo"))
    assert (summary.images, summary.objects, summary.warnings) == (4, 5, [])
    source, out = files_under(tmp_path / "yolo"), files_under(tmp_path / "out")
    assert {k: v for k, v in out.items() if k.startswith(("images/", "labels/", "data.yaml"))} \
        == source


IMAGE_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"}


def ultralytics_label_path(image: str) -> str:
    """Where Ultralytics looks for an image's labels: the last /images/ of its path becomes
    /labels/ and the suffix .txt (its img2label_paths)."""
    return "/labels/".join(image.rsplit("/images/", 1)).rsplit(".", 1)[0] + ".txt"


def check_ultralytics_layout(out: Path) -> dict[str, int]:
    """Check an export against the detection dataset layout Ultralytics documents: data.yaml
    with train and val folders (relative to the file's folder when `path` is absent) and
    `names` numbered 0..n-1; per image at most one label file, found by the rule above, whose
    rows are `class cx cy w h` or `class x1 y1 x2 y2 ...` with fractions in [0, 1]; no label
    file without its image. Returns the number of labelled images per split."""
    data = yaml.safe_load((out / "data.yaml").read_text())
    root = Path(data.get("path") or out)
    assert {"train", "val", "names"} <= set(data)
    assert list(data["names"]) == list(range(len(data["names"])))
    labelled, expected = {}, set()
    for split in ("train", "val", "test"):
        if split not in data:
            continue
        images = [p for p in (root / data[split]).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
        assert images, f"{split}: no images under {data[split]}"
        labels = [Path(ultralytics_label_path(str(p))) for p in images]
        expected |= set(labels)
        labelled[split] = sum(p.exists() for p in labels)
        for rows in (p.read_text().splitlines() for p in labels if p.exists()):
            for row in rows:
                cls, *values = row.split()
                assert int(cls) in data["names"]
                assert len(values) == 4 or (len(values) >= 6 and len(values) % 2 == 0), row
                assert all(0 <= float(v) <= 1 for v in values), row
    assert set((out / "labels").rglob("*.txt")) <= expected  # no label file without its image
    return labelled


def test_export_yolo_layout_is_what_ultralytics_reads(yolo_con, tmp_path):
    con, ds = yolo_con
    export_dataset(con, ds, tmp_path / "out", ExportOptions(format="yolo"))
    assert check_ultralytics_layout(tmp_path / "out") == {"train": 2, "val": 1}  # empty.png: none


def test_export_yolo_layout_bccd(bccd, tmp_path):
    con, ds = bccd
    export_dataset(con, ds, tmp_path / "out", ExportOptions(format="yolo", images="link"))
    assert check_ultralytics_layout(tmp_path / "out") == {"train": 205, "val": 87, "test": 72}
    data = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert data["names"] == {0: "Platelets", 1: "RBC", 2: "WBC"}


def test_export_csv_round_trip_keeps_every_annotator(votes_con, tmp_path):
    con, ds = votes_con
    export_dataset(con, ds, tmp_path / "csv", ExportOptions(format="csv"))
    table = pd.read_csv(tmp_path / "csv" / "labels.csv")
    assert table.loc[table["image"] == "a.png", ["annotator", "layer", "resolved"]].fillna("")\
        .values.tolist() == [["", "votes/given", True], ["alice", "alice", True],
                             ["bob", "bob", False]]
    again = fresh_catalog(tmp_path / "again")
    ingest(again, tmp_path / "src", fmt="csv", labels=tmp_path / "csv" / "labels.csv",
           dataset="votes", workers=1)
    assert label_rows(again, "votes") == label_rows(con, "votes")
    kinds = dict(again.execute("SELECT name, kind FROM annotators").fetchall())
    assert kinds == {"votes/given": "import", "alice": "human", "bob": "human", "carol": "human"}


def test_export_parquet_one_row_per_label_with_provenance(yolo_con, tmp_path):
    con, ds = yolo_con
    export_dataset(con, ds, tmp_path / "pq", ExportOptions(format="parquet"))
    table = pd.read_parquet(tmp_path / "pq" / "labels.parquet")
    assert list(table.columns) == export.TABLE_COLUMNS
    assert table[["image", "label", "kind", "x", "y", "w", "h"]].values.tolist()[:2] == [
        ["images/train/a.png", "cat", "box", 24.0, 12.0, 16.0, 24.0],
        ["images/train/a.png", "dog", "box", 5.0, 9.0, 6.0, 6.0]]
    assert set(table["layer"]) == {"boxes/given"} and set(table["source"]) == {"import"}
    assert table["event_id"].is_unique and table["resolved"].all()


def test_export_imagefolder_class_folders(votes_con, tmp_path):
    con, ds = votes_con
    summary = export_dataset(con, ds, tmp_path / "if", ExportOptions(format="imagefolder"))
    # a and b: the given label; c: the majority of people (cat 2 : dog 1)
    assert sorted(p for p in files_under(tmp_path / "if") if p.endswith(".png")) == [
        "cat/a.png", "cat/c.png", "dog/b.png"]
    assert summary.skipped == {}


def test_export_voc_marks_clipped_boxes_truncated(tmp_path):
    write_png(tmp_path / "src" / "one.png", 40, 30)
    (tmp_path / "src" / "one.xml").write_text(
        "<annotation><filename>one.png</filename><object><name>cat</name><bndbox><xmin>-5</xmin>"
        "<ymin>10</ymin><xmax>20.5</xmax><ymax>40</ymax></bndbox></object></annotation>")
    con = open_test_catalog(tmp_path)
    ingest(con, tmp_path / "src", fmt="voc", dataset="d", workers=1)
    export_dataset(con, catalog.find_dataset(con, "d"), tmp_path / "voc",
                   ExportOptions(format="voc"))
    xml = (tmp_path / "voc" / "Annotations" / "one.xml").read_text()
    assert "<truncated>1</truncated>" in xml
    assert "<bndbox><xmin>0</xmin><ymin>10</ymin><xmax>20.5</xmax><ymax>30</ymax></bndbox>" in xml


# ---------------------------------------------------------------- options


def test_export_leaves_out_excluded_images_unless_asked(yolo_con, tmp_path):
    con, ds = yolo_con
    image_id = con.execute("SELECT image_id FROM images WHERE path = 'images/train/a.png'"
                           ).fetchall()[0][0]
    catalog.append_image_events(con, ds.dataset_id, pd.DataFrame({
        "image_id": [image_id], "action": ["exclude"], "split": [None],
        "reason": ["duplicate"]}), author="t", batch="b")
    summary = export_dataset(con, ds, tmp_path / "a", ExportOptions(format="yolo"))
    assert (summary.images, summary.skipped) == (3, {"excluded by duplicate resolution": 1})
    assert not (tmp_path / "a" / "labels" / "train" / "a.txt").exists()
    summary = export_dataset(con, ds, tmp_path / "b", ExportOptions(format="yolo",
                                                                    include_excluded=True))
    assert summary.images == 4 and (tmp_path / "b" / "labels" / "train" / "a.txt").exists()


def test_export_chosen_splits_only(yolo_con, tmp_path):
    con, ds = yolo_con
    summary = export_dataset(con, ds, tmp_path / "v", ExportOptions(format="coco", splits=("val",)))
    assert summary.images == 1
    assert sorted(os.listdir(tmp_path / "v" / "annotations")) == ["instances_val.json"]


def test_export_model_labels_only_when_asked(yolo_con, tmp_path):
    con, ds = yolo_con
    image_id = con.execute("SELECT image_id FROM images WHERE path = 'images/train/empty.png'"
                           ).fetchall()[0][0]
    net = catalog.get_or_create_annotators(con, ["net"], kind="model")["net"]
    catalog.append_label_events(con, pd.DataFrame([{
        "event_id": None, "object_id": None, "dataset_id": ds.dataset_id, "image_id": image_id,
        "annotator_id": net, "kind": "box", "op": "set", "class_id": 0, "x": 1.0, "y": 1.0,
        "w": 4.0, "h": 4.0, "points": None, "source": "model", "model_run_id": 7, "score": 0.8,
        "replaces": None, "flag": None, "job_id": None, "created_at": catalog.now()}]))
    people = export_dataset(con, ds, tmp_path / "p", ExportOptions(format="coco"))
    models = export_dataset(con, ds, tmp_path / "m",
                            ExportOptions(format="coco", model_labels=True))
    assert (people.objects, models.objects) == (5, 6)
    annotations = json.loads((tmp_path / "m" / "annotations" / "instances_train.json").read_text())
    assert [a["score"] for a in annotations["annotations"] if "score" in a] == [0.8]


def test_export_class_weights_follow_balance(yolo_con, tmp_path):
    con, ds = yolo_con
    export_dataset(con, ds, tmp_path / "w",
                   ExportOptions(format="yolo", target={"cat": 3, "dog": 1}))
    written = pd.read_csv(tmp_path / "w" / "class_weights.csv")
    expected = sampling_weights(pd.Series({"cat": 3, "dog": 2}),
                                target=pd.Series({"cat": 3.0, "dog": 1.0}))
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)
    assert written["weight"].round(4).tolist() == [1.25, 0.625]  # (3/4)/(3/5), (1/4)/(2/5)


def gps_jpeg(orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0x0112] = orientation
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (52.0, 31.0, 12.0), "E", (13.0, 24.0, 0.0)
    return encode(scene(64, 32, seed=3), "JPEG", quality=90, exif=exif.tobytes())


def test_strip_metadata_removes_gps_keeps_pixels():
    data = gps_jpeg()
    assert Image.open(BytesIO(data)).getexif().get_ifd(0x8825)  # the fixture has GPS
    stripped = export.strip_metadata(data)
    assert dict(Image.open(BytesIO(stripped)).getexif()) == {}
    assert np.array_equal(np.asarray(Image.open(BytesIO(stripped))),
                          np.asarray(Image.open(BytesIO(data))))  # lossless: same scan data
    png = encode(scene(8, 8), "PNG", exif=Image.Exif().tobytes(), pnginfo=None)
    assert b"eXIf" not in export.strip_metadata(png)


def test_strip_metadata_turns_a_rotated_image_upright():
    stripped = Image.open(BytesIO(export.strip_metadata(gps_jpeg(orientation=6))))
    assert stripped.size == (32, 64) and dict(stripped.getexif()) == {}


def test_export_strip_exif_copies(tmp_path):
    (tmp_path / "src" / "cat").mkdir(parents=True)
    (tmp_path / "src" / "cat" / "gps.jpg").write_bytes(gps_jpeg())
    con = open_test_catalog(tmp_path)
    ingest(con, tmp_path / "src", fmt="imagefolder", dataset="d", workers=1)
    ds = catalog.find_dataset(con, "d")
    export_dataset(con, ds, tmp_path / "out", ExportOptions(format="imagefolder", strip_exif=True))
    assert dict(Image.open(tmp_path / "out" / "cat" / "gps.jpg").getexif()) == {}
    with pytest.raises(export.ExportError, match="needs the images copied"):
        export_dataset(con, ds, tmp_path / "x", ExportOptions(format="coco", images="link",
                                                              strip_exif=True))


# ---------------------------------------------------------------- safe writing


def test_export_refuses_a_folder_that_is_not_empty(yolo_con, tmp_path):
    con, ds = yolo_con
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(export.OutputNotEmpty, match="is not empty"):
        export_dataset(con, ds, tmp_path / "out", ExportOptions(format="yolo"))
    assert os.listdir(tmp_path / "out") == ["notes.txt"]


def test_export_force_replaces_only_what_an_export_wrote(yolo_con, tmp_path):
    con, ds = yolo_con
    export_dataset(con, ds, tmp_path / "out", ExportOptions(format="yolo"))
    (tmp_path / "out" / "notes.txt").write_text("mine")
    export_dataset(con, ds, tmp_path / "out", ExportOptions(format="yolo", splits=("val",),
                                                            force=True))
    assert not (tmp_path / "out" / "labels" / "train" / "a.txt").exists()  # stale: removed
    assert (tmp_path / "out" / "labels" / "val" / "c.txt").exists()
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_export_interrupted_while_copying_leaves_no_image(yolo_con, tmp_path, monkeypatch):
    con, ds = yolo_con
    real, calls = export._place_one, []

    def fail_third(*args):
        calls.append(args)
        if len(calls) == 3:
            raise OSError("disk full")
        real(*args)

    monkeypatch.setattr(export, "_place_one", fail_third)
    with pytest.raises(OSError, match="disk full"):
        export_dataset(con, ds, tmp_path / "out", ExportOptions(format="yolo"))
    assert os.listdir(tmp_path / "out") == []  # two images were complete, but only staged


def test_export_interrupted_while_writing_leaves_no_half_file(yolo_con, tmp_path, monkeypatch):
    con, ds = yolo_con

    def half_then_fail(text):
        raise KeyboardInterrupt  # after the temporary file was opened, before it is complete

    real_write = Path.write_text

    def write_text(self, text, *args, **kwargs):
        if self.name.startswith(".instances_val.json"):
            real_write(self, text[:10], *args, **kwargs)
            half_then_fail(text)
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(KeyboardInterrupt):
        export_dataset(con, ds, tmp_path / "out", ExportOptions(format="coco"))
    names = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")
                   if p.is_file())
    assert "annotations/instances_train.json" in names  # complete before the interruption
    assert not any("val" in n or n.endswith(".tmp") for n in names if n.startswith("annot"))
    assert not any(Path(n).name.startswith(".") for n in names)


def test_main_export_needs_force_for_a_folder_that_is_not_empty(yolo_con, tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.setenv("SIEVE_HOME", str(tmp_path / "home"))
    con, ds = yolo_con
    con.close()
    db, out = tmp_path / "catalog.duckdb", tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("")
    args = ["export", "--db", str(db), "--dataset", "boxes", "--format", "yolo", "--out", str(out)]
    assert main(args) == 2
    assert capsys.readouterr().err == f"error: {out} is not empty: choose an empty folder, or " \
                                      "give --force to overwrite\n"
    assert main(args + ["--force", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["images"], summary["objects"], summary["snapshot"]) == (4, 5, "now")
    assert main(["snapshot", "--db", str(db), "--dataset", "boxes", "--name", "v1"]) == 0
    snapshot_args = ["--out", str(tmp_path / "s"), "--snapshot", "v1", "--splits", "val"]
    assert main(args[:-2] + snapshot_args) == 0
    assert "exported boxes (v1) as yolo" in capsys.readouterr().out


# ---------------------------------------------------------------- augmentation


def test_augment_box_stays_on_its_object_bccd(shared_data, tmp_path):
    """Flip and crop a BCCD image: each transformed box matches the same transform applied to a
    mask of the box, to within a pixel and a half (the mask is resampled, the box is exact)."""
    from core.formats import voc

    root = shared_data / "bccd"
    (tmp_path / "BloodImage_00000.xml").write_bytes(
        (root / "annotations" / "BloodImage_00000.xml").read_bytes())
    found = voc.read(root / "images", tmp_path)
    objects = found.labels[found.labels["path"] == "BloodImage_00000.jpg"].reset_index(drop=True)
    objects = objects.assign(**{"class": objects["class_name"], "flag": None,
                                "index": range(len(objects))})
    image = Image.open(root / "images" / "BloodImage_00000.jpg")
    masks = np.zeros((len(objects), image.height, image.width), np.uint8)  # (K, H, W)
    for k, o in objects.iterrows():
        masks[k, int(o.y):int(o.y + o.h), int(o.x):int(o.x + o.w)] = 1
    config = augment.AugmentConfig(flip=True, crop=True, rotation=0, colour=False,
                                   min_visibility=0.9)
    compared = 0
    for seed in range(6):
        result = augment.augment_sample(image, objects, config, seed=seed, masks=masks)
        assert result.image.size == image.size
        for o in result.objects.itertuples():
            ys, xs = np.nonzero(result.masks[o.index])
            mask_box = (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
            assert np.allclose((o.x, o.y, o.w, o.h), mask_box, atol=1.5), (seed, o)
            compared += 1
    assert compared > 20


def test_augment_flip_moves_box_and_polygon_exactly():
    image = Image.new("RGB", (100, 50))
    objects = pd.DataFrame({"kind": ["box", "polygon"], "class": ["a", "b"], "x": [10.0, 60.0],
                            "y": [5.0, 10.0], "w": [20.0, 30.0], "h": [10.0, 20.0],
                            "points": [None, json.dumps([[60, 10], [90, 10], [90, 30]])],
                            "flag": [None, None]})
    config = augment.AugmentConfig(flip=True, crop=False, rotation=0, colour=False)
    flips = []
    for seed in range(8):
        out = augment.augment_sample(image, objects, config, seed=seed).objects
        flips.append(out["x"].tolist())
        if out["x"].tolist() == [70.0, 10.0]:  # flipped: x' = 100 - x - w
            assert json.loads(out["points"][1]) == [[40, 10], [10, 10], [10, 30]]
    assert {tuple(f) for f in flips} == {(10.0, 60.0), (70.0, 10.0)}


def test_augment_sample_is_seeded():
    image = scene(40, 30)
    objects = pd.DataFrame({"kind": ["box"], "class": ["a"], "x": [5.0], "y": [5.0], "w": [20.0],
                            "h": [15.0], "points": [None], "flag": [None]})
    first = augment.augment_sample(image, objects, augment.AugmentConfig(), seed=3)
    second = augment.augment_sample(image, objects, augment.AugmentConfig(), seed=3)
    assert first.objects.equals(second.objects)
    assert np.array_equal(np.asarray(first.image), np.asarray(second.image))


def test_clip_polygon_to_the_image():
    # a triangle sticking out of the right edge of a 10 x 10 image
    assert augment.clip_polygon([[5, 2], [15, 2], [5, 8]], 10, 10) == [
        [5.0, 2.0], [10.0, 2.0], [10.0, 5.0], [5.0, 8.0]]
    assert augment.clip_polygon([[12, 2], [15, 2], [12, 8]], 10, 10) == []
    assert augment.polygon_area([[0, 0], [4, 0], [4, 3]]) == 6.0


def test_plan_oversampling_reaches_uniform_within_the_limit():
    labels = pd.DataFrame({"image_id": [1, 2, 3, 4, 5, 6, 7],
                           "class": ["cat", "cat", "cat", "cat", "cat", "dog", "bird"]})
    plan = augment.plan_oversampling(labels, seed=0, max_factor=3)
    counts = Counter(labels["class"]) + Counter(plan["for_class"])
    assert counts == {"cat": 5, "dog": 3, "bird": 3}  # uniform wants 5 each; at most 3 x 1
    assert plan.groupby("image_id")["copy"].max().to_dict() == {6: 2, 7: 2}


def test_plan_oversampling_target_shares():
    labels = pd.DataFrame({"image_id": [1, 2, 3, 4], "class": ["a", "a", "a", "b"]})
    plan = augment.plan_oversampling(labels, target={"a": 1, "b": 2}, max_factor=10)
    assert Counter(plan["for_class"]) == {"b": 5}  # 3 a : 6 b reaches shares 1 : 2


def test_export_oversampled_copies_stay_in_their_split(tmp_path):
    for k, (split, cls) in enumerate([("train", "cat"), ("train", "cat"), ("train", "cat"),
                                      ("train", "dog"), ("val", "dog")]):
        write_png(tmp_path / "src" / split / cls / f"{k}.png", 16, 12, seed=k)
    con = open_test_catalog(tmp_path)
    ingest(con, tmp_path / "src", fmt="imagefolder", dataset="d", workers=1)
    ds = catalog.find_dataset(con, "d")
    summary = export_dataset(con, ds, tmp_path / "out",
                             ExportOptions(format="coco", oversample=True))
    assert (summary.images, summary.augmented) == (7, 2)
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    derived = manifest[manifest["derived_from"].notna()]
    assert derived[["file", "split", "class", "derived_from"]].values.tolist() == [
        ["images/train/3__aug1.png", "train", "dog", "images/train/3.png"],
        ["images/train/3__aug2.png", "train", "dog", "images/train/3.png"]]
    train = json.loads((tmp_path / "out" / "annotations" / "instances_train.json").read_text())
    assert Counter(a["category_id"] for a in train["annotations"]) == {1: 3, 2: 3}
    assert Image.open(tmp_path / "out" / "images" / "train" / "3__aug1.png").size == (16, 12)


def test_export_oversampled_copies_of_every_split_stay_in_theirs(tmp_path):
    for k, (split, cls) in enumerate([("train", "cat"), ("train", "cat"), ("train", "dog"),
                                      ("val", "cat"), ("val", "cat"), ("val", "bird")]):
        write_png(tmp_path / "src" / split / cls / f"{k}.png", 16, 12, seed=k)
    con = open_test_catalog(tmp_path)
    ingest(con, tmp_path / "src", fmt="imagefolder", dataset="d", workers=1)
    summary = export_dataset(con, catalog.find_dataset(con, "d"), tmp_path / "out", ExportOptions(
        format="yolo", images="copy", oversample=True, oversample_splits=("train", "val")))
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    split_of = dict(zip(manifest["file"], manifest["split"]))
    derived = manifest[manifest["derived_from"].notna()]
    assert summary.augmented == len(derived) == 6  # cat 4; dog and bird 1 -> 4: 3 copies each
    assert sorted(derived["derived_from"]) == ["images/train/2.png"] * 3 + ["images/val/5.png"] * 3
    for row in derived.itertuples():
        assert row.split == split_of[row.derived_from] == row.file.split("/")[1]
        assert (tmp_path / "out" / row.file).exists()


def test_export_oversampled_boxes_follow_their_image(yolo_con, tmp_path):
    con, ds = yolo_con
    config = augment.AugmentConfig(flip=True, crop=False, rotation=0, colour=False)
    summary = export_dataset(con, ds, tmp_path / "out", ExportOptions(
        format="yolo", oversample=True, augment=config, target={"cat": 1, "dog": 2}))
    # train: cat 2, dog 2; shares 1 : 2 want dog 4; a and b each hold a dog (and a cat)
    assert summary.augmented == 2
    text = (tmp_path / "out" / "labels" / "train" / "b__aug1.txt").read_text().splitlines()
    original = YOLO_LABELS["train/b.png"][2].splitlines()
    flipped = ["1 0.750000 0.250000 0.500000 0.500000",
               "0 0.875000 0.125000 0.125000 0.125000 0.500000 0.750000"]
    assert text in (original, flipped)
