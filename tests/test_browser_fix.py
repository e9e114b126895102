"""The Fix labels canvas in a real browser (headless Debian Chromium through Playwright): on
three BCCD images, draw a box with the mouse in a chosen class and save it, move it and save,
undo, draw a polygon and save; then, with the dashboard stopped, find each act in the catalog
as an event by the user who made it."""
from __future__ import annotations

import json
import shutil
import time

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from core import catalog
from core.drawing import display_scale
from core.ingest import ingest
from tests.browser import chromium_page, running_app, wait_for_app

IMAGES = ["BloodImage_00000", "BloodImage_00001", "BloodImage_00002"]


@pytest.fixture
def bccd_db(shared_data, tmp_path):
    """A catalog with three BCCD images and their boxes (dataset 'bccd')."""
    for stem in IMAGES:
        for folder, ext in (("images", "jpg"), ("annotations", "xml")):
            (tmp_path / "bccd" / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(shared_data / "bccd" / folder / f"{stem}.{ext}",
                        tmp_path / "bccd" / folder / f"{stem}.{ext}")
    con = catalog.open_catalog(tmp_path / "bccd.duckdb")
    ingest(con, tmp_path / "bccd" / "images", fmt="voc", labels=tmp_path / "bccd" / "annotations",
           dataset="bccd")
    con.close()
    return tmp_path / "bccd.duckdb"


def settle(page) -> None:
    """Wait for the reruns a click or a drawing sets off (the canvas sends after 200 ms)."""
    page.wait_for_timeout(400)
    wait_for_app(page)


def press(page, key: str, *, then: str) -> None:
    """Click a page button, then wait for the toast its save leaves (it stays a few seconds)
    and for the reruns to end. The history table is drawn on a canvas, so no text to read."""
    page.locator(f".st-key-{key} button").first.click()
    page.wait_for_function(f"() => document.body.innerText.includes({then!r})", timeout=30_000)
    settle(page)


def drag(page, start: tuple, end: tuple) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=4)
    page.mouse.move(*end, steps=4)
    page.mouse.up()
    settle(page)


SCALE = display_scale(640, 480)  # canvas pixels per BCCD image pixel (fitted to the column)


def canvas_origin(page) -> tuple[float, float]:
    box = page.locator("canvas.upper-canvas").bounding_box()
    return box["x"], box["y"]


def open_when_released(path, *, timeout: float = 30):
    """The catalog, once the stopped dashboard's process has let go of its lock (running_app
    kills a server that is slow to stop without waiting for it to exit)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return catalog.open_catalog(path, read_only=True)
        except catalog.CatalogBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_fix_page_draw_move_undo_polygon_in_chromium(bccd_db):
    with running_app(bccd_db) as url, chromium_page(height=1300) as page:
        page.goto(url)  # the app first: a cold server would run pages/fix.py without its frame
        wait_for_app(page)
        page.get_by_test_id("stSidebarNav").get_by_text("Fix labels").click()
        wait_for_app(page)
        page.get_by_test_id("stSidebar").get_by_label("You are").fill("tester")
        page.keyboard.press("Tab")
        settle(page)
        page.locator("[class*='st-key-fix_class_'] button", has_text="WBC").click()
        settle(page)
        x, y = canvas_origin(page)                       # BCCD's 640x480 at SCALE canvas px / px
        drag(page, (x + 30, y + 30), (x + 130, y + 105))
        press(page, "fix_save", then="1 added.")         # after copying the given boxes

        for attempt in range(2):  # on a busy machine the new canvas may miss the first drag
            settle(page)
            x, y = canvas_origin(page)                   # a new canvas: the saved state
            page.mouse.move(x + 300, y + 200)            # its toolbar shows on hover
            page.get_by_role("button", name="Edit", exact=True).click()
            drag(page, (x + 80, y + 70), (x + 140, y + 100))  # move the new box by (60, 30)
            try:
                press(page, "fix_save", then="Saved (save): 1 moved.")
                break
            except PlaywrightTimeout:
                if attempt:
                    raise

        press(page, "fix_undo", then="Saved (undo): 1 restored.")

        page.get_by_text("Polygon", exact=True).click()
        settle(page)
        x, y = canvas_origin(page)
        for px, py in [(300, 300), (390, 310), (370, 390), (310, 380), (300, 300)]:
            page.mouse.click(x + px, y + py)             # the last click closes it
            page.wait_for_timeout(150)
        settle(page)
        press(page, "fix_save", then="Saved (save): 1 added.")

    con = open_when_released(bccd_db)
    rows = con.execute("""SELECT e.event_id, e.object_id, e.kind, e.op, c.name, e.x, e.y, e.w, e.h,
            e.points, e.source, e.replaces, x.kind
        FROM label_events e JOIN annotators a USING (annotator_id)
        JOIN classes c USING (dataset_id, class_id)
        JOIN edit_actions x ON list_contains(x.event_ids, e.event_id)
        WHERE (a.name = 'tester' AND e.replaces IS NULL) OR e.object_id IN (SELECT object_id
            FROM label_events WHERE replaces IS NULL AND kind = 'box' AND annotator_id =
            (SELECT annotator_id FROM annotators WHERE name = 'tester'))
        ORDER BY e.event_id""").fetchall()
    con.close()
    added, moved, undone, polygon = rows
    assert added[2:5] == ("box", "set", "WBC") and (added[10], added[12]) == ("edit", "save")
    assert added[5:9] == pytest.approx([v / SCALE for v in (30, 30, 100, 75)], abs=1.2)
    assert (moved[1], moved[11], moved[12]) == (added[1], added[0], "save")  # same object
    assert (moved[5] - added[5], moved[6] - added[6]) == pytest.approx((60 / SCALE, 30 / SCALE),
                                                                       abs=1.2)
    assert (undone[1], undone[11], undone[12]) == (added[1], moved[0], "undo")
    assert undone[5:9] == pytest.approx(added[5:9])
    assert polygon[2:5] == ("polygon", "set", "WBC")
    points = [v for point in json.loads(polygon[9]) for v in point]  # where it was clicked
    assert points == pytest.approx([v / SCALE for v in (300, 300, 390, 310, 370, 390, 310, 380)],
                                   abs=1.2)
