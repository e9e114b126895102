"""Many people editing the same images at once (core.edits through one shared connection, a
cursor per thread, as the dashboard does): every save either lands or is reported to its editor
as stale, none is lost, and the catalog counts exactly the saves that landed."""
from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from core import catalog, edits
from core.ingest import ingest
from tests.fixtures import write_png

THREADS = 16
EDITS = int(os.environ.get("SIEVE_TEST_EDITS", 200))  # saves tried by each thread
IMAGES = 6               # few images: threads overlap on every one of them
USERS = 4                # threads 0, 4, 8, 12 are user0, ...: a layer edited from four threads
CLASSES = ["cat", "dog", "fox", "owl"]
TIME_LIMIT_S = 600       # a hung thread fails the test instead of blocking the run


@dataclass(frozen=True)
class Saved:
    """One save that landed: its action, image, editor and the class it set."""
    action_id: int
    image_id: int
    user: str
    class_name: str


def build(folder):
    """Dataset 'pets': IMAGES images, all given class 'cat' (folder names)."""
    for k in range(IMAGES):
        write_png(folder / "pets" / "cat" / f"{k}.png", 8, 8, seed=k)
    for name in CLASSES[1:]:  # an empty class folder gives nothing: add the classes by label
        write_png(folder / "pets" / name / "seed.png", 8, 8, seed=99)
    con = catalog.open_catalog(":memory:")  # the same transactions as a file, without fsync
    ingest(con, folder / "pets", fmt="imagefolder", dataset="pets", workers=1)
    return con


def edit_many(cursor, user: str, image_ids: list[int], class_ids: dict, seed: int,
              saved: list, stale: list, start: threading.Barrier) -> None:
    """EDITS times: read an image, set another class in `user`'s layer, save."""
    rng = random.Random(seed)
    start.wait()
    for _ in range(EDITS):
        view = edits.load_view(cursor, rng.choice(image_ids), user=user)
        mine = view.my_class.class_name if view.my_class else None
        name = rng.choice([c for c in CLASSES if c != mine])
        plan = edits.plan_class_edit(view, name, class_ids=class_ids)
        try:
            action_id = edits.save_changes(cursor, view, plan, based_on=view.based_on,
                                           action="class")
        except edits.StaleView as err:
            stale.append(str(err))
            continue
        saved.append(Saved(action_id, view.image_id, user, name))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The catalog after THREADS x EDITS saves: (con, landed saves, stale messages, tries)."""
    con = build(tmp_path_factory.mktemp("concurrency"))
    image_ids = [r[0] for r in con.execute(
        "SELECT image_id FROM images WHERE path LIKE 'cat/%' ORDER BY path").fetchall()]
    class_ids = dict(con.execute("SELECT name, class_id FROM classes").fetchall())
    saved, stale, start = [], [], threading.Barrier(THREADS)
    cursors = [con.cursor() for _ in range(THREADS)]
    threads = [threading.Thread(target=edit_many, args=(
        cursors[k], f"user{k % USERS}", image_ids, class_ids, k, saved, stale, start))
        for k in range(THREADS)]
    for thread in threads:
        thread.daemon = True  # a hung one must not keep the test run from ending
    deadline = time.monotonic() + TIME_LIMIT_S
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    yield con, saved, stale
    con.close()


def test_every_save_lands_or_is_reported_stale(run):
    _, saved, stale = run
    assert len(saved) + len(stale) == THREADS * EDITS  # an exception would have lost a try
    assert saved and stale  # the threads really did collide
    assert all(message.startswith("This image was changed by ") for message in stale)


def test_catalog_counts_exactly_the_saves_that_landed(run):
    con, saved, _ = run
    actions = con.execute("SELECT count(*), count(DISTINCT action_id) FROM edit_actions "
                          "WHERE kind = 'class'").fetchall()[0]
    events = con.execute("SELECT count(*) FROM label_events WHERE source = 'edit'").fetchall()[0][0]
    assert actions == (len(saved), len(saved))
    assert events == len(saved)  # one class event per save
    per_image = Counter(s.image_id for s in saved)
    recorded = dict(con.execute(
        "SELECT image_id, count(*) FROM edit_actions GROUP BY 1").fetchall())
    assert recorded == dict(per_image)


def test_no_lost_update_each_layer_holds_its_last_save(run):
    con, saved, _ = run
    last = {}
    for save in sorted(saved, key=lambda s: s.action_id):
        last[save.image_id, save.user] = save.class_name
    current = {(image_id, user): name for image_id, user, name in con.execute("""
        SELECT l.image_id, l.annotator, c.name FROM annotator_labels l
        JOIN classes c USING (dataset_id, class_id) WHERE l.annotator LIKE 'user%'""").fetchall()}
    assert current == last


def test_no_lost_update_newest_event_is_the_last_save(run):
    con, saved, _ = run
    newest_action = {}
    for save in saved:
        newest_action[save.image_id] = max(newest_action.get(save.image_id, 0), save.action_id)
    for image_id, action_id in newest_action.items():
        events = con.execute("SELECT event_ids FROM edit_actions WHERE action_id = ?",
                             [action_id]).fetchall()[0][0]
        latest = catalog.latest_image_event(con, image_id)
        assert latest[0] == max(events)
    based = con.execute("""SELECT count(*) FROM edit_actions a WHERE based_on <> (
        SELECT coalesce(max(event_id), 0) FROM label_events e
        WHERE e.image_id = a.image_id AND e.event_id < list_min(a.event_ids))""").fetchall()[0][0]
    assert based == 0  # every landed save had seen the newest event before its own
