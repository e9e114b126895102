"""The catalog (core.catalog): perceptual hashes as imagehash computes them, the label views
(current_labels, resolved_class), opening files, and the rule that core/ never imports streamlit."""
from __future__ import annotations

import ast
from pathlib import Path

import imagehash
import pandas as pd
import pytest
from PIL import Image, ImageOps

from core import catalog
from core.ingest import ingest
from tests.fixtures import GOOD, open_test_catalog, write_good_images, write_png

CORE = Path(__file__).resolve().parent.parent / "core"


@pytest.fixture
def con(tmp_path):
    con = open_test_catalog(tmp_path)
    yield con
    con.close()


# ---------------------------------------------------------------- hashes


@pytest.fixture(scope="module")
def hashed(tmp_path_factory):
    """The good fixture images ingested: (their paths by name, hash_table rows by path)."""
    folder = tmp_path_factory.mktemp("hashes")
    paths = write_good_images(folder / "src")
    con = open_test_catalog(folder)
    ingest(con, folder / "src", fmt="imagefolder", dataset="h")
    table = catalog.hash_table(con, 1)
    con.close()
    return paths, {row.path: row for row in table.itertuples()}


@pytest.mark.parametrize("name", sorted(GOOD))
@pytest.mark.parametrize("method", ["phash", "dhash"])
def test_hash_table_equals_imagehash(hashed, name, method):
    paths, rows = hashed
    with Image.open(paths[name]) as image:
        upright = ImageOps.exif_transpose(image)  # hashes are of the image as displayed
        expected = int(str(getattr(imagehash, method)(upright)), 16)
    assert int(getattr(rows[name], method)) == expected


def test_hash_table_exif_rotation_changes_hash(hashed):
    paths, rows = hashed
    with Image.open(paths["exif_rotated_6.jpg"]) as image:
        as_stored = int(str(imagehash.phash(image)), 16)
    assert int(rows["exif_rotated_6.jpg"].phash) != as_stored


# ---------------------------------------------------------------- label views


@pytest.fixture
def labelled(con, tmp_path):
    """Dataset 'd' with images 1..5 (a.png .. e.png) and classes cat (0) and dog (1)."""
    for k, name in enumerate("abcde"):
        write_png(tmp_path / "src" / f"{name}.png", 8, 8, seed=k)
    ingest(con, tmp_path / "src", fmt="imagefolder", dataset="d")
    catalog.add_classes(con, 1, ["cat", "dog"])
    return con


def add_event(con, image_id: int, annotator: str, cls: str | None, *, kind: str = "human",
              source: str = "import", op: str = "set", object_id: int | None = None) -> int:
    """Append one whole-image class event; returns its event_id."""
    annotator_id = catalog.get_or_create_annotators(con, [annotator], kind=kind)[annotator]
    class_id = {"cat": 0, "dog": 1, None: None}[cls]
    row = {column: None for column in catalog.EVENT_COLUMNS}
    row.update(object_id=object_id, dataset_id=1, image_id=image_id, annotator_id=annotator_id,
               kind="class", op=op, class_id=class_id, source=source, replaces=object_id,
               created_at=catalog.now())
    catalog.append_label_events(con, pd.DataFrame([row]))
    return con.execute("SELECT max(event_id) FROM label_events").fetchall()[0][0]


def current_classes(con) -> list[tuple]:
    return con.execute("""SELECT image_id, object_id, event_id, class_id, source
        FROM current_labels ORDER BY image_id, object_id""").fetchall()


def resolved(con) -> dict[int, tuple]:
    rows = con.execute("SELECT image_id, class_id, resolved_by FROM resolved_class").fetchall()
    return {image_id: (class_id, how) for image_id, class_id, how in rows}


def test_current_labels_edit_replaces_label(labelled):
    first = add_event(labelled, 1, "d/given", "cat", kind="import")
    edit = add_event(labelled, 1, "d/given", "dog", source="edit", object_id=first)
    assert current_classes(labelled) == [(1, first, edit, 1, "edit")]
    assert resolved(labelled) == {1: (1, "given")}


def test_current_labels_delete_removes_object(labelled):
    kept = add_event(labelled, 1, "alice", "cat")
    gone = add_event(labelled, 1, "d/given", "dog", kind="import")
    add_event(labelled, 1, "d/given", None, source="edit", op="delete", object_id=gone)
    assert current_classes(labelled) == [(1, kept, kept, 0, "import")]
    assert resolved(labelled) == {1: (0, "consensus")}


def test_resolved_class_review_beats_import(labelled):
    add_event(labelled, 1, "d/given", "cat", kind="import")
    add_event(labelled, 1, "alice", "dog", source="review")
    assert resolved(labelled) == {1: (1, "review")}


def test_resolved_class_tiers_and_majority(labelled):
    add_event(labelled, 2, "d/given", "cat", kind="import")   # given beats two people
    add_event(labelled, 2, "alice", "dog")
    add_event(labelled, 2, "bob", "dog")
    add_event(labelled, 3, "alice", "dog")                    # majority of people
    add_event(labelled, 3, "bob", "dog")
    add_event(labelled, 3, "carol", "cat")
    add_event(labelled, 4, "alice", "cat")                    # a tie: the earliest label
    add_event(labelled, 4, "bob", "dog")
    add_event(labelled, 5, "net-v1", "dog", kind="model", source="model")
    add_event(labelled, 5, "alice", "cat")                    # a person beats a model
    assert resolved(labelled) == {2: (0, "given"), 3: (1, "consensus"), 4: (0, "consensus"),
                                  5: (0, "consensus")}


def test_resolved_class_model_alone(labelled):
    add_event(labelled, 5, "net-v1", "dog", kind="model", source="model")
    assert resolved(labelled) == {5: (1, "model")}


# ---------------------------------------------------------------- opening files


def test_open_catalog_reopens_with_data(tmp_path):
    con = open_test_catalog(tmp_path)
    catalog.get_or_create_dataset(con, "d", tmp_path)
    con.close()
    con = catalog.open_catalog(tmp_path / "catalog.duckdb", read_only=True)
    assert catalog.list_dataset_names(con) == ["d"]
    assert catalog.get_meta(con, "schema_version") == str(catalog.SCHEMA_VERSION)
    con.close()


def test_open_catalog_read_only_missing_raises(tmp_path):
    with pytest.raises(catalog.CatalogError, match="no catalog at"):
        catalog.open_catalog(tmp_path / "none.duckdb", read_only=True)


def test_open_catalog_not_a_catalog_raises(tmp_path):
    (tmp_path / "notes.duckdb").write_text("not a database\n" * 100)
    with pytest.raises(catalog.CatalogError):
        catalog.open_catalog(tmp_path / "notes.duckdb")


def test_find_dataset_unknown_names_known_ones(con, tmp_path):
    catalog.get_or_create_dataset(con, "bccd", tmp_path)
    with pytest.raises(catalog.CatalogError,
                       match=r"no dataset named 'cifar' .*\(datasets: bccd\)"):
        catalog.find_dataset(con, "cifar")


# ---------------------------------------------------------------- layering


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_core_modules_never_import_streamlit():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 10  # the walk found core/ and core/formats/
    offenders = {str(f.relative_to(CORE)): sorted(m for m in imported_modules(f)
                                                  if m.split(".")[0] == "streamlit")
                 for f in files}
    assert {f: m for f, m in offenders.items() if m} == {}
