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


def _page(db: str) -> AppTest:
    os.environ["SIEVE_DB"] = db
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
    at.button(key="al_apply").click().run()
    assert not at.exception
    assert f"{UNLABELLED} model labels written" in at.success[0].value
    at.button(key="al_rollback").click().run()
    assert f"{UNLABELLED} model labels removed" in at.success[0].value


def test_page_trains_from_the_form_in_the_background(trained_catalog):
    db, run_id = trained_catalog
    at = _page(db)
    at.number_input(key="al_per_class").set_value(3)
    at.slider(key="al_seconds").set_value(10)
    [b for b in at.button if b.label == "Train"][0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    job_id = at.session_state["al_jobs"][-1]
    jobs.wait(job_id, timeout=300)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"Job {job_id} (train): done" in s.value for s in at.success)
    assert len(at.selectbox(key="al_run").options) == 2  # the new run beside the first
