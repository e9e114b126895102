"""Snapshots (core.snapshots and the *_as_of macros of core.catalog): a named point keeps its
labels, exclusions and consensus while the catalog moves on; diffs count what changed per class
and per annotator; the command line's snapshot and diff."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from core import catalog, snapshots
from core.__main__ import main
from core.export import ExportOptions, export_dataset
from core.ingest import ingest
from tests.fixtures import open_test_catalog, write_png

# a.png, b.png: given labels (the import layer); c.png: alice and bob; d.png: nobody yet
VOTES = "image,label,annotator\na.png,cat,\nb.png,dog,\nc.png,cat,alice\nc.png,dog,bob\n"


@pytest.fixture
def con(tmp_path):
    for k, name in enumerate("abcd"):
        write_png(tmp_path / "src" / f"{name}.png", 40, 30, seed=k)
    (tmp_path / "votes.csv").write_text(VOTES)
    con = open_test_catalog(tmp_path)
    ingest(con, tmp_path / "src", fmt="csv", labels=tmp_path / "votes.csv", dataset="d",
           classes=["cat", "dog"], workers=1)
    yield con
    con.close()


@pytest.fixture
def ds(con):
    return catalog.find_dataset(con, "d")


def ids(con, ds) -> dict:
    """image path → image_id, class name → class_id, annotator name → id, and
    (path, annotator) → object_id of the current class label."""
    images = dict(con.execute("SELECT path, image_id FROM images WHERE dataset_id = ?",
                              [ds.dataset_id]).fetchall())
    classes = dict(con.execute("SELECT name, class_id FROM classes WHERE dataset_id = ?",
                               [ds.dataset_id]).fetchall())
    people = dict(con.execute("SELECT name, annotator_id FROM annotators").fetchall())
    objects = {(p, a): o for p, a, o in con.execute("""SELECT i.path, a.name, l.object_id
        FROM annotator_labels l JOIN images i USING (image_id)
        JOIN annotators a USING (annotator_id) WHERE l.dataset_id = ?""",
        [ds.dataset_id]).fetchall()}
    return {"image": images, "class": classes, "annotator": people, "object": objects}


def append(con, ds, *, path, annotator, class_name=None, object_id=None, op="set", kind="class",
           box=(None, None, None, None), source="edit", kind_of_annotator="human") -> None:
    """Append one label event (an edit, a deletion, a new label) through
    catalog.append_label_events."""
    known = ids(con, ds)
    who = catalog.get_or_create_annotators(con, [annotator], kind=kind_of_annotator)[annotator]
    frame = pd.DataFrame([{
        "event_id": None, "object_id": object_id, "dataset_id": ds.dataset_id,
        "image_id": known["image"][path], "annotator_id": who, "kind": kind, "op": op,
        "class_id": known["class"].get(class_name), "x": box[0], "y": box[1], "w": box[2],
        "h": box[3], "points": None, "source": source, "model_run_id": None, "score": None,
        "replaces": None, "flag": None, "job_id": None, "created_at": catalog.now()}])
    catalog.append_label_events(con, frame.astype({"event_id": "Int64", "object_id": "Int64"}))


def resolved(con, ds, point, *, with_models=False) -> dict:
    """image path → resolved class name at `point`."""
    images = catalog.images_as_of(con, ds.dataset_id, point, with_models=with_models)
    return dict(zip(images["path"], plain(images["class"])))


def plain(values) -> list:
    """Values as Python objects, missing ones as None."""
    return [None if pd.isna(v) else v for v in values]


# ---------------------------------------------------------------- create, find


def test_create_snapshot_records_the_newest_ids(con, ds):
    point = snapshots.create_snapshot(con, ds, "v1", author="lead", note="first")
    events, images = con.execute("""SELECT (SELECT max(event_id) FROM label_events),
        (SELECT max(image_id) FROM images)""").fetchall()[0]
    assert (point.max_event_id, point.max_image_event_id, point.max_image_id) == (events, 0, images)
    table = snapshots.list_snapshots(con, ds)
    assert table[["name", "author", "note", "labels"]].values.tolist() == [
        ["v1", "lead", "first", 4]]


@pytest.mark.parametrize("name, message", [("v1", "already exists"), ("now", "reserved"),
                                           ("  ", "empty")])
def test_create_snapshot_bad_name_raises(con, ds, name, message):
    snapshots.create_snapshot(con, ds, "v1")
    with pytest.raises(catalog.CatalogError, match=message):
        snapshots.create_snapshot(con, ds, name)


def test_resolve_point_unknown_name_lists_snapshots(con, ds):
    snapshots.create_snapshot(con, ds, "v1")
    with pytest.raises(catalog.CatalogError, match=r"no snapshot named 'v9' \(snapshots: v1\)"):
        snapshots.resolve_point(con, ds, "v9")
    assert snapshots.resolve_point(con, ds, None) == catalog.current_point(con)


# ---------------------------------------------------------------- the dataset as of a snapshot


def test_as_of_now_matches_the_live_views(con, ds):
    known = ids(con, ds)
    append(con, ds, path="c.png", annotator="carol", class_name="dog")  # dog 2 : cat 1
    append(con, ds, path="b.png", annotator="lead", class_name="cat", source="review")
    append(con, ds, path="d.png", annotator="net", class_name="cat", source="model",
           kind_of_annotator="model")
    append(con, ds, path="a.png", annotator="d/given", kind="box", class_name="cat",
           box=(1, 2, 3, 4), source="import")
    point = catalog.current_point(con)
    live = dict(con.execute("""SELECT i.path, c.name FROM resolved_class r
        JOIN images i USING (image_id) JOIN classes c ON c.dataset_id = r.dataset_id
        AND c.class_id = r.class_id WHERE r.dataset_id = ?""", [ds.dataset_id]).fetchall())
    assert resolved(con, ds, point, with_models=True) == {**live}
    assert live == {"a.png": "cat", "b.png": "cat", "c.png": "dog", "d.png": "cat"}
    objects = catalog.objects_as_of(con, ds.dataset_id, point, with_models=True)
    assert objects[["class", "x", "y", "w", "h"]].values.tolist() == [["cat", 1.0, 2.0, 3.0, 4.0]]
    assert known["image"]["a.png"] == objects["image_id"].iloc[0]


def test_model_labels_take_part_only_when_asked(con, ds):
    append(con, ds, path="d.png", annotator="net", class_name="dog", source="model",
           kind_of_annotator="model")
    point = catalog.current_point(con)
    assert resolved(con, ds, point)["d.png"] is None
    assert resolved(con, ds, point, with_models=True)["d.png"] == "dog"


def test_snapshot_before_an_edit_exports_the_old_label(con, ds, tmp_path):
    snapshots.create_snapshot(con, ds, "before")
    known = ids(con, ds)
    append(con, ds, path="a.png", annotator="d/given", class_name="dog",
           object_id=known["object"][("a.png", "d/given")], kind_of_annotator="import")
    for name, snapshot in (("old", "before"), ("new", None)):
        export_dataset(con, ds, tmp_path / name, ExportOptions(format="csv"), snapshot=snapshot)
    old = pd.read_csv(tmp_path / "old" / "labels.csv")
    new = pd.read_csv(tmp_path / "new" / "labels.csv")
    assert old.loc[old["image"] == "a.png", "label"].tolist() == ["cat"]
    assert new.loc[new["image"] == "a.png", "label"].tolist() == ["dog"]
    imagefolder = export_dataset(con, ds, tmp_path / "folders", ExportOptions(format="imagefolder"),
                                 snapshot="before")
    assert imagefolder.images == 3 and (tmp_path / "folders" / "cat" / "a.png").exists()


def test_snapshot_keeps_exclusions_and_images_of_its_time(con, ds, tmp_path):
    snapshots.create_snapshot(con, ds, "v1")
    known = ids(con, ds)
    catalog.append_image_events(con, ds.dataset_id, pd.DataFrame({
        "image_id": [known["image"]["b.png"]], "action": ["exclude"], "split": [None],
        "reason": ["duplicate of a.png"]}), author="lead", batch="b1")
    write_png(tmp_path / "src" / "e.png", 40, 30, seed=9)
    ingest(con, tmp_path / "src", fmt="imagefolder", dataset="d", workers=1)
    now = catalog.current_point(con)
    then = snapshots.resolve_point(con, ds, "v1")
    assert sorted(resolved(con, ds, then)) == ["a.png", "b.png", "c.png", "d.png"]
    states = catalog.images_as_of(con, ds.dataset_id, now, with_models=False)
    assert states.set_index("path")["excluded"].to_dict() == {
        "a.png": False, "b.png": True, "c.png": False, "d.png": False, "e.png": False}
    summary = export_dataset(con, ds, tmp_path / "then", ExportOptions(format="csv"), snapshot="v1")
    assert (summary.images, summary.skipped) == (4, {})
    summary = export_dataset(con, ds, tmp_path / "now", ExportOptions(format="csv"))
    assert (summary.images, summary.skipped) == (4, {"excluded by duplicate resolution": 1})


def test_snapshot_keeps_the_consensus_of_its_time(con, ds):
    known = ids(con, ds)
    c = known["image"]["c.png"]
    catalog.replace_consensus(con, ds.dataset_id, pd.DataFrame(
        {"image_id": [c], "class_id": [known["class"]["dog"]], "confidence": [0.9],
         "n_votes": [2]}),
        method="dawid-skene")
    snapshots.create_snapshot(con, ds, "v1")
    catalog.replace_consensus(con, ds.dataset_id, pd.DataFrame(
        {"image_id": [c], "class_id": [known["class"]["cat"]], "confidence": [0.9],
         "n_votes": [2]}),
        method="dawid-skene")
    assert resolved(con, ds, snapshots.resolve_point(con, ds, "v1"))["c.png"] == "dog"
    assert resolved(con, ds, catalog.current_point(con))["c.png"] == "cat"


# ---------------------------------------------------------------- diff


def edit_after_v1(con, ds) -> None:
    """alice changes c from cat to dog, bob's label is deleted, carol labels d, a box on a."""
    snapshots.create_snapshot(con, ds, "v1")
    known = ids(con, ds)
    append(con, ds, path="c.png", annotator="alice", class_name="dog",
           object_id=known["object"][("c.png", "alice")])
    append(con, ds, path="c.png", annotator="bob", class_name="dog", op="delete",
           object_id=known["object"][("c.png", "bob")])
    append(con, ds, path="d.png", annotator="carol", class_name="cat")
    append(con, ds, path="a.png", annotator="d/given", kind="box", class_name="cat",
           box=(1, 2, 3, 4), source="import", kind_of_annotator="import")


def test_diff_snapshots_per_class_and_annotator(con, ds):
    edit_after_v1(con, ds)
    diff = snapshots.diff_snapshots(con, ds, "v1")
    columns = ["change", "path", "annotator", "old_class", "new_class"]
    assert [plain(row) for row in diff.changes[columns].values.tolist()] == [
        ["added", "a.png", "d/given", None, "cat"],
        ["changed", "c.png", "alice", "cat", "dog"],
        ["removed", "c.png", "bob", "dog", None],
        ["added", "d.png", "carol", None, "cat"]]
    assert diff.by_class.values.tolist() == [["cat", 2, 0, 0], ["dog", 0, 1, 1]]
    assert diff.by_annotator.values.tolist() == [
        ["alice", 0, 0, 1], ["bob", 0, 1, 0], ["carol", 1, 0, 0], ["d/given", 1, 0, 0]]
    assert diff.images.values.tolist() == [["a.png", 1, 0, 0], ["c.png", 0, 1, 1],
                                           ["d.png", 1, 0, 0]]


def test_diff_between_two_snapshots_ignores_later_edits(con, ds):
    edit_after_v1(con, ds)
    snapshots.create_snapshot(con, ds, "v2")
    append(con, ds, path="b.png", annotator="dave", class_name="cat")
    assert diff_totals(snapshots.diff_snapshots(con, ds, "v1", "v2")) == \
        {"added": 2, "removed": 1, "changed": 1}
    assert diff_totals(snapshots.diff_snapshots(con, ds, "v2", "v2")) == \
        {"added": 0, "removed": 0, "changed": 0}


def diff_totals(diff) -> dict:
    return snapshots.diff_json(diff)["totals"]


# ---------------------------------------------------------------- command line


def test_main_snapshot_list_and_diff(con, ds, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SIEVE_HOME", str(tmp_path / "home"))
    db = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
                     ).fetchall()[0][0]
    edit_after_v1(con, ds)
    con.close()
    assert main(["snapshot", "--db", db, "--dataset", "d", "--name", "v2", "--note", "edits"]) == 0
    assert capsys.readouterr().out.startswith("snapshot 'v2' of d: label events up to ")
    assert main(["snapshot", "--db", db, "--dataset", "d", "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(s["name"], s["labels"]) for s in listed] == [("v2", 5), ("v1", 4)]
    assert main(["diff", "--db", db, "--dataset", "d", "--from", "v1", "--to", "v2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["totals"], report["images_total"]) == (
        {"added": 2, "removed": 1, "changed": 1}, 3)
    assert report["by_annotator"][0] == {"annotator": "alice", "added": 0, "removed": 0,
                                         "changed": 1}
    assert report["by_class"] == [{"class": "cat", "added": 2, "removed": 0, "changed": 0},
                                  {"class": "dog", "added": 0, "removed": 1, "changed": 1}]
    assert [(i["path"], i["added"], i["removed"], i["changed"]) for i in report["images"]] == [
        ("a.png", 1, 0, 0), ("c.png", 0, 1, 1), ("d.png", 1, 0, 0)]
    assert main(["diff", "--db", db, "--dataset", "d", "--from", "v1"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == \
        "d: v1 -> now: 2 added, 1 removed, 1 changed labels"
    assert main(["diff", "--db", db, "--dataset", "d", "--from", "nope"]) == 2
    assert "no snapshot named 'nope'" in capsys.readouterr().err
