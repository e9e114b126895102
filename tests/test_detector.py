"""core.detector and core.autodetect on a tiny made-for-purpose set of coloured rectangles on
noise: a few seconds of training finds them, checkpoints round trip exactly, seeds reproduce,
mAP@0.5 matches hand-worked values and COCOeval, bad input says what is wrong, and a detection
run on a catalog trains on people's boxes only, applies above a threshold and rolls back exactly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core import autodetect, autolabel, catalog
from core import detector as det
from core.box_agreement import iou_matrix
from core.catalog import CatalogError
from core.ingest import ingest
from tests.fixtures import write_broken_images

CLASSES = ("red", "blue")
COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220)}
SIZE = (128, 96)  # files are written at this size and read at half of it (image_size 64)
# Small enough to train in a few seconds on one loaded core.
FAST = dict(image_size=64, crop=64, width=8, neck=16, batch_size=4, steps=60, seconds=600,
            lr=0.01, threads=1)


def rectangles(n: int, *, seed: int) -> tuple[list[Image.Image], pd.DataFrame]:
    """`n` noisy grey images, each with one red or one blue rectangle (alternating), and their
    boxes (image, class, x, y, w, h) in pixels of the SIZE images."""
    rng = np.random.default_rng(seed)
    images, rows = [], []
    for i in range(n):
        pixels = rng.normal(128, 30, (SIZE[1], SIZE[0], 3))
        w, h = (int(v) for v in rng.integers(28, 52, 2))
        x, y = int(rng.integers(0, SIZE[0] - w)), int(rng.integers(0, SIZE[1] - h))
        pixels[y:y + h, x:x + w] = COLOURS[CLASSES[i % 2]]
        images.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
        rows.append((i, i % 2, x, y, w, h))
    return images, pd.DataFrame(rows, columns=det.BOX_COLUMNS)


def _save(images: list[Image.Image], folder: Path, prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{prefix}_{i}.png" for i in range(len(images))]
    for image, path in zip(images, paths):
        image.save(path)
    return paths


def config(**overrides) -> det.DetectorConfig:
    return det.DetectorConfig(**{"classes": CLASSES, **FAST, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(trained detector, test pictures, their true boxes) — files read at half size."""
    folder = tmp_path_factory.mktemp("rectangles")
    train_images, train_boxes = rectangles(8, seed=0)
    test_images, test_boxes = rectangles(6, seed=1)
    train = det.load_pictures(_save(train_images, folder, "train"), size=64)
    test = det.load_pictures(_save(test_images, folder, "test"), size=64)
    return det.train_detector(train, train_boxes, config=config()), test, test_boxes


def test_load_pictures_keeps_the_aspect_ratio(tmp_path):
    [path] = _save(rectangles(1, seed=0)[0], tmp_path, "wide")
    [picture] = det.load_pictures([path], size=64)
    assert picture.pixels.shape == (48, 64, 3) and picture.scale == 0.5


def test_train_detector_finds_every_rectangle(trained):
    model, test, truth = trained
    found = det.detect_boxes(model.model, test)
    for row in truth.itertuples():
        mine = found[(found["image"] == row.image) & (found["class"] == row[2])]
        best = mine.iloc[0]  # best score first
        iou = iou_matrix(best[["x", "y", "w", "h"]].to_numpy(float)[None],
                         np.array([[row.x, row.y, row.w, row.h]], float))[0, 0]
        assert iou > 0.5, (row, best)
    assert model.history and model.history[-1].loss < model.history[0].loss


def test_detect_boxes_are_in_original_pixels_and_ranked(trained):
    model, test, _ = trained
    found = det.detect_boxes(model.model, test)
    assert list(found.columns) == ["image", "class", "score", "x", "y", "w", "h"]
    assert (found["x"] >= 0).all() and (found["x"] + found["w"] <= SIZE[0] + 1e-3).all()
    assert (found["y"] >= 0).all() and (found["y"] + found["h"] <= SIZE[1] + 1e-3).all()
    assert (found["score"] >= model.model.config.min_score).all()
    assert all((g["score"].diff().dropna() <= 0).all() for _, g in found.groupby("image"))


def test_save_and_load_detector_give_identical_proposals(trained, tmp_path):
    model, test, _ = trained
    path = det.save_detector(model.model, tmp_path / "sub" / "det.pt")
    loaded = det.load_detector(path)
    assert loaded.config == model.model.config
    pd.testing.assert_frame_equal(det.detect_boxes(loaded, test), det.detect_boxes(model.model, test))


def test_train_detector_same_seed_same_weights_other_seed_differs():
    images, boxes = rectangles(4, seed=0)
    pictures = [det.Picture(np.asarray(im), 1.0) for im in images]

    def weights(seed):
        cfg = config(steps=3, seed=seed, image_size=128, crop=96)
        return det.train_detector(pictures, boxes, config=cfg).model.state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_train_detector_stops_at_the_time_limit():
    images, boxes = rectangles(2, seed=0)
    pictures = [det.Picture(np.asarray(im), 1.0) for im in images]
    result = det.train_detector(pictures, boxes, config=config(seconds=0.0, steps=1000,
                                                              image_size=128, crop=96))
    assert result.stopped_by_time


def test_train_detector_without_boxes_says_so():
    images, boxes = rectangles(2, seed=0)
    pictures = [det.Picture(np.asarray(im), 1.0) for im in images]
    with pytest.raises(det.DetectorError, match="hold no boxes"):
        det.train_detector(pictures, boxes.iloc[:0], config=config())
    with pytest.raises(det.DetectorError, match="class indices 0..1"):
        det.train_detector(pictures, boxes.assign(**{"class": 5}), config=config())
    with pytest.raises(det.DetectorError, match="multiple of 32"):
        det.DetNet(config(crop=50))


def test_load_pictures_names_unreadable_files(tmp_path):
    broken = write_broken_images(tmp_path)
    with pytest.raises(det.DetectorError, match="could not be read") as err:
        det.load_pictures([broken["zero_bytes.jpg"]])
    assert "zero_bytes.jpg" in str(err.value)


def test_load_detector_missing_or_foreign_file(tmp_path):
    with pytest.raises(det.DetectorError, match="does not exist"):
        det.load_detector(tmp_path / "nothing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(det.DetectorError, match="not a Sieve detector checkpoint"):
        det.load_detector(tmp_path / "other.pt")


def test_train_detector_starts_from_an_earlier_detector(trained, tmp_path):
    model, _, _ = trained
    path = det.save_detector(model.model, tmp_path / "start.pt")
    images, boxes = rectangles(2, seed=0)
    pictures = [det.Picture(np.asarray(im), 1.0) for im in images]
    start = det.DetNet(config(classes=("blue",), image_size=128, crop=96))
    det._start_from(start, path)
    assert torch.equal(start.stages[0][0][0].weight, model.model.stages[0][0][0].weight)
    with pytest.raises(det.DetectorError, match="does not fit"):
        det.train_detector(pictures, boxes, config=config(width=4, steps=1, image_size=128,
                                                          crop=96), weights=path)


# ---------------------------------------------------------------- mAP


def _frame(rows, score: bool = False) -> pd.DataFrame:
    columns = ["image", "class"] + (["score"] if score else []) + ["x", "y", "w", "h"]
    return pd.DataFrame(rows, columns=columns)


def test_mean_average_precision_hand_worked():
    truth = _frame([(0, 0, 0, 0, 10, 10), (0, 0, 20, 20, 10, 10), (1, 1, 0, 0, 10, 10)])
    proposals = _frame([(0, 0, 0.9, 0, 0, 10, 10),  # hit
                        (0, 0, 0.8, 50, 50, 10, 10),  # miss
                        (0, 0, 0.7, 21, 21, 10, 10),  # hit: IoU 81/119 = 0.68
                        (1, 1, 0.6, 0, 0, 10, 4)], score=True)  # IoU 0.4: miss
    result = det.mean_average_precision(truth, proposals, classes=["a", "b", "c"])
    # class a: precision 1 up to recall 0.5 (51 of COCO's 101 points), then 2/3 (50 points)
    expected_a = (51 + 50 * 2 / 3) / 101
    assert result.per_class["ap"].iloc[0] == pytest.approx(expected_a)
    assert result.per_class["ap"].iloc[1] == 0.0
    assert np.isnan(result.per_class["ap"].iloc[2])  # no true boxes: left out of the mean
    assert result.map == pytest.approx(expected_a / 2)
    assert result.per_class["boxes"].tolist() == [2, 1, 0]


def test_mean_average_precision_matches_cocoeval():
    coco = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    rng = np.random.default_rng(3)
    truth = _frame([(i, int(rng.integers(0, 2)), *rng.uniform(0, 80, 2), *rng.uniform(5, 30, 2))
                    for i in range(12) for _ in range(int(rng.integers(0, 5)))])
    jitter = truth.assign(x=truth["x"] + rng.normal(0, 4, len(truth)),
                          y=truth["y"] + rng.normal(0, 4, len(truth)),
                          score=rng.uniform(0, 1, len(truth)))
    noise = _frame([(int(rng.integers(0, 12)), int(rng.integers(0, 2)), rng.uniform(0, 1),
                     *rng.uniform(0, 80, 2), *rng.uniform(5, 30, 2)) for _ in range(30)], score=True)
    proposals = pd.concat([jitter[noise.columns], noise], ignore_index=True)
    ours = det.mean_average_precision(truth, proposals, classes=["a", "b"], images=range(12))
    gt = coco.COCO()
    gt.dataset = {"images": [{"id": i} for i in range(12)],
                  "categories": [{"id": 0}, {"id": 1}],
                  "annotations": [{"id": j + 1, "image_id": int(r.image), "category_id": int(r[2]),
                                   "bbox": [r.x, r.y, r.w, r.h], "area": r.w * r.h, "iscrowd": 0}
                                  for j, r in enumerate(truth.itertuples())]}
    gt.createIndex()
    found = gt.loadRes([{"image_id": int(r.image), "category_id": int(r[2]), "score": r.score,
                         "bbox": [r.x, r.y, r.w, r.h]} for r in proposals.itertuples()])
    evaluation = cocoeval.COCOeval(gt, found, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert ours.map == pytest.approx(evaluation.stats[1], abs=1e-9)


# ---------------------------------------------------------------- on a catalog


def _voc(path: Path, image: str, boxes: pd.DataFrame) -> None:
    objects = "".join(
        f"<object><name>{CLASSES[int(r[2])]}</name><bndbox><xmin>{r.x}</xmin><ymin>{r.y}</ymin>"
        f"<xmax>{r.x + r.w}</xmax><ymax>{r.y + r.h}</ymax></bndbox></object>"
        for r in boxes.itertuples())
    path.write_text(f"<annotation><filename>{image}</filename><size><width>{SIZE[0]}</width>"
                    f"<height>{SIZE[1]}</height><depth>3</depth></size>{objects}</annotation>")


BOXED, UNBOXED = 10, 4


def write_box_dataset(folder: Path) -> None:
    """`images/boxed_<i>.png` with VOC files in `annotations/` (people's boxes) and
    `images/unboxed_<i>.png` without: what a run trains on and what it labels."""
    images, boxes = rectangles(BOXED, seed=0)
    _save(images, folder / "images", "boxed")
    (folder / "annotations").mkdir()
    for i in range(BOXED):
        _voc(folder / "annotations" / f"boxed_{i}.xml", f"boxed_{i}.png", boxes[boxes["image"] == i])
    _save(rectangles(UNBOXED, seed=5)[0], folder / "images", "unboxed")


@pytest.fixture
def world(tmp_path):
    """(connection, dataset) of a fresh catalog holding the rectangles dataset."""
    write_box_dataset(tmp_path / "rects")
    con = catalog.open_catalog(tmp_path / "catalog.duckdb", program="pytest")
    ingest(con, tmp_path / "rects" / "images", fmt="voc", labels=tmp_path / "rects" / "annotations",
           dataset="rects", workers=1)
    yield con, catalog.find_dataset(con, "rects")
    con.close()


def _add_model_box(con, dataset, path: str) -> None:
    """A box from some earlier model on one unboxed image (must never be trained on)."""
    image_id = int(catalog._one(con.execute("SELECT image_id FROM images WHERE path = ?", [path]))[0])
    class_id = int(catalog.class_table(con, dataset.dataset_id)["class_id"].iloc[0])
    annotator = catalog.get_or_create_annotators(con, ["model/old"], kind="model")["model/old"]
    rows = pd.DataFrame({"image_id": [image_id], "class_id": [class_id], "score": [0.9],
                         "kind": ["box"], "x": [1.0], "y": [1.0], "w": [20.0], "h": [20.0]})
    catalog.append_label_events(con, autolabel._label_events(
        rows, dataset_id=dataset.dataset_id, annotator_id=annotator, run_id=99))


def test_detect_run_trains_on_people_boxes_and_rolls_back_exactly(world):
    con, dataset = world
    _add_model_box(con, dataset, "unboxed_0.png")
    request = autodetect.DetectRequest(images=8, config=tuple(FAST.items()))
    run_id = autodetect.train_detect_run(con, dataset, request, created_by="ann")
    run = catalog.model_run(con, run_id)
    assert run["status"] == "trained" and run["task"] == "detect"
    roles = catalog.run_images(con, run_id).groupby("role")["path"].apply(sorted).to_dict()
    assert len(roles["train"]) == 8 and all(p.startswith("boxed_") for p in roles["train"])
    assert len(roles["holdout"]) == 2
    assert roles["target"] == [f"unboxed_{i}.png" for i in range(UNBOXED)]
    evaluation = autodetect.run_detection_evaluation(con, run_id)
    assert evaluation.images == 2 and 0 <= evaluation.map <= 1
    assert Path(run["weights"]).is_file() and len(catalog.run_epochs(con, run_id)) == 3

    before = con.execute("SELECT * FROM current_labels ORDER BY event_id").df()
    proposals = catalog.run_box_predictions(con, run_id)
    unboxed = catalog.run_images(con, run_id).query("role == 'target'")["image_id"]
    expected = int(((proposals["score"] >= 0.3) & proposals["image_id"].isin(unboxed)).sum())
    result = autolabel.apply_run(con, run_id, threshold=0.3, created_by="ann")
    assert result.labelled == expected > 0
    written = con.execute("SELECT * FROM annotator_labels WHERE model_run_id = ?", [run_id]).df()
    assert (written["kind"] == "box").all() and (written["source"] == "model").all()
    assert (written["annotator"] == f"model/run-{run_id}").all() and (written["score"] >= 0.3).all()
    assert set(written["image_id"]) <= set(unboxed)
    if result.queued:
        assert len(catalog.queue_items(con, result.queue_id)) == result.queued
    with pytest.raises(CatalogError, match="already applied"):
        autolabel.apply_run(con, run_id, threshold=0.5)

    assert autolabel.rollback_run(con, run_id, by="ann") == expected
    after = con.execute("SELECT * FROM current_labels ORDER BY event_id").df()
    pd.testing.assert_frame_equal(after, before)
    deletes = con.execute("SELECT kind, x FROM label_events WHERE op = 'delete'").df()
    assert (deletes["kind"] == "box").all() and deletes["x"].notna().all()


def test_review_items_queue_unsure_images_most_unsure_first():
    proposals = pd.DataFrame({"image_id": [1, 1, 2, 4, 4, 4], "output": [0, 1, 0, 1, 1, 0],
                              "score": [0.9, 0.3, 0.9, 0.4, 0.3, 0.26]})
    queue = autodetect._review_items(proposals, [1, 2, 3, 4], threshold=0.5,
                                     names=["red", "blue"])
    assert queue["image_id"].tolist() == [4, 1, 3]  # 3 unsure boxes, 1 unsure box, none sure
    assert queue["reason"].tolist() == [
        "model: 3 box(es) scored 0.25–0.50, best blue 0.40",
        "model: 1 box(es) scored 0.25–0.50, best blue 0.30",
        "model: no box scored 0.50 or more"]


def test_detect_run_never_trains_on_model_boxes(world):
    con, dataset = world
    _add_model_box(con, dataset, "unboxed_0.png")
    selection = autodetect.choose_boxed_images(con, dataset, autodetect.DetectRequest())
    chosen = pd.concat([selection.train, selection.holdout])
    assert len(chosen) == BOXED and chosen["path"].str.startswith("boxed_").all()


def test_detect_run_bad_requests_say_why(world):
    con, dataset = world
    with pytest.raises(CatalogError, match="people boxed no images in split 'nowhere'"):
        autodetect.train_detect_run(con, dataset, autodetect.DetectRequest(split="nowhere"))
    with pytest.raises(CatalogError, match="50 training images asked for"):
        autodetect.train_detect_run(con, dataset, autodetect.DetectRequest(images=50))
    with pytest.raises(CatalogError, match="unknown class 'green'"):
        autodetect.train_detect_run(con, dataset, autodetect.DetectRequest(classes=("green",)))


def test_detect_run_on_bccd_plumbing(shared_data):
    """A few seconds on five real BCCD images: proposals inside the 640 x 480 frame, and an
    evaluation over the three classes (accuracy is the benchmark's business)."""
    from core.formats import voc

    root = shared_data / "bccd"
    stems = (root / "splits" / "train.txt").read_text().split()[:7]
    labels = voc.read(root / "images", root / "annotations").labels
    names = ["RBC", "WBC", "Platelets"]
    pictures = det.load_pictures([root / "images" / f"{s}.jpg" for s in stems], size=128)
    index = {f"{s}.jpg": i for i, s in enumerate(stems)}
    mine = labels[labels["path"].isin(index)]
    boxes = pd.DataFrame({"image": mine["path"].map(index), "class": mine["class_name"].map(names.index),
                          "x": mine["x"], "y": mine["y"], "w": mine["w"], "h": mine["h"]})
    cfg = det.DetectorConfig(classes=tuple(names), image_size=128, crop=96, width=8, neck=16,
                             steps=10, threads=1)
    model = det.train_detector(pictures[:5], boxes[boxes["image"] < 5], config=cfg).model
    found = det.detect_boxes(model, pictures[5:])
    assert set(found["image"]) <= {0, 1} and found["class"].isin([0, 1, 2]).all()
    assert (found["x"] + found["w"] <= 640 + 1e-3).all() and (found["y"] + found["h"] <= 480 + 1e-3).all()
    truth = boxes[boxes["image"] >= 5].assign(image=lambda f: f["image"] - 5)
    result = det.mean_average_precision(truth, found, classes=names, images=[0, 1])
    assert result.per_class["boxes"].sum() == len(truth)


def test_cli_train_detect_then_autolabel_and_rollback(tmp_path, capsys):
    import json

    from core.__main__ import main

    write_box_dataset(tmp_path / "rects")
    path = str(tmp_path / "catalog.duckdb")
    con = catalog.open_catalog(path, program="pytest")
    ingest(con, tmp_path / "rects" / "images", fmt="voc", labels=tmp_path / "rects" / "annotations",
           dataset="rects", workers=1)
    con.close()
    assert main(["train", "--db", path, "--task", "detect", "--images", "7", "--seconds", "2",
                 "--image-size", "64", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["task"] == "detect" and run["status"] == "trained"
    assert run["evaluation"]["images"] == 3
    assert list(run["evaluation"]["ap50_per_class"]) == ["blue", "red"]  # the catalog's order
    assert main(["autolabel", "--db", path, "--run", str(run["run_id"]), "--threshold", "0.05",
                 "--json"]) == 0
    labelled = json.loads(capsys.readouterr().out)["labelled"]
    assert main(["autolabel", "--db", path, "--rollback", str(run["run_id"])]) == 0
    assert f"{labelled} model labels removed" in capsys.readouterr().out
