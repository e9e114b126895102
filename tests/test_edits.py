"""Edits on one image (core.edits): planning what a canvas drawing or a class key changes,
saving it as events in the user's layer, conflicts between concurrent saves, undo, revert and
history. Built on two tiny datasets made in code: `cells` (boxes from VOC files) and `pets`
(whole-image classes from folders)."""
from __future__ import annotations

import threading
from dataclasses import replace

import pandas as pd
import pytest

from core import catalog, edits
from core.drawing import Shape, polygon_shape
from core.ingest import ingest
from tests.fixtures import voc_xml, write_png

CELLS = {"a.png": [("RBC", 10, 10, 30, 30), ("WBC", 50, 20, 90, 60)],
         "b.png": [("RBC", 5, 5, 25, 25)], "c.png": []}
CLASSES = {"RBC": 0, "WBC": 1}


def build_cells(folder):
    """Dataset 'cells': three 100x80 images with given boxes (annotator 'cells/given')."""
    for k, (name, boxes) in enumerate(CELLS.items()):
        write_png(folder / "cells" / name, 100, 80, seed=k)
        (folder / "cells" / name.replace(".png", ".xml")).write_text(voc_xml(name, boxes))
    con = catalog.open_catalog(folder / "catalog.duckdb", program="pytest")
    ingest(con, folder / "cells", fmt="voc", dataset="cells")
    return con


def build_pets(con, folder) -> None:
    """Dataset 'pets': cat/0.png, cat/1.png, dog/0.png, 8x8, given classes 'pets/given'."""
    for path in ("cat/0.png", "cat/1.png", "dog/0.png"):
        write_png(folder / "pets" / path, 8, 8, seed=len(path))
    ingest(con, folder / "pets", fmt="imagefolder", dataset="pets")


@pytest.fixture
def con(tmp_path):
    con = build_cells(tmp_path)
    yield con
    con.close()


def image_id(con, path: str) -> int:
    return con.execute("SELECT image_id FROM images WHERE path = ?", [path]).fetchall()[0][0]


def view(con, path: str = "a.png", user: str = "alice") -> edits.ImageView:
    return edits.load_view(con, image_id(con, path), user=user)


def shapes(v: edits.ImageView) -> list[Shape]:
    return [o.shape() for o in v.working]


def given_events(v: edits.ImageView) -> dict[str, int]:
    return {o.class_name: o.event_id for o in v.working if o.annotator == "cells/given"}


def save(con, v, plan, **how) -> int:
    return edits.save_changes(con, v, plan, based_on=v.based_on, **how)


def current(con, path: str = "a.png") -> list[tuple]:
    """(annotator, kind, class, x, y, w, h, source) of the image's current labels."""
    return [tuple(r) for r in con.execute("""
        SELECT annotator, kind, c.name, x, y, w, h, source FROM annotator_labels l
        JOIN classes c USING (dataset_id, class_id) WHERE image_id = ?
        ORDER BY annotator, event_id""", [image_id(con, path)]).fetchall()]


# ---------------------------------------------------------------- views and resolution


def test_load_view_starts_from_the_given_layer(con):
    v = view(con)
    assert [(o.annotator, o.kind, o.class_name, o.x, o.y, o.w, o.h) for o in v.working] == [
        ("cells/given", "box", "RBC", 10, 10, 20, 20), ("cells/given", "box", "WBC", 50, 20, 40, 40)]
    assert not v.working_is_mine
    assert v.based_on == int(v.events["event_id"].max())
    assert v.shown_class is None and v.others == ()


def _add(con, image: int, annotator: str, kind: str, cls: str, *, source: str = "import",
         score: float | None = None) -> None:
    annotator_id = catalog.get_or_create_annotators(con, [annotator], kind=kind)[annotator]
    dataset_id = con.execute("SELECT dataset_id FROM images WHERE image_id = ?", [image]).fetchall()[0][0]
    class_id = con.execute("SELECT class_id FROM classes WHERE dataset_id = ? AND name = ?",
                           [dataset_id, cls]).fetchall()[0][0]
    row = {column: None for column in catalog.EVENT_COLUMNS}
    row.update(dataset_id=dataset_id, image_id=image, annotator_id=annotator_id, kind="class",
               op="set", class_id=class_id, source=source, score=score, created_at=catalog.now())
    catalog.append_label_events(con, pd.DataFrame([row]))


def test_resolved_class_and_layer_match_the_views(con, tmp_path):
    build_pets(con, tmp_path)
    cat0, cat1, dog0 = (image_id(con, p) for p in ("cat/0.png", "cat/1.png", "dog/0.png"))
    _add(con, cat0, "bob", "human", "dog")          # given beats a person
    _add(con, cat1, "net", "model", "dog", source="model", score=0.3)
    _add(con, cat1, "bob", "human", "dog", source="review")   # a review beats the given label
    _add(con, dog0, "bob", "human", "cat")
    a, b = image_id(con, "a.png"), image_id(con, "b.png")
    for image, votes in ((a, ("WBC", "RBC")), (b, ("RBC", "RBC"))):  # a tie: the earliest
        for who, cls in zip(("bob", "carol"), votes):
            _add(con, image, who, "human", cls)
    catalog.replace_consensus(con, 1, pd.DataFrame({"image_id": [b], "class_id": [1],
                                                    "confidence": [0.9], "n_votes": [2]}),
                              method="test")  # the stored consensus outweighs two votes
    save(con, view(con), edits.EditPlan((edits.Change("added", "box", "set", 0, 1, 1, 5, 5),)),
         source="review")                          # alice's reviewed layer on a.png
    expected = dict((r[0], (r[1], r[2])) for r in con.execute(
        "SELECT image_id, class_id, resolved_by FROM resolved_class").fetchall())
    objects = {}
    for r in con.execute("SELECT image_id, event_id FROM resolved_objects").fetchall():
        objects.setdefault(r[0], set()).add(r[1])
    for image in con.execute("SELECT image_id FROM images").fetchall():
        v = edits.load_view(con, image[0], user="nobody")
        shown = v.shown_class
        assert ((shown.class_id, shown.how) if shown else None) == expected.get(image[0])
        assert {o.event_id for o in edits.resolved_layer(v.labels)} == objects.get(image[0], set())
    assert (expected[cat1], expected[a], expected[b]) == (
        (1, "review"), (1, "consensus"), (1, "consensus")) and len(objects) == 2


# ---------------------------------------------------------------- planning shape edits


def test_plan_shape_edits_unchanged_drawing_plans_nothing(con):
    v = view(con)
    assert edits.plan_shape_edits(v, shapes(v), class_ids=CLASSES) == edits.EditPlan()


def test_plan_shape_edits_first_save_copies_the_given_layer(con):
    v = view(con)
    rbc, wbc = shapes(v)
    plan = edits.plan_shape_edits(v, [replace(rbc, x=15), wbc], class_ids=CLASSES)
    given = given_events(v)
    assert plan.summary == "1 copied, 1 moved" and plan.notes == ()
    assert [(c.what, c.object_id, c.replaces, c.x) for c in plan.changes] == [
        ("copied", None, given["WBC"], 50), ("moved", None, given["RBC"], 15)]


def test_save_changes_appends_events_in_the_users_layer(con):
    v = view(con)
    rbc, wbc = shapes(v)
    action_id = save(con, v, edits.plan_shape_edits(v, [replace(rbc, x=15), wbc], class_ids=CLASSES))
    assert current(con) == [
        ("alice", "box", "WBC", 50, 20, 40, 40, "edit"), ("alice", "box", "RBC", 15, 10, 20, 20, "edit"),
        ("cells/given", "box", "RBC", 10, 10, 20, 20, "import"),
        ("cells/given", "box", "WBC", 50, 20, 40, 40, "import")]
    action = catalog.image_edit_actions(con, v.image_id).iloc[0]
    assert (action.action_id, action.annotator, action.kind, action.summary, action.based_on) == \
        (action_id, "alice", "save", "1 copied, 1 moved", v.based_on)
    after = view(con)
    assert after.working_is_mine and [o.annotator for o in after.working] == ["alice", "alice"]
    assert sorted(int(r) for r in after.events["replaces"].dropna()) == sorted(given_events(v).values())


def test_plan_shape_edits_own_layer_changes_objects_in_place(con):
    v = view(con)
    rbc, wbc = shapes(v)
    save(con, v, edits.plan_shape_edits(v, [replace(rbc, x=15), wbc], class_ids=CLASSES))
    mine = view(con)
    wbc, rbc = shapes(mine)
    plan = edits.plan_shape_edits(mine, [replace(rbc, label="WBC"), replace(wbc, w=30)],
                                  class_ids=CLASSES)
    assert [(c.what, c.object_id, c.replaces) for c in plan.changes] == [
        ("reclassified", mine.working[1].object_id, rbc.ref),
        ("resized", mine.working[0].object_id, wbc.ref)]


def test_plan_shape_edits_delete_from_the_given_layer_is_recorded(con):
    v = view(con)
    rbc, _ = shapes(v)
    plan = edits.plan_shape_edits(v, [rbc], class_ids=CLASSES)
    assert plan.summary == "1 copied, 1 deleted"
    assert (plan.changes[1].op, plan.changes[1].replaces) == ("delete", given_events(v)["WBC"])
    save(con, v, plan)
    assert [o.class_name for o in view(con).working] == ["RBC"]
    assert edits.history_table(view(con))["what"].tolist()[:2] == [
        "deleted box WBC", "copied box RBC (10, 10) 20 x 20 from cells/given"]


BAD_INPUT = [
    (Shape("box", "RBC", 60, 60, 0, 10), "box at (60, 60): zero-area box (0 x 10 px): not saved"),
    (Shape("box", "RBC", 120, 10, 10, 10),
     "box at (120, 10): box (120, 10, 10, 10) lies outside the 100x80 image: not saved"),
    (polygon_shape([[10, 10], [40, 30]], label="RBC"),
     "polygon at (10, 10): polygon with 2 points (at least 3 needed): not saved"),
    (polygon_shape([[10, 10], [20, 20], [30, 30]], label="RBC"),
     "polygon at (10, 10): polygon of zero area: not saved"),
    (Shape("box", "cta", 5, 5, 10, 10), "box at (5, 5): unknown class 'cta' (classes: RBC, WBC)"),
    (Shape("box", None, 5, 5, 10, 10), "box at (5, 5): no class (classes: RBC, WBC)"),
]


@pytest.mark.parametrize("shape, note", BAD_INPUT)
def test_plan_shape_edits_refuses_bad_input_with_a_note(con, shape, note):
    v = view(con)
    plan = edits.plan_shape_edits(v, shapes(v) + [shape], class_ids=CLASSES)
    assert plan == edits.EditPlan(notes=(note,))


def test_plan_shape_edits_refused_edit_keeps_the_stored_object(con):
    v = view(con)
    rbc, wbc = shapes(v)
    plan = edits.plan_shape_edits(v, [replace(rbc, label="cta"), wbc], class_ids=CLASSES)
    assert plan.changes == ()
    assert plan.notes == ("box at (10, 10): unknown class 'cta' (classes: RBC, WBC); the stored "
                          "one is kept",)


def test_plan_shape_edits_clips_a_box_partly_outside(con):
    v = view(con)
    plan = edits.plan_shape_edits(v, shapes(v) + [Shape("box", "wbc", 90, 70, 20, 20)],
                                  class_ids=CLASSES)
    assert plan.notes == ("box at (90, 70): class 'wbc' read as 'WBC'",
                          "box at (90, 70): partly outside the 100x80 image, clipped to (90, 70) 10 x 10")
    added = plan.changes[-1]
    assert (added.what, added.class_id, added.x, added.y, added.w, added.h) == ("added", 1, 90, 70, 10, 10)


def test_save_changes_polygon_keeps_points_and_box(con):
    v = view(con, "c.png")
    polygon = polygon_shape([[10, 10], [40, 12.5], [25, 30]], label="WBC")
    save(con, v, edits.plan_shape_edits(v, [polygon], class_ids=CLASSES))
    (stored,) = view(con, "c.png").working
    assert (stored.kind, stored.points, stored.x, stored.y, stored.w, stored.h) == \
        ("polygon", ((10, 10), (40, 12.5), (25, 30)), 10, 10, 30, 20)


def test_review_save_makes_the_users_layer_the_resolved_one(con):
    v = view(con)
    rbc, wbc = shapes(v)
    save(con, v, edits.plan_shape_edits(v, [replace(rbc, x=15), wbc], class_ids=CLASSES))
    mine = view(con)
    plan = edits.plan_shape_edits(mine, shapes(mine), class_ids=CLASSES, source="review",
                                  accept=True)
    assert plan.summary == "2 confirmed"
    save(con, mine, plan, source="review", action="accept")
    assert con.execute("""SELECT a.name, o.source, o.x FROM resolved_objects o
        JOIN annotators a USING (annotator_id) WHERE image_id = ? ORDER BY o.x""",
        [v.image_id]).fetchall() == [("alice", "review", 15), ("alice", "review", 50)]


# ---------------------------------------------------------------- whole-image classes


def test_plan_class_edit_first_label_replaces_the_resolved_one(con, tmp_path):
    build_pets(con, tmp_path)
    v = view(con, "cat/0.png")
    given = v.shown_class
    assert (given.label.class_name, given.how) == ("cat", "given")
    plan = edits.plan_class_edit(v, "dog", class_ids={"cat": 0, "dog": 1})
    assert [(c.what, c.kind, c.class_id, c.object_id, c.replaces) for c in plan.changes] == [
        ("labelled", "class", 1, None, given.label.event_id)]
    save(con, v, plan, source="review", action="class")
    shown = view(con, "cat/0.png").shown_class
    assert (shown.label.class_name, shown.label.source, shown.how) == ("dog", "review", "yours")
    assert con.execute("SELECT resolved_by FROM resolved_class WHERE image_id = ?",
                       [v.image_id]).fetchall() == [("review",)]


def test_plan_class_edit_same_class_or_unknown_plans_nothing(con, tmp_path):
    build_pets(con, tmp_path)
    v = view(con, "cat/0.png")
    save(con, v, edits.plan_class_edit(v, "dog", class_ids={"cat": 0, "dog": 1}))
    mine = view(con, "cat/0.png")
    assert edits.plan_class_edit(mine, "dog", class_ids={"cat": 0, "dog": 1}) == edits.EditPlan()
    assert edits.plan_class_edit(mine, "cow", class_ids={"cat": 0, "dog": 1}) == \
        edits.EditPlan(notes=("unknown class 'cow' (classes: cat, dog)",))


# ---------------------------------------------------------------- conflicts


def test_save_changes_on_a_stale_view_names_who_and_when(con):
    alice, bob = view(con), view(con, user="bob")
    rbc, wbc = shapes(bob)
    save(con, bob, edits.plan_shape_edits(bob, [replace(rbc, x=12), wbc], class_ids=CLASSES))
    changed_at = view(con).events["created_at"].max()
    plan = edits.plan_shape_edits(alice, [replace(rbc, x=15), wbc], class_ids=CLASSES)
    with pytest.raises(edits.StaleView) as caught:
        save(con, alice, plan)
    assert str(caught.value) == (f"This image was changed by bob at {changed_at:%Y-%m-%d %H:%M:%S}"
                                 " UTC: reload, or keep yours.")
    assert "alice" not in {o[0] for o in current(con)}
    edits.save_changes(con, alice, plan, based_on=caught.value.event_id)  # keep yours
    assert sorted(o[:4] for o in current(con) if o[0] != "cells/given") == [
        ("alice", "box", "RBC", 15), ("alice", "box", "WBC", 50),
        ("bob", "box", "RBC", 12), ("bob", "box", "WBC", 50)]


def test_save_changes_concurrent_saves_let_exactly_one_through(con):
    """Threads with their own cursors save the same image from the same view at once: one
    succeeds, every other gets StaleView, and only the winner's events are appended."""
    for round_ in range(3):
        users = [f"user{round_}.{k}" for k in range(6)]  # fresh people: each starts from the given box
        catalog.get_or_create_annotators(con, users, kind="human")
        base = view(con, "b.png")
        (rbc,) = shapes(base)
        start, results = threading.Barrier(6), []

        def work(k: int) -> None:
            cursor = con.cursor()
            mine = replace(base, user=users[k])
            plan = edits.plan_shape_edits(mine, [replace(rbc, x=rbc.x + k + 1)], class_ids=CLASSES)
            start.wait()
            try:
                results.append(("saved", edits.save_changes(cursor, mine, plan, based_on=base.based_on)))
            except edits.StaleView as err:
                results.append(("stale", str(err)))
            finally:
                cursor.close()

        threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(r[0] for r in results) == ["saved"] + ["stale"] * 5, results
        assert all("reload, or keep yours." in r[1] for r in results if r[0] == "stale")
        assert len(view(con, "b.png").events) == len(base.events) + 1


def test_save_changes_requires_a_user(con):
    v = view(con, user="")
    plan = edits.plan_shape_edits(v, shapes(v)[:1], class_ids=CLASSES)
    with pytest.raises(ValueError, match="no user"):
        save(con, v, plan)


# ---------------------------------------------------------------- undo, revert, history


def test_plan_undo_restores_the_state_before_the_last_action(con):
    v = view(con)
    rbc, wbc = shapes(v)
    save(con, v, edits.plan_shape_edits(v, [replace(rbc, x=15), wbc], class_ids=CLASSES))
    mine = view(con)
    wbc, rbc = shapes(mine)
    second = save(con, mine, edits.plan_shape_edits(mine, [replace(rbc, y=30), wbc], class_ids=CLASSES))
    plan, undone = edits.plan_undo(view(con))
    assert (undone, plan.summary) == (second, "1 restored")
    save(con, view(con), plan, action="undo", undoes=undone)
    assert sorted((o.x, o.y) for o in view(con).working) == [(15, 10), (50, 20)]


def test_plan_undo_walks_back_and_survives_a_reload(con, tmp_path):
    v = view(con)
    rbc, wbc = shapes(v)
    save(con, v, edits.plan_shape_edits(v, [replace(rbc, x=15), wbc], class_ids=CLASSES))
    plan, undone = edits.plan_undo(view(con))
    save(con, view(con), plan, action="undo", undoes=undone)
    assert not view(con).working_is_mine  # the first save undone: the given layer shows again
    assert edits.plan_undo(view(con)) == (
        edits.EditPlan(notes=("nothing of yours to undo on this image",)), None)
    mine = view(con)
    save(con, mine, edits.plan_shape_edits(mine, [wbc], class_ids=CLASSES))
    con.close()
    reopened = catalog.open_catalog(tmp_path / "catalog.duckdb")
    plan, undone = edits.plan_undo(view(reopened))
    save(reopened, view(reopened), plan, action="undo", undoes=undone)
    assert [o.annotator for o in view(reopened).working] == ["cells/given", "cells/given"]
    reopened.close()


def test_plan_revert_goes_back_to_the_state_after_an_event(con):
    v = view(con)
    rbc, wbc = shapes(v)
    save(con, v, edits.plan_shape_edits(v, [replace(rbc, x=15), wbc], class_ids=CLASSES))
    after_first = view(con).based_on
    mine = view(con)
    save(con, mine, edits.plan_shape_edits(mine, shapes(mine)[1:] + [Shape("box", "RBC", 1, 1, 5, 5)],
                                           class_ids=CLASSES))  # delete the WBC copy, add a box
    plan = edits.plan_revert(view(con), after_first)
    assert plan.summary == "1 restored, 1 removed"
    save(con, view(con), plan, action="revert", reverts_to=after_first)
    assert sorted((o.class_name, o.x) for o in view(con).working) == [("RBC", 15), ("WBC", 50)]
    assert edits.plan_revert(view(con), after_first).changes == ()


def test_history_table_says_who_did_what(con):
    v = view(con)
    rbc, wbc = shapes(v)
    save(con, v, edits.plan_shape_edits(v, [replace(rbc, x=15, label="WBC"), wbc], class_ids=CLASSES))
    mine = view(con)
    save(con, mine, edits.plan_shape_edits(mine, shapes(mine)[:1], class_ids=CLASSES))
    history = edits.history_table(view(con))
    assert history[["who", "source", "action", "what"]].values.tolist() == [
        ["alice", "edit", "save #2", "deleted box WBC"],
        ["alice", "edit", "save #1", "box RBC of cells/given: class RBC → WBC; "
                                     "(10, 10) 20 x 20 → (15, 10) 20 x 20"],
        ["alice", "edit", "save #1", "copied box WBC (50, 20) 40 x 40 from cells/given"],
        ["cells/given", "import", "", "added box WBC (50, 20) 40 x 40"],
        ["cells/given", "import", "", "added box RBC (10, 10) 20 x 20"]]
