"""The audit log (core.audit): every kind of recorded act with who, when and what; filters by
person, dataset, kind and time; pagination; activity per person. Built on two tiny datasets made
in code (pets: 3 images with given classes; birds: 1 image)."""
from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest

from core import audit, catalog, duplicates, edits, snapshots, users
from core.ingest import ingest
from tests.fixtures import write_png

PETS = ("cat/0.png", "cat/1.png", "dog/0.png")


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    """pets with given labels (3 import events), then: alice relabels cat/0.png (1 label
    event), leo excludes cat/1.png and marks a pair, takes a snapshot, adds an account."""
    folder = tmp_path_factory.mktemp("audit")
    for k, path in enumerate(PETS):
        write_png(folder / "pets" / path, 8, 8, seed=k)
    write_png(folder / "birds" / "owl" / "0.png", 8, 8, seed=7)
    con = catalog.open_catalog(folder / "catalog.duckdb", program="pytest")
    ingest(con, folder / "pets", fmt="imagefolder", dataset="pets", workers=1)
    ingest(con, folder / "birds", fmt="imagefolder", dataset="birds", workers=1)
    pets = catalog.find_dataset(con, "pets")
    ids = dict(con.execute("SELECT path, image_id FROM images WHERE dataset_id = ?",
                           [pets.dataset_id]).fetchall())
    view = edits.load_view(con, ids["cat/0.png"], user="alice")
    plan = edits.plan_class_edit(view, "dog", class_ids={"cat": 0, "dog": 1})
    edits.save_changes(con, view, plan, based_on=view.based_on)
    duplicates.exclude_images(con, pets, [ids["cat/1.png"]], author="leo", reason="blurred")
    duplicates.mark_pairs(con, pets, pd.DataFrame({"image_a": [ids["cat/1.png"]],
                                                   "image_b": [ids["cat/0.png"]], "distance": [2]}),
                          "duplicate", method="phash", author="leo")
    snapshots.create_snapshot(con, pets, "v1", author="leo", note="before review")
    users.add_user(con, "root", "admin", by=None, password="a long password")
    users.add_user(con, "leo", "lead", by="root", password="a long password")
    yield con
    con.close()


def kinds_of(page: audit.AuditPage) -> dict[str, int]:
    return page.frame["kind"].value_counts().to_dict()


def test_audit_page_every_kind_with_who_and_what(con):
    page = audit.audit_page(con, audit.AuditFilter(), user="leo")
    assert page.total == 4 + 1 + 1 + 1 + 1 + 2  # imports, edit, exclude, mark, snapshot, accounts
    assert kinds_of(page) == {"label": 5, "image": 1, "pair": 1, "snapshot": 1, "account": 2}
    rows = {(r.kind, r.who): r for r in page.frame.itertuples()}
    assert rows[("label", "alice")].action == "edit set class"
    assert rows[("label", "alice")].detail == "dog" and rows[("label", "alice")].dataset == "pets"
    assert rows[("image", "leo")].action == "exclude" and rows[("image", "leo")].detail == "blurred"
    assert rows[("pair", "leo")].action == "mark duplicate"
    assert rows[("snapshot", "leo")].target == "v1"
    account = page.frame[page.frame["kind"] == "account"]
    assert set(zip(account["target"], account["action"], account["detail"])) == {
        ("root", "add", "admin"), ("leo", "add", "lead")}
    assert page.frame["created_at"].is_monotonic_decreasing


def test_audit_page_filters_person_dataset_kind_time(con):
    pets = catalog.find_dataset(con, "pets").dataset_id
    by_leo = audit.audit_page(con, audit.AuditFilter(who="leo"), user="leo")
    assert kinds_of(by_leo) == {"image": 1, "pair": 1, "snapshot": 1}
    birds = catalog.find_dataset(con, "birds").dataset_id
    assert audit.audit_page(con, audit.AuditFilter(dataset_id=birds), user="leo").total == 1
    in_pets = audit.audit_page(con, audit.AuditFilter(dataset_id=pets, kinds=("label",)),
                               user="leo")
    assert in_pets.total == 4 and set(in_pets.frame["who"]) == {"pets/given", "alice"}
    later = catalog.now() + timedelta(hours=1)
    assert audit.audit_page(con, audit.AuditFilter(since=later), user="leo").total == 0
    long_ago = audit.AuditFilter(until=datetime(2000, 1, 1))
    assert audit.audit_page(con, long_ago, user="leo").total == 0
    assert audit.audit_page(con, audit.AuditFilter(until=later), user="leo").total == 10


def test_audit_page_paginates(con):
    first = audit.audit_page(con, audit.AuditFilter(), user="leo", page=1, page_size=4)
    last = audit.audit_page(con, audit.AuditFilter(), user="leo", page=3, page_size=4)
    assert (first.pages, len(first.frame), len(last.frame)) == (3, 4, 2)
    beyond = audit.audit_page(con, audit.AuditFilter(), user="leo", page=9, page_size=4)
    assert beyond.page == 3


def test_activity_per_person_day_and_kind(con):
    result = audit.activity(con, audit.AuditFilter(), user="leo")
    today = catalog.now().date()
    per_kind = result.per_kind.set_index("who")
    assert per_kind.loc["leo", "total"] == 3 and per_kind.loc["alice", "label"] == 1
    assert per_kind.loc["root", "account"] == 1  # root added leo
    assert "pets/given" not in per_kind.index  # imports are not people's activity
    assert result.per_day.set_index("who").loc["leo", "acts"] == 3
    assert set(pd.to_datetime(result.per_day["day"]).dt.date) == {today}


def test_audit_needs_a_lead_and_valid_filters(con):
    users.add_user(con, "anna", "annotator", by="root", password="a long password")
    with pytest.raises(users.PermissionDenied, match="needs the lead role"):
        audit.audit_page(con, audit.AuditFilter(), user="anna")
    with pytest.raises(ValueError, match="unknown audit kind"):
        audit.AuditFilter(kinds=("label", "gossip"))
    with pytest.raises(ValueError, match="time range is empty"):
        audit.AuditFilter(since=datetime(2026, 2, 1), until=datetime(2026, 1, 1))


def test_people_persons_first(con):
    names = audit.people(con)
    assert names.index("pets/given") > max(names.index(n) for n in ("alice", "leo", "root"))


def test_audit_page_for_a_signed_in_lead(con, monkeypatch):
    from tests.test_users import open_app, sign_in

    db = catalog._one(con.execute("""SELECT path FROM duckdb_databases()
        WHERE database_name = current_database()"""))[0]
    at = sign_in(open_app(db, monkeypatch), "leo", "a long password")
    at.switch_page("pages/audit.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Audit"
    total = audit.audit_page(con, audit.AuditFilter(), user="leo").total
    assert any(f"**{total}** acts" in m.value for m in at.markdown)
    at.selectbox(key="audit_who").select("leo").run()
    assert at.dataframe[0].value["who"].tolist() == ["leo"] * 3
    at.multiselect(key="audit_kinds").set_value(["snapshot"]).run()
    assert at.dataframe[0].value["target"].tolist() == ["v1"]


def test_audit_lists_ingests_with_who_and_what_they_did(tmp_path):
    """An ingest (a job, from the command line or the Overview page) is an act too: who ran it,
    on which folder, and what it added; a failed one with its error."""
    from core import jobs
    from core.formats import FormatError

    write_png(tmp_path / "pets" / "cat" / "0.png", 8, 8, seed=1)
    write_png(tmp_path / "pets" / "dog" / "0.png", 8, 8, seed=2)
    con = catalog.open_catalog(tmp_path / "c.duckdb")
    users.add_user(con, "root", "admin", by=None, password="a long password")
    users.add_user(con, "leo", "lead", by="root", password="a long password")
    params = {"source": str(tmp_path / "pets"), "user": "leo"}
    jobs.run_job(con, "ingest", params, lambda c, p, j: ingest(
        c, tmp_path / "pets", fmt="imagefolder", user="leo", job_id=j, workers=1))
    with pytest.raises(FormatError):
        jobs.run_job(con, "ingest", {"source": str(tmp_path / "gone"), "user": "leo"},
                     lambda c, p, j: ingest(c, tmp_path / "gone", user="leo", job_id=j))
    page = audit.audit_page(con, audit.AuditFilter(kinds=("ingest",)), user="leo")
    rows = page.frame.sort_values("action")[["who", "dataset", "action", "target", "detail"]]
    rows = rows.astype(object).where(rows.notna(), None)  # the failed one has no dataset
    assert rows.to_dict("records") == [
        {"who": "leo", "dataset": "pets", "action": "ingest (done)",
         "target": str(tmp_path / "pets"),
         "detail": "2 added, 0 changed, 0 unreadable, 2 labels added"},
        {"who": "leo", "dataset": None, "action": "ingest (failed)",
         "target": str(tmp_path / "gone"),
         "detail": f"core.formats.FormatError: source {tmp_path / 'gone'} is not a folder"}]
    con.close()
