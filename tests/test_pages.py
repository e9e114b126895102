"""Pages render without exception on the demo catalog and show the right counts (AppTest)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import catalog, jobs
from core.demo import build_demo

APP = str(Path(__file__).resolve().parent.parent / "app.py")
MAKE_DB = os.environ.get("SIEVE_DB")  # the demo `make test` built, read before any test runs


@pytest.fixture(scope="session")
def demo_catalog(tmp_path_factory) -> tuple[str, str]:
    """(path, kind) of a demo catalog: the one `make` built (SIEVE_DB) or a fresh one."""
    existing = MAKE_DB
    if existing and Path(existing).exists():
        con = catalog.open_catalog(existing, read_only=True)
        kind = catalog.get_meta(con, "demo")
        con.close()
        if kind:
            return existing, kind
    path = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    return str(path), build_demo(path)["demo"]


def _app(db: str, page: str | None = None, dataset: str | None = None) -> AppTest:
    os.environ["SIEVE_DB"] = db
    at = AppTest.from_file(APP, default_timeout=120)
    if dataset:
        at.session_state["dataset"] = dataset
    at.run()
    if page:
        at.switch_page(page)
        if dataset:
            at.session_state["dataset"] = dataset
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _metrics(at: AppTest) -> dict:
    return {m.label: m.value for m in at.metric}


def test_overview_shows_demo_counts(demo_catalog):
    db, kind = demo_catalog
    if kind == "shared":
        metrics = _metrics(_app(db, dataset="cifar10"))
        assert metrics["Images"] == "60,000" and metrics["Classes"] == "10"
        assert metrics["Unreadable"] == "0" and metrics["Annotators"] == "996"
        assert "CIFAR-10 and BCCD" in _app(db).sidebar.info[0].value
    else:
        metrics = _metrics(_app(db, dataset="mnist"))
        assert metrics["Images"] == "5,000" and metrics["Classes"] == "10"
        assert "MNIST" in _app(db).sidebar.info[0].value


def test_audit_lists_the_demo_ingests(demo_catalog):
    """The demo records its ingests as jobs, as the command line does: the audit log has them."""
    from core import audit

    db, kind = demo_catalog
    with catalog.open_catalog(db) as con:  # shared with the pages' connection, when they have one
        page = audit.audit_page(con, audit.AuditFilter(kinds=("ingest",)))
    assert set(page.frame["action"]) == {"ingest (done)"}
    expected = {"cifar10": 2, "bccd": 1} if kind == "shared" else {"mnist": 1}
    assert page.frame["dataset"].value_counts().to_dict() == expected


def test_balance_shows_bccd_boxes(demo_catalog):
    db, kind = demo_catalog
    if kind != "shared":
        pytest.skip("BCCD is part of the demo only when the shared datasets are present")
    metrics = _metrics(_app(db, "pages/balance.py", dataset="bccd"))
    assert metrics["Classes"] == "3"
    assert metrics["Imbalance (largest / smallest)"] == f"{4155 / 361:.2f}"


def test_balance_cifar_is_uniform(demo_catalog):
    db, kind = demo_catalog
    dataset = "cifar10" if kind == "shared" else "mnist"
    metrics = _metrics(_app(db, "pages/balance.py", dataset=dataset))
    assert metrics["Classes"] == "10"
    if kind == "shared":
        assert metrics["Imbalance (largest / smallest)"] == "1.00"
        assert metrics["Effective number of classes"] == "10.00"


def _tiny_folder(root: Path) -> Path:
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (root / name).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (8 + k, 8), colour).save(root / name / f"{k}.png")
    (root / "red" / "broken.png").write_bytes(b"not a png")
    return root


def ingest_on_overview(at, folder, *, engine: str | None = None, timeout: float = 60) -> int:
    """Submit the Overview's ingest form for `folder` (and `engine`), wait for the job, show
    the page again, check the tiny folder's counts; returns the job id."""
    at.text_input(key="ingest_source").set_value(str(folder))
    if engine:
        at.selectbox(key="ingest_engine").set_value(engine)
    at.button[0].click()
    at.run()
    job_id = at.session_state["my_jobs"][-1]
    jobs.wait(job_id, timeout=timeout)
    at.run()
    assert not at.exception
    metrics = _metrics(at)
    assert metrics["Images"] == "7" and metrics["Unreadable"] == "1" and metrics["Classes"] == "2"
    assert any("Job" in s.value and "added: 7" in s.value for s in at.success)
    return job_id


def test_overview_ingest_runs_as_a_job(tmp_path):
    at = _app(str(tmp_path / "fresh.duckdb"))
    assert "no dataset yet" in at.info[0].value
    ingest_on_overview(at, _tiny_folder(tmp_path / "shapes"))


def test_overview_names_a_missing_folder_at_once(tmp_path):
    at = _app(str(tmp_path / "fresh.duckdb"))
    at.text_input(key="ingest_source").set_value(str(tmp_path / "typo"))
    at.button[0].click()
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"Source {tmp_path / 'typo'} is not a folder."]
    assert "my_jobs" not in at.session_state  # no job was started to fail


def test_overview_refuses_a_second_ingest_while_one_runs(tmp_path):
    """A second click on Start ingest (or another session's) while an ingest job runs gets a
    warning instead of a second job that would write the same rows."""
    import threading

    at = _app(str(tmp_path / "fresh.duckdb"))
    release = threading.Event()
    con = catalog.open_catalog(tmp_path / "fresh.duckdb")  # the app's database, shared
    running = jobs.start_job(con, "ingest", {}, lambda c, p, j: release.wait(60))
    try:
        at.text_input(key="ingest_source").set_value(str(_tiny_folder(tmp_path / "shapes")))
        at.button[0].click()
        at.run()
        assert not at.exception
        assert any(f"Ingest job {running} is still running" in w.value for w in at.warning)
        assert "my_jobs" not in at.session_state
    finally:
        release.set()
        jobs.wait(running, timeout=30)
    assert ingest_on_overview(at, tmp_path / "shapes") > running  # once it has ended


def loose_images_catalog(folder: Path, loose: int = 1005) -> Path:
    """A catalog of dataset 'pets': one image in class folder cat/, `loose` beside it."""
    from core.ingest import ingest

    source = folder / "pets"
    (source / "cat").mkdir(parents=True)
    Image.new("RGB", (2, 2)).save(source / "cat" / "in_class.png")
    for k in range(loose):
        Image.new("L", (1, 1), k % 256).save(source / f"loose_{k:04d}.png")
    db = folder / "c.duckdb"
    with catalog.open_catalog(db) as con:
        ingest(con, source, fmt="imagefolder", dataset="pets", workers=1)
    return db


def test_overview_counts_every_problem_and_lists_the_first_thousand(tmp_path):
    """1,005 images lying beside a class folder are each noted; the page counts all of them,
    shows the first 1,000 and offers all as CSV (the command line sends people there)."""
    db = loose_images_catalog(tmp_path)
    with catalog.open_catalog(db, read_only=True) as con:
        dataset_id = catalog.find_dataset(con, "pets").dataset_id
        assert catalog.problem_count(con, dataset_id) == 1005
        every = catalog.problem_table(con, dataset_id, limit=None)
        assert len(every) == 1005 and set(every["action"]) == {"noted"}
    at = _app(str(db), dataset="pets")
    [expander] = [e for e in at.expander if "annotation problems" in e.label]
    assert expander.label == "Unreadable files (0) and annotation problems (1,005)"
    assert any(m.value == "**Annotation problems** (1,005): the first 1,000 shown, all in the CSV"
               for m in at.markdown)


def test_overview_grid_page_follows_a_narrower_filter(tmp_path):
    """On page 21 of all images, choosing a class with one image shows its one page."""
    at = _app(str(loose_images_catalog(tmp_path)), dataset="pets")
    at.number_input(key="grid_page").set_value(21).run()
    assert at.caption[-1].value == "1,006 images; showing 46 from #961"
    at.selectbox(key="grid_class").set_value("cat").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="grid_page").value == 1
    assert at.caption[-1].value == "1 image; showing 1 from #1"


def test_balance_box_charts_use_the_canvas_class_colours(tmp_path):
    """A class has one colour everywhere: the box histograms use the Fix canvas's colours."""
    import json

    from core.ingest import ingest
    from tests.fixtures import voc_xml, write_png
    from ui.canvas import class_colours

    source = tmp_path / "cells"
    for k in range(3):
        write_png(source / f"{k}.png", 40, 30)
        (source / f"{k}.xml").write_text(voc_xml(f"{k}.png", [
            ("WBC", 1, 1, 10 + k, 12), ("RBC", 5, 5, 20, 20 + k), ("RBC", 2, 2, 8, 9)]))
    db = tmp_path / "c.duckdb"
    with catalog.open_catalog(db) as con:
        ingest(con, source, fmt="voc", dataset="cells", workers=1)
        names = catalog.class_table(con, catalog.find_dataset(con, "cells").dataset_id)[
            "name"].tolist()
    at = _app(str(db), "pages/balance.py", dataset="cells")
    [width] = [c for c in at.get("plotly_chart") if "Width (px)" in c.proto.spec]
    traces = json.loads(width.proto.spec)["data"]
    assert {t["name"]: t["marker"]["color"] for t in traces} == class_colours(names)
    assert any(c.value.startswith("Counted per box (9 in all)") for c in at.caption)
    at.radio(key="target_kind").set_value("custom shares").run()  # starts at today's shares
    assert not at.exception, [e.value for e in at.exception]
    weights = at.dataframe[-1].value
    assert weights["weight"].tolist() == [1.0, 1.0]  # exactly: the shares are not rounded


def test_duplicates_page_lists_double_boxes_for_people(tmp_path):
    """The double-click boxes table shows what a person reads (no internal ids); its button
    deletes the second box of the pair."""
    from core.ingest import ingest
    from tests.fixtures import voc_xml, write_png

    source = tmp_path / "cells"
    write_png(source / "a.png", 40, 30)
    (source / "a.xml").write_text(voc_xml("a.png", [("RBC", 2, 2, 20, 20), ("RBC", 2, 2, 20, 21),
                                                    ("WBC", 25, 5, 35, 15)]))
    db = tmp_path / "c.duckdb"
    with catalog.open_catalog(db) as con:
        ingest(con, source, fmt="voc", dataset="cells", workers=1)
    at = _app(str(db), "pages/duplicates.py", dataset="cells")
    [table] = [d.value for d in at.dataframe if "iou" in d.value.columns]
    assert list(table.columns) == ["path", "class", "iou", "x", "y", "w", "h"]
    assert table[["path", "class"]].values.tolist() == [["a.png", "RBC"]]
    at.button(key="dup_fix").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(s.value == "Deleted 1 boxes." for s in at.success)
    at.run()
    [table] = [d.value for d in at.dataframe if "iou" in d.value.columns]
    assert table.empty
    at = _app(str(loose_images_catalog(tmp_path / "classes")), "pages/duplicates.py",
              dataset="pets")  # no box at all: the table is there, empty
    [table] = [d.value for d in at.dataframe if "iou" in d.value.columns]
    assert table.empty


def test_duplicates_page_counts_cifar_pairs(demo_catalog):
    db, kind = demo_catalog
    if kind != "shared":
        pytest.skip("the CIFAR-10 figures need the shared datasets")
    at = _app(db, "pages/duplicates.py", dataset="cifar10")
    at.selectbox(key="dup_method").set_value("phash").run()
    metrics = _metrics(at)
    # phash within 4 on the 60,000 images: `python -m core duplicates --dataset cifar10 --method phash`
    assert metrics["Near-duplicate pairs"] == "401" and metrics["Groups"] == "312"
    assert metrics["Images leaking across splits"] == "103"


def test_duplicates_page_works_from_groups_for_one_huge_cluster(tmp_path):
    from tests.test_duplicates import build_cluster_catalog

    db = build_cluster_catalog(tmp_path / "c.duckdb", tmp_path / "same", train=1500, test=3)
    at = _app(str(db), "pages/duplicates.py", dataset="same")
    assert at.selectbox(key="dup_method").value == "phash"  # until embeddings are computed
    assert not at.exception, [e.value for e in at.exception]
    metrics = _metrics(at)
    assert metrics["Near-duplicate pairs"] == f"{1503 * 1502 // 2:,}" and metrics["Groups"] == "1"
    assert metrics["Images leaking across splits"] == "3"  # the test copies
    assert any("too many to list" in i.value for i in at.info)
    assert at.number_input(key="dup_pair").max == 200 * 199 // 2  # the opened group's first 200


def test_duplicates_page_computes_embeddings_as_a_job(tmp_path):
    from tests.test_duplicates import build_cluster_catalog

    db = build_cluster_catalog(tmp_path / "c.duckdb", tmp_path / "same", train=30, test=2)
    at = _app(str(db), "pages/duplicates.py", dataset="same")
    at.selectbox(key="dup_method").set_value("embedding").run()
    assert any("no embeddings yet" in i.value for i in at.info)  # the method needs a job
    at.button(key="dup_embed").click().run()
    jobs.wait(at.session_state["dup_jobs"][-1], timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = _metrics(at)  # 32 copies of one picture: identical vectors
    assert metrics["Near-duplicate pairs"] == f"{32 * 31 // 2:,}" and metrics["Groups"] == "1"
    assert metrics["Images leaking across splits"] == "2"
    assert at.selectbox(key="dup_method").value == "embedding"  # the default, now computed


def test_duplicates_page_curve_spans_every_distance_to_the_threshold(tmp_path):
    """7 copies of one picture: 21 pairs at distance 0, and so 21 within every distance up to
    the threshold, each with its bar (the bars used to stop at the last distance seen)."""
    import base64
    import json

    import numpy as np

    from tests.test_duplicates import build_cluster_catalog

    db = build_cluster_catalog(tmp_path / "c.duckdb", tmp_path / "same", train=5, test=2)
    at = _app(str(db), "pages/duplicates.py", dataset="same")
    at.selectbox(key="dup_method").set_value("phash").run()
    at.slider(key="dup_distance_phash").set_value(6).run()

    def values(array) -> list:  # plotly sends arrays as {dtype, bdata}: base64 bytes
        if isinstance(array, dict):
            return np.frombuffer(base64.b64decode(array["bdata"]), array["dtype"]).tolist()
        return list(array)

    [curve] = [c for c in at.get("plotly_chart") if "pairs within" in c.proto.spec]
    figure = json.loads(curve.proto.spec)
    bars = figure["data"][0]
    assert values(bars["x"]) == [0, 1, 2, 3, 4, 5, 6]
    assert values(bars["y"]) == [21] * 7
    assert figure["layout"]["xaxis"]["range"] == [-0.5, 6.5]


def test_duplicates_page_sends_groups_to_the_fix_queue(tmp_path):
    from tests.test_duplicates import build_cluster_catalog

    db = build_cluster_catalog(tmp_path / "c.duckdb", tmp_path / "same", train=5, test=2)
    at = _app(str(db), "pages/duplicates.py", dataset="same")
    at.button(key="dup_queue").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("holds 7 images" in s.value for s in at.success)
    with catalog.open_catalog(db) as con:  # the page's own connection to it is shared
        queue = catalog.queue_table(con, catalog.find_dataset(con, "same").dataset_id)
    assert (queue["kind"].tolist(), queue["images"].tolist()) == (["duplicates"], [7])


def test_agreement_page_shows_intervals(demo_catalog):
    db, kind = demo_catalog
    if kind != "shared":
        pytest.skip("the demo has several annotators only with the shared datasets")
    at = _app(db, "pages/agreement.py", dataset="cifar10")
    metrics = _metrics(at)
    # 156,200 labels of CIFAR-10S and CIFAR-10N annotators: `python -m core agreement`
    assert metrics["Krippendorff's alpha"] == "0.686" and metrics["Fleiss' kappa"] == "0.685"
    assert any(c.value.startswith("95% CI [0.68") for c in at.caption)
