"""Review queues (core.queues): which images a queue holds in what order, its text key, and
where each reviewer stands, kept in the catalog across reloads."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import catalog, edits, queues
from core.drawing import Shape
from tests.test_edits import CLASSES, build_cells, build_pets, image_id, view


@pytest.fixture
def con(tmp_path):
    con = build_cells(tmp_path)
    build_pets(con, tmp_path)
    yield con
    con.close()


def ids(con, spec) -> list[int]:
    return queues.queue_images(con, spec)["image_id"].tolist()


@pytest.mark.parametrize("spec, key", [
    (queues.QueueSpec(1), "1/all"),
    (queues.QueueSpec(2, split="train", class_id=1), "2/all?split=train&class_id=1"),
    (queues.QueueSpec(1, annotator="cells/given", source="import"),
     "1/all?annotator=cells%2Fgiven&source=import"),
    (queues.QueueSpec(3, "stored", 7), "3/stored/7"),
    (queues.QueueSpec(1, "flagged"), "1/flagged"),
    (queues.QueueSpec(1, "model"), "1/model")])
def test_queue_spec_key_round_trips(spec, key):
    assert spec.key == key
    assert queues.parse_queue_key(key) == spec


@pytest.mark.parametrize("key", ["", "x/all", "1/nope", "1/stored", "1/all?colour=red",
                                 "1/flagged?split=a", "1/all/2"])
def test_parse_queue_key_refuses_what_is_not_a_queue(key):
    with pytest.raises(ValueError, match="not a queue"):
        queues.parse_queue_key(key)


def test_queue_images_all_with_filters(con):
    cells, pets = (catalog.find_dataset(con, n).dataset_id for n in ("cells", "pets"))
    a, b, c = (image_id(con, p) for p in ("a.png", "b.png", "c.png"))
    assert ids(con, queues.QueueSpec(cells)) == [a, b, c]
    assert ids(con, queues.QueueSpec(cells, class_id=CLASSES["WBC"])) == [a]
    v = view(con, "c.png")
    edits.save_changes(con, v, edits.plan_shape_edits(v, [Shape("box", "RBC", 1, 1, 9, 9)],
                                                      class_ids=CLASSES), based_on=v.based_on)
    assert ids(con, queues.QueueSpec(cells, annotator="alice")) == [c]
    assert ids(con, queues.QueueSpec(cells, source="edit")) == [c]
    assert ids(con, queues.QueueSpec(cells, source="import")) == [a, b]
    cat = catalog.class_table(con, pets).set_index("name").loc["cat", "class_id"]
    assert ids(con, queues.QueueSpec(pets, class_id=int(cat))) == [image_id(con, "cat/0.png"),
                                                                     image_id(con, "cat/1.png")]


def test_overview_grid_filters_and_captions_boxes_like_the_queue(con):
    """The Overview's grid (image_page, count_images) takes an image of a class by its resolved
    class or its boxes, as the Fix page's queue does, and captions boxed images by their boxes."""
    cells, pets = (catalog.find_dataset(con, n).dataset_id for n in ("cells", "pets"))
    for dataset_id, class_id in ((cells, CLASSES["RBC"]), (cells, CLASSES["WBC"]), (pets, 0)):
        page = catalog.image_page(con, dataset_id, offset=0, limit=10, class_id=class_id)
        assert page["image_id"].tolist() == ids(con, queues.QueueSpec(dataset_id, class_id=class_id))
        assert catalog.count_images(con, dataset_id, class_id=class_id) == len(page)
    page = catalog.image_page(con, cells, offset=0, limit=10).set_index("path")
    assert page["objects"].fillna("").to_dict() == {"a.png": "RBC 1, WBC 1", "b.png": "RBC 1",
                                                   "c.png": ""}
    assert page["class"].isna().all()
    pet_page = catalog.image_page(con, pets, offset=0, limit=10)
    assert pet_page["class"].tolist() == ["cat", "cat", "dog"]
    assert pet_page["objects"].isna().all()


def _model_label(con, path: str, score: float) -> None:
    annotator_id = catalog.get_or_create_annotators(con, ["net-v1"], kind="model")["net-v1"]
    row = {column: None for column in catalog.EVENT_COLUMNS}
    row.update(dataset_id=2, image_id=image_id(con, path), annotator_id=annotator_id, kind="class",
               op="set", class_id=0, source="model", score=score, created_at=catalog.now())
    catalog.append_label_events(con, pd.DataFrame([row]))


def test_queue_images_model_labels_least_confident_first(con):
    _model_label(con, "cat/0.png", 0.9)
    _model_label(con, "dog/0.png", 0.25)
    frame = queues.queue_images(con, queues.QueueSpec(2, "model"))
    assert frame.values.tolist() == [[image_id(con, "dog/0.png"), "model score 0.250 (cat)"],
                                     [image_id(con, "cat/0.png"), "model score 0.900 (cat)"]]


def test_queue_images_flagged_annotations(tmp_path):
    from core.ingest import ingest
    from tests.fixtures import voc_xml, write_png

    write_png(tmp_path / "src" / "one.png", 40, 30)
    (tmp_path / "src" / "one.xml").write_text(voc_xml("one.png", [("cat", -5, 10, 20, 40)]))
    con = catalog.open_catalog(tmp_path / "flags.duckdb")
    ingest(con, tmp_path / "src", fmt="voc", dataset="d")
    assert queues.queue_images(con, queues.QueueSpec(1, "flagged")).values.tolist() == [
        [1, "clipped to the image (was -5, 10, 25, 30)"]]
    assert [title for title, _ in queues.queue_choices(con, 1)] == ["All images",
                                                                    "Flagged annotations"]
    con.close()


def test_queue_choices_offer_stored_queues_in_their_order(con):
    a, c = image_id(con, "a.png"), image_id(con, "c.png")
    queue_id = catalog.create_queue(con, 1, "disagreements", "disagreement",
                                    pd.DataFrame({"image_id": [c, a], "reason": ["votes: 2-1", "x"]}),
                                    created_by="lead")
    choices = queues.queue_choices(con, 1)
    assert [spec for _, spec in choices] == [queues.QueueSpec(1), queues.QueueSpec(1, "stored", queue_id)]
    assert choices[1][0].startswith("disagreements (2 images, by lead, ")
    frame = queues.queue_images(con, queues.QueueSpec(1, "stored", queue_id))
    assert frame.values.tolist() == [[c, "votes: 2-1"], [a, "x"]]


@pytest.mark.parametrize("image, position, expected", [
    (12, 0, 1), (99, 1, 1), (None, 7, 2), (None, -3, 0)])
def test_locate_prefers_the_image_then_the_position(image, position, expected):
    assert queues.locate(np.array([11, 12, 13]), image_id=image, position=position) == expected


def test_positions_survive_a_reload(con, tmp_path):
    spec = queues.QueueSpec(1, split="train")
    assert queues.load_position(con, "alice", spec) == (0, None)
    queues.save_position(con, "alice", spec, 2, 3)
    queues.save_position(con, "alice", spec, 1, 2)
    queues.save_position(con, "bob", spec, 0, 1)
    con.close()
    reopened = catalog.open_catalog(tmp_path / "catalog.duckdb")
    assert queues.load_position(reopened, "alice", spec) == (1, 2)
    assert queues.load_position(reopened, "alice", queues.QueueSpec(1)) == (0, None)
    reopened.close()


def test_duplicate_group_items_keep_clusters_together_and_whole():
    groups = pd.DataFrame({"group": [0, 1, 2], "size": [3, 2, 2],
                           "image_ids": [[5, 6, 7], [1, 2], [8, 9]],
                           "splits": [["test", "train"], ["train"], ["test"]]})
    items = queues.duplicate_group_items(groups)
    assert items["image_id"].tolist() == [5, 6, 7, 1, 2, 8, 9]
    assert items["reason"].iloc[0] == "cluster 1 of 3: 3 images (test, train)"
    assert items["reason"].iloc[-1] == "cluster 3 of 3: 2 images (test)"
    # a limit keeps whole clusters, cutting only a first cluster larger than the limit
    assert queues.duplicate_group_items(groups, limit=6)["image_id"].tolist() == [5, 6, 7, 1, 2]
    assert queues.duplicate_group_items(groups, limit=2)["image_id"].tolist() == [5, 6]
    assert queues.duplicate_group_items(groups.head(0)).empty
