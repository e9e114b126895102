"""core.duplicates: exact and near duplicates on a made-for-purpose fixture, leakage, resolution
events and their undo, people's marks, duplicate boxes, the real-data recall, the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import catalog, duplicates
from core.imageprobe import dhash_from_grey9x8, phash_from_grey32, probe_files
from core.ingest import ingest
from tests.fixtures import encode, scene

ROOT = Path(__file__).resolve().parent.parent


def _write_dup_fixture(folder: Path) -> None:
    """original.png and its variants, each named for what it is; unrelated.png is different."""
    folder.mkdir(parents=True)
    original = scene(96, 64, seed=11)
    (folder / "original.png").write_bytes(encode(original, "PNG"))
    (folder / "byte_copy.png").write_bytes((folder / "original.png").read_bytes())
    (folder / "same_pixels.bmp").write_bytes(encode(original, "BMP"))
    (folder / "reencoded.jpg").write_bytes(encode(original, "JPEG", quality=85))
    (folder / "resized.png").write_bytes(encode(original.resize((48, 32), Image.Resampling.LANCZOS), "PNG"))
    (folder / "cropped.png").write_bytes(encode(original.crop((6, 4, 90, 60)), "PNG"))
    (folder / "hflip.png").write_bytes(encode(original.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG"))
    (folder / "unrelated.png").write_bytes(encode(scene(96, 64, seed=99), "PNG"))
    (folder / "broken.png").write_bytes(b"not an image")


@pytest.fixture
def dup_catalog(tmp_path):
    folder = tmp_path / "dups"
    _write_dup_fixture(folder)
    con = catalog.open_catalog(tmp_path / "d.duckdb")
    ingest(con, folder, fmt="imagefolder", dataset="dups", split="train", workers=1)
    yield con, catalog.find_dataset(con, "dups"), tmp_path / "d.duckdb"
    con.close()


def _group_of(report, name):
    for paths in report.groups["paths"]:
        if name in paths:
            return set(paths)
    return {name}


def test_find_duplicates_exact_groups_by_bytes_and_pixels(dup_catalog):
    con, ds, _ = dup_catalog
    report = duplicates.find_duplicates(con, ds, method="phash")
    exact = {kind: set(g["path"]) for kind, g in report.exact.groupby("kind")}
    assert exact["bytes"] == {"original.png", "byte_copy.png"}
    # the BMP has the PNG's pixels (and so has the PNG's byte copy)
    assert exact["pixels"] == {"same_pixels.bmp", "original.png", "byte_copy.png"}


def test_find_duplicates_near_matches_what_phash_can_see(dup_catalog):
    con, ds, _ = dup_catalog
    report = duplicates.find_duplicates(con, ds, method="phash")
    assert report.images == 8  # broken.png is unreadable: no hashes, left out
    group = _group_of(report, "original.png")
    assert {"byte_copy.png", "same_pixels.bmp", "reencoded.jpg", "resized.png"} <= group
    # a horizontal flip changes the DCT signs: phash is not flip-invariant, by design
    assert "hflip.png" not in group and "unrelated.png" not in group


def test_find_duplicates_crop_needs_a_wider_distance(dup_catalog):
    con, ds, _ = dup_catalog
    pairs = duplicates.find_duplicates(con, ds, method="phash", max_distance=64).pairs
    crop = pairs[(pairs["a"] + pairs["b"]).isin(["original.pngcropped.png", "cropped.pngoriginal.png"])]
    assert int(crop["distance"].iloc[0]) > duplicates.DEFAULT_DISTANCE["phash"]


def test_find_duplicates_empty_and_single_image_datasets(tmp_path):
    con = catalog.open_catalog(tmp_path / "e.duckdb")
    (tmp_path / "empty").mkdir()
    ingest(con, tmp_path / "empty", fmt="imagefolder", dataset="empty", workers=1)
    report = duplicates.find_duplicates(con, catalog.find_dataset(con, "empty"))
    assert (report.images, len(report.pairs), len(report.groups), len(report.exact)) == (0, 0, 0, 0)
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.png").write_bytes(encode(scene(8, 8), "PNG"))
    ingest(con, tmp_path / "one", fmt="imagefolder", dataset="one", workers=1)
    report = duplicates.find_duplicates(con, catalog.find_dataset(con, "one"))
    assert (report.images, len(report.pairs)) == (1, 0)


def test_leakage_summary_by_hand():
    pairs = pd.DataFrame({"image_a": [1, 1, 2, 5], "image_b": [10, 11, 10, 6],
                          "split_a": ["test", "test", "test", "train"],
                          "split_b": ["train", "train", "train", "train"]})
    leak = duplicates.leakage_summary(pairs, pd.Series({"test": 4, "train": 20}))
    row = leak.iloc[0]
    assert (row["split_a"], row["split_b"], row["pairs"], row["images_a"], row["images_b"]) == \
        ("test", "train", 3, 2, 2)
    assert row["share_a"] == 0.5


def test_resolve_keep_one_then_undo(dup_catalog):
    con, ds, _ = dup_catalog
    report = duplicates.find_duplicates(con, ds, method="phash")
    ids = dict(zip(catalog.hash_table(con, ds.dataset_id)["path"], catalog.hash_table(con, ds.dataset_id)["image_id"]))
    batch = duplicates.resolve_keep_one(con, ds, ids["original.png"],
                                        [ids["byte_copy.png"], ids["reencoded.jpg"]], author="lead")
    after = duplicates.find_duplicates(con, ds, method="phash")
    assert after.images == report.images - 2
    state = catalog.image_states(con, ds.dataset_id, [ids["byte_copy.png"]]).iloc[0]
    assert state["excluded"] and state["excluded_reason"] == "duplicate of original.png"
    duplicates.undo_resolution(con, ds, batch, author="lead")
    assert duplicates.find_duplicates(con, ds, method="phash").images == report.images


def test_move_group_changes_split_and_undo_restores_it(dup_catalog):
    con, ds, _ = dup_catalog
    table = catalog.hash_table(con, ds.dataset_id)
    ids = table["image_id"].tolist()[:3]
    batch = duplicates.move_group(con, ds, ids, "test", author="lead")
    assert set(catalog.image_states(con, ds.dataset_id, ids)["split"]) == {"test"}
    duplicates.undo_resolution(con, ds, batch, author="lead")
    assert set(catalog.image_states(con, ds.dataset_id, ids)["split"]) == {"train"}


def test_threshold_quality_by_hand():
    pairs = pd.DataFrame({"image_a": [1, 2, 3, 4], "image_b": [9, 8, 7, 6], "distance": [0, 2, 2, 4]})
    marks = pd.DataFrame({"image_a": [1, 2, 4], "image_b": [9, 8, 6],  # stored with a < b
                          "verdict": ["duplicate", "duplicate", "not duplicate"]})
    table = duplicates.threshold_quality(pairs, marks).set_index("threshold")
    assert table.loc[0, "precision"] == 1.0 and table.loc[0, "recall"] == 0.5
    assert table.loc[2, "recall"] == 1.0
    assert table.loc[4, "precision"] == pytest.approx(2 / 3)


def test_threshold_quality_embedding_distances_in_hundredths():
    pairs = pd.DataFrame({"image_a": [1, 2, 3], "image_b": [9, 8, 7], "distance": [0.051, 0.12, 0.1249]})
    marks = pd.DataFrame({"image_a": [1, 2, 3], "image_b": [9, 8, 7],
                          "verdict": ["duplicate", "not duplicate", "duplicate"]})
    table = duplicates.threshold_quality(pairs, marks)
    assert table["threshold"].tolist() == [0.06, 0.12, 0.13]  # each distance rounded up
    assert table["marked"].tolist() == [1, 2, 3]
    assert table["precision"].tolist() == pytest.approx([1, 1 / 2, 2 / 3])


def test_duplicate_annotations_found_and_fixed(tmp_path):
    folder = tmp_path / "cells"
    folder.mkdir()
    (folder / "a.png").write_bytes(encode(scene(100, 100), "PNG"))
    (folder / "a.xml").write_text(
        "<annotation><filename>a.png</filename>"
        "<object><name>RBC</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>50</xmax><ymax>50</ymax></bndbox></object>"
        "<object><name>RBC</name><bndbox><xmin>11</xmin><ymin>10</ymin><xmax>51</xmax><ymax>50</ymax></bndbox></object>"
        "<object><name>WBC</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>50</xmax><ymax>50</ymax></bndbox></object>"
        "</annotation>")
    con = catalog.open_catalog(tmp_path / "c.duckdb")
    ingest(con, folder, fmt="voc", dataset="cells", workers=1)
    ds = catalog.find_dataset(con, "cells")
    doubles = duplicates.duplicate_annotations(con, ds)
    assert len(doubles) == 1 and doubles["class"].iloc[0] == "RBC"
    assert doubles["iou"].iloc[0] == pytest.approx(1560 / 1640)  # 39x40 overlap over the union
    assert duplicates.delete_duplicate_boxes(con, ds, doubles, author="lead") == 1
    assert len(catalog.current_boxes(con, ds.dataset_id)) == 2
    assert duplicates.duplicate_annotations(con, ds).empty


def test_duplicates_cli_json(dup_catalog):
    con, _, db = dup_catalog
    con.close()
    out = subprocess.run([sys.executable, "-m", "core", "duplicates", "--db", str(db), "--json"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    default = duplicates.DEFAULT_METHOD
    assert report["method"] == default and report["threshold"] == duplicates.DEFAULT_DISTANCE[default]
    assert report["images"] == 8 and report["pairs_listed"]
    out = subprocess.run([sys.executable, "-m", "core", "duplicates", "--db", str(db), "--json",
                          "--method", "phash", "--threshold", "6"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["method"] == "phash" and report["threshold"] == 6
    assert {"a", "b", "distance", "split_a", "split_b"} <= set(report["pairs"][0])
    assert any("original.png" in group for group in report["groups"])


def test_duplicates_cli_rejects_a_fractional_hamming_threshold(dup_catalog):
    con, _, db = dup_catalog
    con.close()
    out = subprocess.run([sys.executable, "-m", "core", "duplicates", "--db", str(db),
                          "--method", "dhash", "--threshold", "2.5"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "dhash threshold is a Hamming distance" in out.stderr


def _lossless_hashes(folder: Path) -> np.ndarray:
    greys = []
    for b in range(4):
        rows = np.asarray(Image.open(folder / f"cifar10_batch_{b}.png").convert("RGB"))
        greys.extend(Image.fromarray(r.reshape(32, 32, 3)).convert("L") for r in rows)
    return phash_from_grey32(np.stack([np.asarray(g) for g in greys]))


def test_default_distance_recall_on_cifar_jpeg_lossless_pairs(shared_data):
    """bench/calibrate_duplicates.py reports phash recall 0.9992 (3,997 of 4,000) at distance 4."""
    train = shared_data / "cifar10-train"
    lossless = _lossless_hashes(train / "lossless_convnetjs_train_0_3999")
    jpegs = probe_files([str(train / "images" / f"{k:05d}.jpg") for k in range(4000)], [None] * 4000)
    jpeg = np.array([r.phash for r in jpegs], dtype=np.uint64)
    distance = np.bitwise_count(lossless ^ jpeg)
    assert int((distance <= duplicates.DEFAULT_DISTANCE["phash"]).sum()) == 3997


def test_excluded_images_leave_the_balance_counts(dup_catalog):
    con, ds, _ = dup_catalog
    table = catalog.hash_table(con, ds.dataset_id)
    ids = dict(zip(table["path"], table["image_id"]))
    from core.labels import import_labels
    rows = pd.DataFrame({"path": ["original.png", "byte_copy.png"], "annotator": None,
                         "kind": "class", "class_name": "scene", "x": None, "y": None, "w": None,
                         "h": None, "points": None, "normalized": False, "label_file": "t",
                         "location": None})
    import_labels(con, ds.dataset_id, rows, annotator="dups/given")
    def total():
        return int(catalog.resolved_counts(con, ds.dataset_id)["count"].sum())
    assert total() == 2
    batch = duplicates.resolve_keep_one(con, ds, ids["original.png"], [ids["byte_copy.png"]], author="lead")
    assert total() == 1
    duplicates.undo_resolution(con, ds, batch, author="lead")
    assert total() == 2


# ---------------------------------------------------------------- one huge cluster, embeddings


def build_cluster_catalog(path: Path, folder: Path, *, train: int, test: int) -> Path:
    """A catalog whose images are all one picture: `train` copies in train/, `test` in test/."""
    data = encode(scene(32, 32, seed=5), "PNG")
    for split, count in (("train", train), ("test", test)):
        (folder / split / "scene").mkdir(parents=True)  # split folder, class folder
        for k in range(count):
            (folder / split / "scene" / f"{k:05d}.png").write_bytes(data)
    con = catalog.open_catalog(path)
    ingest(con, folder, fmt="imagefolder", dataset="same", workers=1)
    con.close()
    return path


def test_find_duplicates_huge_cluster_counts_without_listing(tmp_path):
    db = build_cluster_catalog(tmp_path / "c.duckdb", tmp_path / "same", train=500, test=3)
    con = catalog.open_catalog(db)
    ds = catalog.find_dataset(con, "same")
    report = duplicates.find_duplicates(con, ds, method="phash", max_pairs=1000, with_exact=False)
    assert not report.pairs_listed and report.pairs.empty
    assert report.pair_count == 503 * 502 // 2
    assert report.groups["size"].tolist() == [503]
    leak = report.leakage.iloc[0]
    assert (leak["split_a"], leak["split_b"], leak["pairs"], leak["images_a"], leak["images_b"]) == \
        ("test", "train", 1500, 3, 500)
    assert leak["share_a"] == 1.0
    listed = duplicates.find_duplicates(con, ds, method="phash", with_exact=False)
    assert listed.pairs_listed and len(listed.pairs) == report.pair_count
    pd.testing.assert_frame_equal(listed.leakage, report.leakage)  # same counts either way
    pairs = duplicates.pairs_of_group(con, ds, report.groups["image_ids"].iloc[0], method="phash",
                                      max_distance=4, max_members=50)
    assert len(pairs) == 50 * 49 // 2 and (pairs["distance"] == 0).all()
    con.close()


def test_narrow_without_listed_pairs_filters_groups_by_split(tmp_path):
    db = build_cluster_catalog(tmp_path / "c.duckdb", tmp_path / "same", train=30, test=2)
    con = catalog.open_catalog(db)
    report = duplicates.find_duplicates(con, catalog.find_dataset(con, "same"), method="phash",
                                        max_pairs=10, with_exact=False)
    narrowed = duplicates.narrow(report, 4, splits=("train", "test"))
    assert narrowed.pair_count == 60 and len(narrowed.groups) == 1
    with pytest.raises(ValueError, match="search again at distance 2"):
        duplicates.narrow(report, 2)
    con.close()


def test_check_threshold_per_method():
    assert duplicates.check_threshold("phash", None) == 4
    assert duplicates.check_threshold("dhash", 6.0) == 6
    assert duplicates.check_threshold("embedding", 0.25) == 0.25
    with pytest.raises(ValueError, match="whole number in 0..64; got 4.5"):
        duplicates.check_threshold("phash", 4.5)
    with pytest.raises(ValueError, match="1 - cosine similarity, in 0..2; got 3"):
        duplicates.check_threshold("embedding", 3)
    with pytest.raises(ValueError, match="unknown method 'ahash'"):
        duplicates.check_threshold("ahash", None)


def test_find_duplicates_embedding_ranks_the_crop_above_unrelated(dup_catalog):
    con, ds, _ = dup_catalog
    report = duplicates.find_duplicates(con, ds, method="embedding", max_distance=2)
    assert report.method == "embedding" and len(report.pairs) == 8 * 7 // 2
    distance = {frozenset((a, b)): d for a, b, d in report.pairs[["a", "b", "distance"]].itertuples(index=False)}
    assert distance[frozenset(("original.png", "byte_copy.png"))] < 0.01
    crop = distance[frozenset(("original.png", "cropped.png"))]
    assert crop < distance[frozenset(("original.png", "unrelated.png"))]
    assert crop < distance[frozenset(("cropped.png", "unrelated.png"))]
