"""The Auto-label page (AppTest) on the tiny colour catalog: a trained run's evaluation, apply and
roll back from the page, training started from the form as a background job."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import autolabel, catalog, jobs
from core.ingest import ingest
from tests.test_autolabel import FAST, UNLABELLED, write_colour_dataset

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture(scope="module")
def trained_catalog(tmp_path_factory) -> tuple[str, int]:
    """(catalog path, run id) of the colour dataset with one trained run."""
    folder = tmp_path_factory.mktemp("autolabel_page")
    source = folder / "colours"
    source.mkdir()
    write_colour_dataset(source)
    path = folder / "catalog.duckdb"
    con = catalog.open_catalog(path, program="pytest")
    ingest(con, source, fmt="csv", labels=source / "labels.csv", dataset="colours", workers=1)
    dataset = catalog.find_dataset(con, "colours")
    run_id = autolabel.train_run(con, dataset, autolabel.TrainRequest(per_class=4, config=FAST))
    con.close()
    return str(path), run_id


@pytest.fixture(autouse=True)
def _restore_catalog_setting(monkeypatch):
    """Each test points SIEVE_DB at its own catalog; put the setting back afterwards."""
    monkeypatch.setenv("SIEVE_DB", os.environ.get("SIEVE_DB", ""))


def _page(db: str) -> AppTest:
    os.environ["SIEVE_DB"] = db  # restored by _restore_catalog_setting
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/autolabel.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_page_shows_the_run_and_applies_then_rolls_back(trained_catalog):
    db, run_id = trained_catalog
    at = _page(db)
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Held-out accuracy"]) >= 0.9
    assert "Cohen's kappa vs people" in metrics
    at.slider(key="al_threshold").set_value(0.0).run()
    assert any("coverage 100.0%" in c.value for c in at.caption)
    _apply_then_roll_back(at, "al", f"{UNLABELLED} model labels")


def _apply_then_roll_back(at: AppTest, prefix: str, written: str) -> None:
    """Click Apply, then Roll back; `written` (e.g. '6 model labels') is what each reports."""
    at.button(key=f"{prefix}_apply").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"{written} written" in at.success[0].value
    at.button(key=f"{prefix}_rollback").click().run()
    assert f"{written} removed" in at.success[0].value


def test_page_trains_from_the_form_in_the_background(trained_catalog):
    db, run_id = trained_catalog
    at = _page(db)
    at.number_input(key="al_per_class").set_value(3)
    at.slider(key="al_seconds").set_value(10)
    _train_and_wait(at, "Train")


def _train_and_wait(at: AppTest, label: str) -> None:
    """Submit the form with button `label`, wait for its job, and check the new run is listed
    beside the first."""
    [b for b in at.button if b.label == label][0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    job_id = at.session_state["al_jobs"][-1]
    jobs.wait(job_id, timeout=300)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"Job {job_id} (train): done" in s.value for s in at.success)
    assert len(at.selectbox(key="al_run").options) == 2


@pytest.fixture(scope="module")
def detect_catalog(tmp_path_factory) -> tuple[str, int]:
    """(catalog path, run id) of the rectangles dataset (people's boxes) with one detection run."""
    from core import autodetect
    from tests.test_detector import FAST as DETECT_FAST
    from tests.test_detector import write_box_dataset

    folder = tmp_path_factory.mktemp("autodetect_page")
    write_box_dataset(folder / "rects")
    path = folder / "catalog.duckdb"
    con = catalog.open_catalog(path, program="pytest")
    ingest(con, folder / "rects" / "images", fmt="voc", labels=folder / "rects" / "annotations",
           dataset="rects", workers=1)
    dataset = catalog.find_dataset(con, "rects")
    run_id = autodetect.train_detect_run(con, dataset, autodetect.DetectRequest(
        images=8, config=tuple(DETECT_FAST.items())))
    con.close()
    return str(path), run_id


def test_page_shows_a_detection_run_and_applies_then_rolls_back(detect_catalog):
    db, run_id = detect_catalog
    con = catalog.open_catalog(db, read_only=True)
    proposals = catalog.run_box_predictions(con, run_id)
    targets = catalog.run_images(con, run_id).query("role == 'target'")["image_id"]
    expected = int(((proposals["score"] >= 0.3) & proposals["image_id"].isin(targets)).sum())
    con.close()
    at = _page(db)
    metrics = {m.label: m.value for m in at.metric}
    assert "Held-out mAP@0.5" in metrics and float(metrics["Held-out mAP@0.5"]) >= 0
    [table] = [d.value for d in at.dataframe if "AP@0.5" in d.value.columns]
    assert table["class"].tolist() == ["blue", "red"]  # the catalog's class order
    captions = [image.proto.imgs[0].caption for image in at.get("image")]
    assert len(captions) == 4  # proposals drawn on the two held-out images, then two targets
    assert sum("(holdout)" in c for c in captions) == 2 and all("boxes" in c for c in captions)
    at.slider(key="ad_threshold").set_value(0.3).run()
    _apply_then_roll_back(at, "ad", f"{expected} model boxes")


def test_page_trains_a_detector_from_the_form(detect_catalog):
    db, _ = detect_catalog
    at = _page(db)
    at.radio(key="al_task").set_value("detect boxes").run()
    at.number_input(key="ad_images").set_value(6)
    at.slider(key="ad_seconds").set_value(10)
    at.select_slider(key="ad_size").set_value(128)
    _train_and_wait(at, "Train detector")
