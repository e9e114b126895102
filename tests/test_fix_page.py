"""The Fix labels page (AppTest): walking a queue, saving what the canvas holds, refusing bad
shapes, undo, the conflict message, class keys and review. AppTest cannot run the canvas
component, so a test hands it a drawing the way the browser does: as the component's state,
st.session_state[<canvas key>] = {"drawing": {"raw": <Fabric JSON>}}."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import catalog, edits
from core.drawing import Shape, to_drawing
from tests.test_edits import CLASSES, build_cells, build_pets, image_id, shapes, view
from ui.canvas import class_colours

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def db(tmp_path, monkeypatch):
    con = build_cells(tmp_path)
    build_pets(con, tmp_path)
    con.close()
    path = str(tmp_path / "catalog.duckdb")
    monkeypatch.setenv("SIEVE_DB", path)
    return path


def open_fix(dataset: str = "cells", user: str = "alice") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["dataset"] = dataset
    at.session_state["user"] = user
    at.run()
    at.switch_page("pages/fix.py")
    at.session_state["dataset"] = dataset
    at.session_state["user"] = user
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def place(at: AppTest) -> str:
    return next(m.value for m in at.markdown if " of " in m.value)


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def draw(at: AppTest, shapes_: list[Shape]) -> None:
    """Put `shapes_` on the canvas as the browser would send them."""
    state = at.session_state["fix_state"]
    drawing = to_drawing(shapes_, scale=state["scale"], colours=class_colours(list(CLASSES)))
    at.session_state[at.session_state["fix_canvas_key"]] = {"drawing": {"raw": drawing}}


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def test_fix_page_walks_the_queue_and_remembers_the_place(db):
    at = open_fix()
    assert place(at) == "**1 of 3**"
    click(at, "fix_next")
    assert place(at) == "**2 of 3**"
    assert (at.query_params["queue"], at.query_params["image"]) == ("1/all", "2")
    click(at, "fix_prev")
    click(at, "fix_skip")
    click(at, "fix_skip")
    assert place(at) == "**3 of 3**" and at.button(key="fix_next").disabled
    assert place(open_fix()) == "**3 of 3**"           # a new session: from the catalog
    assert place(open_fix(user="bob")) == "**1 of 3**"  # per user


def test_fix_page_saves_the_canvas_drawing_as_the_users_events(db):
    at = open_fix()
    with catalog.open_catalog(db) as con:
        rbc, wbc = shapes(view(con))
    draw(at, [replace(rbc, x=15), wbc, Shape("box", "RBC", 60, 5, 10, 10)])
    click(at, "fix_save")
    assert texts(at.toast) == ["Saved (save): 1 copied, 1 moved, 1 added."]
    with catalog.open_catalog(db) as con:
        v = view(con)
        assert sorted((o.annotator, o.class_name, o.x, o.source) for o in v.working) == [
            ("alice", "RBC", 15, "edit"), ("alice", "RBC", 60, "edit"), ("alice", "WBC", 50, "edit")]
        assert v.actions["kind"].tolist() == ["save"]
    assert any(c.value.startswith("Editing your layer.") for c in at.caption)


def test_fix_page_refuses_bad_shapes_with_messages(db):
    at = open_fix()
    with catalog.open_catalog(db) as con:
        before = len(view(con).events)
        kept = shapes(view(con))
    draw(at, kept + [Shape("box", "RBC", 60, 60, 0, 10), Shape("box", "cta", 5, 5, 10, 10)])
    click(at, "fix_save")
    assert texts(at.warning) == ["box at (60, 60): zero-area box (0 x 10 px): not saved",
                                 "box at (5, 5): unknown class 'cta' (classes: RBC, WBC)"]
    with catalog.open_catalog(db) as con:
        assert len(view(con).events) == before


def test_fix_page_next_with_unsaved_changes_warns_and_stays(db):
    at = open_fix()
    draw(at, [Shape("box", "RBC", 1, 1, 5, 5)])
    click(at, "fix_next")
    assert place(at) == "**1 of 3**"
    assert texts(at.warning) == ["Unsaved changes on this image: Save (Ctrl+Enter), or Skip (S) "
                                 "to drop them."]


def test_fix_page_undo_takes_back_the_last_save(db):
    at = open_fix()
    with catalog.open_catalog(db) as con:
        rbc, wbc = shapes(view(con))
    draw(at, [replace(rbc, x=15), wbc])
    click(at, "fix_save")
    click(at, "fix_undo")
    assert texts(at.toast)[-1] == "Saved (undo): 2 removed."
    with catalog.open_catalog(db) as con:
        v = view(con)
        assert [o.annotator for o in v.working] == ["cells/given", "cells/given"]
        assert v.actions["kind"].tolist() == ["save", "undo"]
    history = next(d.value for d in at.dataframe if "action" in d.value.columns)
    assert history["action"].tolist()[:2] == ["undo #2", "undo #2"]


def test_fix_page_revert_offers_events_in_words_and_goes_back(db):
    at = open_fix()
    with catalog.open_catalog(db) as con:
        rbc, wbc = shapes(view(con))
        imported = [int(e) for e in edits.history_table(view(con))["event_id"]]
    draw(at, [replace(rbc, x=15), wbc])
    click(at, "fix_save")
    revert = at.selectbox(key="fix_revert_to")  # options as shown: number, who, what
    assert all(any(o.startswith(f"#{e} cells/given: ") for o in revert.options)
               for e in imported)
    revert.set_value(max(imported))
    click(at, "fix_revert")
    with catalog.open_catalog(db) as con:
        v = view(con)
        assert v.actions["kind"].tolist() == ["save", "revert"]
        assert sorted((o.x, o.label) for o in shapes(v)) == sorted(
            (o.x, o.label) for o in (rbc, wbc))


def test_fix_page_conflict_message_then_keep_yours(db):
    at = open_fix()
    with catalog.open_catalog(db) as con:  # bob saves the image after alice opened it
        bob = view(con, user="bob")
        rbc, wbc = shapes(bob)
        edits.save_changes(con, bob, edits.plan_shape_edits(bob, [replace(rbc, x=12), wbc],
                                                            class_ids=CLASSES), based_on=bob.based_on)
        changed_at = view(con).events["created_at"].max()
    draw(at, [replace(rbc, x=15), wbc])
    click(at, "fix_save")
    assert texts(at.warning) == [f"This image was changed by bob at {changed_at:%Y-%m-%d %H:%M:%S} "
                                 "UTC: reload, or keep yours."]
    click(at, "fix_keep_mine")
    assert texts(at.warning) == [] and texts(at.toast)[-1] == "Saved (save): 1 copied, 1 moved."
    with catalog.open_catalog(db) as con:
        assert sorted((o.annotator, o.x) for o in view(con).labels if o.class_name == "RBC") == [
            ("alice", 15), ("bob", 12), ("cells/given", 10)]


def test_fix_page_class_keys_label_the_image_and_move_on(db):
    at = open_fix("pets")
    assert at.button(key="fix_class_1").label == "dog" and place(at) == "**1 of 3**"
    click(at, "fix_class_1")
    assert place(at) == "**2 of 3**"
    with catalog.open_catalog(db) as con:
        shown = view(con, "cat/0.png").shown_class
        assert (shown.label.annotator, shown.label.class_name, shown.label.source, shown.how) == (
            "alice", "dog", "edit", "yours")


def test_fix_page_accept_in_review_mode_decides_the_resolved_labels(db):
    at = open_fix()
    at.toggle(key="fix_review").set_value(True).run()
    click(at, "fix_accept")
    assert place(at) == "**2 of 3**"
    with catalog.open_catalog(db) as con:
        rows = con.execute("""SELECT a.name, o.source FROM resolved_objects o
            JOIN annotators a USING (annotator_id) WHERE image_id = ?""",
            [image_id(con, "a.png")]).fetchall()
    assert rows == [("alice", "review"), ("alice", "review")]


def test_fix_page_walks_a_stored_queue_with_its_reasons(db):
    with catalog.open_catalog(db) as con:
        c, a = image_id(con, "c.png"), image_id(con, "a.png")
        catalog.create_queue(con, 1, "disagreements", "disagreement",
                             pd.DataFrame({"image_id": [c, a], "reason": ["votes: RBC 2, WBC 1", "x"]}),
                             created_by="lead")
    at = open_fix()
    title = next(o for o in at.selectbox(key="fix_queue").options if o.startswith("disagreements"))
    at.selectbox(key="fix_queue").set_value(title).run()
    assert place(at) == "**1 of 2** · votes: RBC 2, WBC 1"
    assert (at.query_params["queue"], at.query_params["image"]) == ("1/stored/1", str(c))


def follow_pets_link_from_cells() -> AppTest:
    """A session on dataset cells that follows a link to image 5 of the pets queue."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["dataset"], at.session_state["user"] = "cells", "alice"
    at.run()
    at.switch_page("pages/fix.py")
    at.query_params["queue"], at.query_params["image"] = "2/all", "5"
    at.session_state["dataset"], at.session_state["user"] = "cells", "alice"
    at.run()
    return at


def test_fix_page_link_into_another_dataset_offers_to_open_it(db):
    at = follow_pets_link_from_cells()
    assert texts(at.info) == ["The link you followed is a queue of dataset pets."]
    at.run()  # any rerun (the canvas sends its first value) keeps the offer and the link
    assert texts(at.info) == ["The link you followed is a queue of dataset pets."]
    assert at.query_params["queue"] == "2/all"  # kept while the offer shows
    click(at, "fix_open_linked")
    assert place(at) == "**2 of 3**" and at.query_params["image"] == "5"
    assert at.session_state["dataset"] == "pets"


def test_fix_page_link_offer_can_be_declined(db):
    at = follow_pets_link_from_cells()
    click(at, "fix_stay")
    assert not texts(at.info) and at.session_state["dataset"] == "cells"
    assert at.query_params["queue"] == "1/all"  # the page's own queue from now on


def test_fix_page_new_session_follows_the_link_into_its_dataset(db):
    """A link opened in a new tab, or the page reloaded, lands on the linked image of the
    linked dataset instead of the first dataset."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["user"] = "alice"
    at.query_params["queue"], at.query_params["image"] = "2/all", "5"
    at.run()  # (AppTest opens the default page first)
    at.switch_page("pages/fix.py")
    at.run()
    assert not at.exception and not texts(at.info)  # no offer: already in pets
    assert place(at) == "**2 of 3**"
    assert (at.query_params["queue"], at.query_params["image"]) == ("2/all", "5")


def test_fix_page_filters_the_queue_by_class(db):
    at = open_fix()
    at.selectbox(key="fix_class_id").set_value(CLASSES["WBC"]).run()
    assert place(at) == "**1 of 1**" and at.query_params["queue"] == "1/all?class_id=1"

