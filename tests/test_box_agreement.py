"""core.box_agreement: Hungarian matching by IoU, per-pair scores and alpha, worked by hand."""
import numpy as np
import pandas as pd
import pytest

from core.box_agreement import iou_matrix, match_objects, object_agreement


def _objects(rows):
    return pd.DataFrame(rows, columns=["image_id", "annotator", "class_id", "x", "y", "w", "h"])


# image 1: A draws a cat and a dog, B the cat shifted by one pixel; image 2: same box, other class
OBJECTS = _objects([(1, "A", 0, 0, 0, 10, 10), (1, "A", 1, 20, 20, 10, 10), (1, "B", 0, 1, 0, 10, 10),
                    (2, "A", 0, 0, 0, 10, 10), (2, "B", 1, 0, 0, 10, 10)])


def test_iou_matrix_by_hand():
    iou = iou_matrix(np.array([[0, 0, 10, 10]], float), np.array([[1, 0, 10, 10], [10, 10, 5, 5]], float))
    assert iou.tolist() == [[pytest.approx(90 / 110), 0.0]]


def test_match_objects_prefers_the_optimal_assignment():
    # greedy would give box 0 to the best IoU of the first row and leave box 1 unmatched
    a = _objects([(1, "A", 0, 0, 0, 10, 10), (1, "A", 0, 4, 0, 10, 10)])
    b = _objects([(1, "B", 0, 2, 0, 10, 10), (1, "B", 0, 6, 0, 10, 10)])
    found = match_objects(a, b, iou_threshold=0.5)
    assert sorted((r, c) for r, c, _ in found) == [(0, 0), (1, 1)]


def test_object_agreement_scores_by_hand():
    result = object_agreement(OBJECTS, iou_threshold=0.5, n_classes=2)
    overall = result.pairs[result.pairs["class"] == "all"].iloc[0]
    assert (overall["matched"], overall["only_a"], overall["only_b"]) == (1, 2, 1)
    assert overall["precision"] == 0.5 and overall["recall"] == pytest.approx(1 / 3)
    assert overall["f1"] == pytest.approx(0.4)
    assert overall["mean_iou"] == pytest.approx(90 / 110)
    # units (cat, cat), (dog, absent), (cat, dog): alpha = 1 - (4/6) / (22/30) = 1/11
    assert result.alpha == pytest.approx(1 / 11)


def test_object_agreement_threshold_turns_matches_into_misses():
    strict = object_agreement(OBJECTS, iou_threshold=0.95, n_classes=2)
    overall = strict.pairs[strict.pairs["class"] == "all"].iloc[0]
    assert (overall["matched"], overall["only_a"], overall["only_b"]) == (0, 3, 2)


def test_object_agreement_refuses_bad_threshold():
    with pytest.raises(ValueError, match="iou_threshold"):
        object_agreement(OBJECTS, iou_threshold=0)


def test_agreement_page_scores_two_box_layers(tmp_path, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from core import catalog
    from core.ingest import ingest
    from core.labels import import_labels
    from tests.fixtures import encode, scene

    folder = tmp_path / "cells"
    folder.mkdir()
    for k in (1, 2):
        (folder / f"{k}.png").write_bytes(encode(scene(64, 64, seed=k), "PNG"))
    db = tmp_path / "boxes.duckdb"
    con = catalog.open_catalog(db)
    ingest(con, folder, fmt="imagefolder", dataset="cells", workers=1)
    ds = catalog.find_dataset(con, "cells")
    rows = OBJECTS.assign(path=OBJECTS["image_id"].map(lambda i: f"{i}.png"), kind="box",
                          class_name=OBJECTS["class_id"].map({0: "cat", 1: "dog"}), points=None,
                          normalized=False, label_file="t", location=None)
    import_labels(con, ds.dataset_id, rows.drop(columns=["image_id", "class_id"]),
                  annotator="cells/given", vocabulary=["cat", "dog"], fixed=True)
    con.close()
    monkeypatch.setenv("SIEVE_DB", str(db))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/agreement.py")
    at.session_state["dataset"] = "cells"
    at.run()
    assert not at.exception
    assert at.metric[0].value == f"{1 / 11:.3f}"
