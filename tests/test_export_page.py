"""The Export page (AppTest): snapshots, the diff with its images, the augmentation preview, the
export form run as a job with progress and cancel, and the confirmation before overwriting."""
from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import catalog, export, jobs
from core.ingest import ingest
from tests.fixtures import open_test_catalog
from tests.test_export import YOLO_LABELS, write_yolo_source
from tests.test_pages import _app


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    """A catalog with the YOLO fixture dataset 'boxes' (a, b: train; c: val; empty: train)."""
    con = open_test_catalog(tmp_path)
    ingest(con, write_yolo_source(tmp_path / "yolo"), fmt="yolo", dataset="boxes", workers=1)
    con.close()
    path = tmp_path / "catalog.duckdb"
    monkeypatch.setenv("SIEVE_DB", str(path))
    return path


def open_page(db: Path) -> AppTest:
    return _app(str(db), "pages/export.py")


def add_box(db: Path, *, path: str, annotator: str, class_id: int) -> None:
    """alice (or another person) draws one more box on `path`, as the Fix page would."""
    con = catalog.open_catalog(db)
    ds = catalog.find_dataset(con, "boxes")
    image_id = catalog._one(con.execute("SELECT image_id FROM images WHERE path = ?", [path]))[0]
    who = catalog.get_or_create_annotators(con, [annotator], kind="human")[annotator]
    catalog.append_label_events(con, pd.DataFrame([{
        "event_id": None, "object_id": None, "dataset_id": ds.dataset_id, "image_id": image_id,
        "annotator_id": who, "kind": "box", "op": "set", "class_id": class_id, "x": 2.0,
        "y": 2.0, "w": 8.0, "h": 6.0, "points": None, "source": "edit", "model_run_id": None,
        "score": None, "replaces": None, "flag": None, "job_id": None,
        "created_at": catalog.now()}]))
    con.close()


def table_with(at: AppTest, *columns: str) -> pd.DataFrame:
    """The first table on the page that has these columns (AppTest does not expose a
    dataframe's key)."""
    return next(d.value for d in at.dataframe if set(columns) <= set(d.value.columns))


def take_snapshot(at: AppTest, name: str) -> None:
    at.text_input(key="snapshot_name").set_value(name)
    next(b for b in at.button if b.label == "Take snapshot").click()
    at.run()


def submit_export(at: AppTest, out: Path, *, fmt: str = "yolo", snapshot: str = "now",
                  overwrite: bool = False) -> None:
    at.selectbox(key="export_format").set_value(fmt)
    at.selectbox(key="export_snapshot").set_value(snapshot)
    at.text_input(key="export_out").set_value(str(out))
    at.checkbox(key="export_overwrite").set_value(overwrite)
    next(b for b in at.button if b.label == "Export").click()
    at.run()


def finish(at: AppTest) -> int:
    """Wait for the page's newest export job, then redraw; returns its id."""
    job_id = at.session_state["export_jobs"][-1]
    jobs.wait(job_id, timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return job_id


def test_export_page_diff_shows_counts_and_images(db):
    at = open_page(db)
    take_snapshot(at, "v1")
    assert "Snapshot 'v1'" in at.success[0].value
    snapshots = table_with(at, "note")
    assert snapshots["name"].tolist() == ["v1"]
    assert list(snapshots.columns) == ["name", "created_at", "author", "note", "labels"]
    assert [m.value for m in at.metric] == ["0", "0", "0"]  # v1 -> now: nothing yet
    add_box(db, path="images/val/c.png", annotator="alice", class_id=1)
    at.run()
    at.selectbox(key="diff_from").set_value("v1")
    at.selectbox(key="diff_to").set_value("now")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [m.value for m in at.metric] == ["1", "0", "0"]
    assert table_with(at, "class", "added").to_dict("records") == [
        {"class": "dog", "added": 1, "removed": 0, "changed": 0}]
    assert table_with(at, "annotator", "added")["annotator"].tolist() == ["alice"]
    grid = [h.proto.body for h in at.get("html") if "sieve-grid" in h.proto.body]
    assert len(grid) == 1 and grid[0].count("<img") == 1 and "+1 −0 ~0" in grid[0]


def test_export_page_augmentation_preview(db):
    at = open_page(db)
    shown = [image.proto.imgs[0].caption for image in at.get("image")]
    # two sample images with objects, each as the original and three augmented draws
    assert len(shown) == 8 and sum(c.endswith(": original") for c in shown) == 2
    assert sum(": seed " in c for c in shown) == 6
    at.checkbox(key="aug_flip").uncheck()
    at.slider(key="aug_rotation").set_value(30)
    at.number_input(key="aug_seed").set_value(5)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert {c.rpartition(": ")[2] for c in (i.proto.imgs[0].caption for i in at.get("image"))} \
        == {"original", "seed 5", "seed 6", "seed 7"}


def test_export_page_runs_the_export_as_a_job_of_a_snapshot(db, tmp_path):
    at = open_page(db)
    take_snapshot(at, "v1")
    add_box(db, path="images/val/c.png", annotator="alice", class_id=1)
    at.run()
    submit_export(at, tmp_path / "old", snapshot="v1")
    job_id = finish(at)
    assert f"Job {job_id} (export): done" in at.success[-1].value
    assert (tmp_path / "old" / "labels" / "val" / "c.txt").read_text() == \
        YOLO_LABELS["val/c.png"][2]  # as of v1: without alice's box
    assert (tmp_path / "old" / "images" / "val" / "c.png").exists()


def test_export_page_asks_before_overwriting(db, tmp_path):
    at = open_page(db)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    submit_export(at, out)
    assert "is not empty: tick 'Overwrite'" in at.warning[0].value
    assert "export_jobs" not in at.session_state  # no job without confirmation
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    submit_export(at, out, overwrite=True)
    finish(at)
    assert (out / "labels" / "train" / "a.txt").exists() and (out / "data.yaml").exists()
    assert (out / "notes.txt").read_text() == "mine"  # only what an export wrote is replaced


def test_export_page_shows_progress_and_cancel_leaves_no_file(db, tmp_path, monkeypatch):
    reached, release = threading.Event(), threading.Event()
    real = export.place_images

    def held(images, out, *, progress, **options):
        progress(0, len(images), "writing images")
        reached.set()
        release.wait(60)  # the page draws while the job is here
        return real(images, out, progress=progress, **options)

    monkeypatch.setattr(export, "place_images", held)
    at = open_page(db)
    out = tmp_path / "out"
    submit_export(at, out)
    try:
        job_id = at.session_state["export_jobs"][-1]
        assert reached.wait(30)
        at.run()  # as the page's fragment does every second while a job runs
        bars = at.get("progress")
        assert len(bars) == 1 and f"Job {job_id} (export): running" in bars[0].proto.text
        assert "writing images 0/4" in bars[0].proto.text
        next(b for b in at.button if b.label == "Cancel").click()
        at.run()
    finally:
        release.set()
    finish(at)
    assert f"Job {job_id} (export): cancelled" in at.error[-1].value
    assert [p for p in out.rglob("*")] == []  # nothing written under any name
