"""Ingest (core.ingest.ingest): every file is recorded, readable or not, with its reason; the
rest goes on; running it again adds and changes nothing; changed bytes are detected."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import imagehash
import pytest
from PIL import Image

from core import catalog
from core.formats import FormatError
from core.ingest import ingest
from tests.fixtures import (BROKEN, GOOD, NON_UTF8_NAME, encode, open_test_catalog, scene,
                            table_counts, voc_xml, write_broken_images, write_good_images,
                            write_non_utf8_name, write_png)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def con(tmp_path):
    con = open_test_catalog(tmp_path)
    yield con
    con.close()


def image_rows(con) -> dict[str, dict]:
    """Every images row by path."""
    result = con.execute("SELECT * FROM images ORDER BY path")
    names = [d[0] for d in result.description]
    return {row[2]: dict(zip(names, row)) for row in result.fetchall()}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """One ingest of a folder holding every fixture file: (summary, images rows by path)."""
    folder = tmp_path_factory.mktemp("mixed")
    source = folder / "src"
    write_good_images(source)
    write_broken_images(source)
    write_non_utf8_name(source)
    (source / "dangling.jpg").symlink_to(source / "nowhere.jpg")
    con = open_test_catalog(folder)
    summary = ingest(con, source, fmt="imagefolder", dataset="mixed")
    rows = image_rows(con)
    con.close()
    return summary, rows


@pytest.mark.parametrize("name", sorted(GOOD))
def test_ingest_readable_image_facts(mixed, name):
    _, rows = mixed
    row = rows[name]
    assert (row["width"], row["height"], row["format"], row["mode"]) == GOOD[name]
    assert (row["status"], row["error"], row["split"]) == ("ok", None, None)
    assert row["bytes"] > 0 and len(row["sha256"]) == 64


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_ingest_broken_file_recorded_with_reason(mixed, name):
    row = mixed[1][name]
    assert row["status"] == "unreadable"
    assert row["error"].startswith(BROKEN[name])
    assert (row["width"], row["height"], row["phash"]) == (None, None, None)


def test_ingest_mixed_folder_goes_on(mixed):
    summary, rows = mixed
    assert (summary.files, summary.added, summary.unreadable) == (14, 14, 6)
    assert summary.problems == {"skipped": 6}
    assert sorted(e["file"] for e in summary.examples) == sorted([*BROKEN, "dangling.jpg"])
    assert sum(r["status"] == "ok" for r in rows.values()) == 8


def test_ingest_dangling_symlink_unreadable(mixed):
    row = mixed[1]["dangling.jpg"]
    assert (row["status"], row["bytes"], row["sha256"]) == ("unreadable", None, None)
    assert row["error"].startswith("FileNotFoundError: [Errno 2] No such file or directory")


def test_ingest_non_utf8_name_stored_displayable_with_raw_bytes(mixed):
    row = mixed[1]["caf\\xe9_latin1.png"]
    assert bytes(row["path_bytes"]) == NON_UTF8_NAME
    assert (row["status"], row["width"], row["height"]) == ("ok", 16, 16)
    assert all(r["path_bytes"] is None for p, r in mixed[1].items() if p != "caf\\xe9_latin1.png")


def test_ingest_non_utf8_name_file_found_again(con, tmp_path):
    raw = write_non_utf8_name(tmp_path / "src")
    ingest(con, tmp_path / "src", fmt="imagefolder", dataset="d")
    root, path, path_bytes = catalog.image_file(con, 1)
    assert path == "caf\\xe9_latin1.png"
    assert os.fsencode(root) + b"/" + bytes(path_bytes) == raw
    with Image.open(os.fsencode(root) + b"/" + bytes(path_bytes)) as image:
        assert image.size == (16, 16)


def test_ingest_over_lowered_pixel_limit_recorded(con, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    write_png(tmp_path / "src" / "small_40x40.png", 40, 40)     # 1,600 px: under the limit
    write_png(tmp_path / "src" / "warn_64x48.png", 64, 48)      # 3,072 px: Pillow warns
    write_png(tmp_path / "src" / "error_100x100.png", 100, 100)  # 10,000 px: Pillow refuses
    summary = ingest(con, tmp_path / "src", fmt="imagefolder", dataset="d", workers=1)
    rows = image_rows(con)
    assert (summary.added, summary.unreadable) == (3, 2)
    assert rows["small_40x40.png"]["status"] == "ok"
    assert rows["warn_64x48.png"]["error"] == (
        "too large to decode safely: Image size (3072 pixels) exceeds limit of 2000 pixels, "
        "could be decompression bomb DOS attack.")
    assert rows["error_100x100.png"]["error"] == (
        "too large to decode safely: Image size (10000 pixels) exceeds limit of 4000 pixels, "
        "could be decompression bomb DOS attack.")


INGEST_WITHOUT_PRIVILEGES = """
import json, os, sys
from core import catalog, ingest
folder = sys.argv[1]
# Warm up as root: the interpreter lives under /root (mode 700), so every module the ingest
# needs is loaded before dropping to the unprivileged uid.
warm = catalog.open_catalog(folder + '/warm.duckdb')
ingest.ingest(warm, folder + '/warm', fmt='imagefolder', dataset='d', workers=1)
warm.close()
os.setgid(65534)
os.setuid(65534)
con = catalog.open_catalog(folder + '/catalog.duckdb')
summary = ingest.ingest(con, folder + '/src', fmt='imagefolder', dataset='d', workers=1)
rows = con.execute('SELECT path, status, error FROM images ORDER BY path').fetchall()
print(json.dumps({'unreadable': summary.unreadable, 'rows': rows}))
"""


def ingest_unreadable_folder(folder: Path) -> dict:
    """Ingest `folder`/src holding locked.png (mode 000) without the power to read it: when we
    are root (who reads anything) in a subprocess that drops to uid 65534, else here."""
    if os.geteuid() != 0:
        con = catalog.open_catalog(folder / "catalog.duckdb")
        summary = ingest(con, folder / "src", fmt="imagefolder", dataset="d", workers=1)
        rows = con.execute("SELECT path, status, error FROM images ORDER BY path").fetchall()
        con.close()
        return {"unreadable": summary.unreadable, "rows": [list(r) for r in rows]}
    write_png(folder / "warm" / "warm.png", 8, 8)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(folder), "SIEVE_HOME": str(folder)}
    done = subprocess.run([sys.executable, "-c", INGEST_WITHOUT_PRIVILEGES, str(folder)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_ingest_permission_denied_recorded():
    folder = Path(tempfile.mkdtemp(prefix="sieve-unreadable-"))
    try:
        folder.chmod(0o777)  # the unprivileged uid writes its catalog here
        locked = write_png(folder / "src" / "locked.png", 8, 8)
        write_png(folder / "src" / "ok.png", 8, 8)
        locked.chmod(0o000)
        found = ingest_unreadable_folder(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert found == {"unreadable": 1, "rows": [
        ["locked.png", "unreadable", "permission denied: the file cannot be read"],
        ["ok.png", "ok", None]]}


def labelled_source(folder: Path) -> Path:
    """train/cat, train/dog and val/cat images, plus the broken files and a dangling link."""
    for k, rel in enumerate(["train/cat/a.png", "train/dog/b.png", "val/cat/c.png"]):
        write_png(folder / rel, 12, 10, seed=k)
    write_broken_images(folder / "train" / "cat")
    (folder / "train" / "dog" / "dangling.png").symlink_to(folder / "nowhere.png")
    return folder


def test_ingest_split_class_layout(con, tmp_path):
    summary = ingest(con, labelled_source(tmp_path / "src"), fmt="imagefolder", dataset="d")
    assert (summary.files, summary.unreadable, summary.labels_added) == (9, 6, 9)
    splits = dict(con.execute("SELECT split, count(*) FROM images GROUP BY 1").fetchall())
    assert splits == {"train": 8, "val": 1}
    assert list(catalog.class_table(con, 1)["name"]) == ["cat", "dog"]


def test_reingest_with_another_split_moves_the_images_it_names(con, tmp_path):
    """`--split val` on a folder ingested as train moves its images (and says how many); the
    split folders of an imagefolder still decide for the images below them."""
    from core import duplicates

    flat = tmp_path / "flat"
    for k in range(3):
        write_png(flat / f"{k}.png", 8, 8, seed=k)
    assert ingest(con, flat, dataset="d", split="train").moved == 0
    write_png(flat / "new.png", 8, 8, seed=9)
    moving = ingest(con, flat, dataset="d", split="val")
    assert (moving.added, moving.moved) == (1, 3)
    splits = "SELECT split, count(*) FROM image_state GROUP BY 1 ORDER BY 1"
    assert con.execute(splits).fetchall() == [("val", 4)]
    again = ingest(con, flat, dataset="d", split="val")
    assert (again.moved, again.added, again.unchanged) == (0, 0, 4)
    ds = catalog.find_dataset(con, "d")  # the move is a resolution like any other: undone
    [batch] = catalog.image_event_batches(con, ds.dataset_id)["batch"]
    assert batch.startswith("ingest-split-")
    duplicates.undo_resolution(con, ds, batch, author=None)
    assert con.execute(splits).fetchall() == [("train", 3), ("val", 1)]
    source = labelled_source(tmp_path / "src")
    ingest(con, source, fmt="imagefolder", dataset="e")
    assert ingest(con, source, fmt="imagefolder", dataset="e", split="test").moved == 0
    splits = dict(con.execute("""SELECT split, count(*) FROM image_state JOIN datasets
        USING (dataset_id) WHERE name = 'e' GROUP BY 1""").fetchall())
    assert splits == {"train": 8, "val": 1}


def test_reingest_with_a_split_moves_an_image_whose_name_is_not_utf8(con, tmp_path):
    """The names to move are the stored ones (made UTF-8): a raw name used to abort the ingest
    after its images were written, before its labels and the move."""
    flat = tmp_path / "flat"
    write_png(flat / "plain.png", 8, 8, seed=1)
    write_png(Path(os.fsdecode(os.fsencode(str(flat)) + b"/caf\xe9.png")), 8, 8, seed=2)
    ingest(con, flat, dataset="latin")
    moved = ingest(con, flat, dataset="latin", split="train")
    assert (moved.moved, moved.unchanged) == (2, 2)
    splits = con.execute("""SELECT split, count(*) FROM image_state JOIN datasets
        USING (dataset_id) WHERE name = 'latin' GROUP BY 1""").fetchall()
    assert splits == [("train", 2)]


def test_ingest_twice_adds_and_changes_nothing(con, tmp_path):
    source = labelled_source(tmp_path / "src")
    first = ingest(con, source, fmt="imagefolder", dataset="d")
    before, problems_before = table_counts(con), catalog.problem_table(con, 1)
    second = ingest(con, source, fmt="imagefolder", dataset="d")
    assert (second.added, second.changed, second.unchanged) == (0, 0, 9)
    assert (second.labels_added, second.labels_unchanged) == (0, 9)
    assert (second.unreadable, second.problems) == (first.unreadable, first.problems) == (
        6, {"skipped": 6})
    assert table_counts(con) == before == {"datasets": 1, "images": 9, "file_events": 9,
                                           "classes": 2, "annotators": 1, "label_events": 9}
    assert catalog.problem_table(con, 1)[["file", "reason"]].equals(
        problems_before[["file", "reason"]])


def test_ingest_changed_bytes_recorded(con, tmp_path):
    path = write_png(tmp_path / "src" / "a.png", 12, 10, seed=1)
    old_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    ingest(con, tmp_path / "src", fmt="imagefolder", dataset="d")
    new_image = scene(20, 16, seed=2)
    path.write_bytes(encode(new_image, "PNG"))
    summary = ingest(con, tmp_path / "src", fmt="imagefolder", dataset="d")
    assert (summary.added, summary.changed, summary.unchanged) == (0, 1, 0)
    events = con.execute("SELECT image_id, event, old_sha256, new_sha256 FROM file_events "
                         "ORDER BY recorded_at").fetchall()
    new_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert events == [(1, "added", None, old_sha), (1, "changed", old_sha, new_sha)]
    row = image_rows(con)["a.png"]
    assert (row["image_id"], row["sha256"], row["width"], row["height"]) == (1, new_sha, 20, 16)
    assert row["phash"] == int(str(imagehash.phash(new_image)), 16)


def test_ingest_file_turned_unreadable_recorded_changed(con, tmp_path):
    path = write_png(tmp_path / "src" / "a.png", 12, 10)
    ingest(con, tmp_path / "src", fmt="imagefolder", dataset="d")
    path.write_bytes(b"")
    summary = ingest(con, tmp_path / "src", fmt="imagefolder", dataset="d")
    assert (summary.changed, summary.unreadable) == (1, 1)
    row = image_rows(con)["a.png"]
    assert (row["status"], row["error"], row["width"]) == ("unreadable", "empty file (0 bytes)",
                                                           None)


@pytest.mark.parametrize("document, reason", [
    ('{"images": [', "malformed JSON: Expecting value: line 1 column 13 (char 12)"),
    ('{"images": [], "categories": []}', "missing key(s) annotations"),
])
def test_ingest_unusable_annotation_file_images_still_ingested(con, tmp_path, document, reason):
    write_png(tmp_path / "src" / "a.png", 8, 8)
    labels = tmp_path / "instances.json"
    labels.write_text(document)
    summary = ingest(con, tmp_path / "src", fmt="coco", labels=labels, dataset="d")
    assert (summary.added, summary.labels_added, summary.problems) == (1, 0, {"skipped": 1})
    assert [(r.file, r.location, r.reason, r.action)
            for r in catalog.problem_table(con, 1).itertuples()] == [
        (str(labels), None, f"{labels}: {reason}", "skipped")]


def test_ingest_source_not_a_folder_raises(con, tmp_path):
    with pytest.raises(FormatError, match="is not a folder"):
        ingest(con, tmp_path / "missing", fmt="imagefolder")


def test_ingest_subfolder_of_dataset_root_prefixed(con, tmp_path):
    write_png(tmp_path / "root" / "part1" / "a.png", 8, 8, seed=1)
    write_png(tmp_path / "root" / "part2" / "b.png", 8, 8, seed=2)
    catalog.get_or_create_dataset(con, "d", tmp_path / "root")
    ingest(con, tmp_path / "root" / "part1", fmt="imagefolder", dataset="d")
    ingest(con, tmp_path / "root" / "part2", fmt="imagefolder", dataset="d")
    assert list(image_rows(con)) == ["part1/a.png", "part2/b.png"]


def test_ingest_folder_outside_dataset_root_raises(con, tmp_path):
    write_png(tmp_path / "elsewhere" / "a.png", 8, 8)
    catalog.get_or_create_dataset(con, "d", tmp_path / "root")
    with pytest.raises(FormatError, match="ingest a folder inside it"):
        ingest(con, tmp_path / "elsewhere", fmt="imagefolder", dataset="d")


def test_ingest_bad_annotation_files_recorded_rest_imported(con, tmp_path):
    source = tmp_path / "src"
    write_png(source / "one.png", 40, 30, seed=1)
    write_png(source / "two.png", 40, 30, seed=2)
    (source / "one.xml").write_text(voc_xml("one.png", [("cat", 1, 1, 11, 11)]))
    (source / "two.xml").write_text("<annotation><filename>two.png</filename><object>")
    (source / "three.xml").write_text(voc_xml("../../etc/x.png", [("cat", 1, 1, 11, 11)]))
    summary = ingest(con, source, fmt="voc", dataset="d")
    assert (summary.added, summary.labels_added) == (2, 1)
    assert summary.problems == {"skipped": 1, "refused": 1}
    recorded = sorted((Path(r.file).name, r.reason.split(":")[0], r.action)
                      for r in catalog.problem_table(con, 1).itertuples())
    assert recorded == [("three.xml", "<filename> points outside the source folder", "refused"),
                        ("two.xml", "malformed XML", "skipped")]


def test_reader_processes_do_not_run_the_parents_main_script(tmp_path, monkeypatch):
    """Streamlit leaves the app as `__main__` (with a file, no spec); multiprocessing would
    have each worker run that script first, and there it fails, killing the worker."""
    import types
    import warnings

    from core import ingest as ingest_module

    marker = tmp_path / "main script ran"
    script = tmp_path / "app.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\nraise RuntimeError('not here')\n")
    app = types.ModuleType("__main__")
    app.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", app)
    monkeypatch.setattr(ingest_module, "POOL_WORTH_S", 0.0)
    monkeypatch.setattr(ingest_module, "THREADS_FROM_PIXELS", 1 << 60)  # processes
    paths = [str(p) for p in write_good_images(tmp_path / "good").values()] * 4
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # 'a reader process stopped'
        read = [r for batch in ingest_module.probe_all(paths, [None] * len(paths), workers=2)
                for r in batch]
    assert len(read) == len(paths) and not marker.exists()


def test_reader_processes_start_without_the_catalog():
    """A worker imports the module of its process class before its first task: were that
    core.ingest, every worker would import the catalog, DuckDB and pandas (0.7 s) first."""
    from concurrent.futures import ProcessPoolExecutor

    from core import workerpool
    from tests import loaded_modules

    heavy = ["duckdb", "pandas", "core.catalog", "core.ingest", "streamlit"]
    with ProcessPoolExecutor(1, mp_context=workerpool.context()) as pool:
        assert pool.submit(loaded_modules.loaded, heavy).result() == []
        assert pool.submit(loaded_modules.loaded, workerpool.PRELOAD).result() == \
            workerpool.PRELOAD


def test_probe_all_finishes_here_when_a_reader_process_dies(tmp_path, monkeypatch):
    from core import ingest as ingest_module
    from core.imageprobe import probe_files
    from tests import loaded_modules

    good = [str(p) for p in write_good_images(tmp_path / "good").values()]
    paths = (good * 64)[:64]  # chunks of 8: 8 read here to time them, 7 given to the pool
    dying = tmp_path / "die_here.png"
    shutil.copy(paths[20], dying)
    paths[20] = str(dying)
    monkeypatch.setattr(ingest_module, "POOL_WORTH_S", 0.0)
    monkeypatch.setattr(ingest_module, "THREADS_FROM_PIXELS", 1 << 60)  # processes
    monkeypatch.setattr(ingest_module, "probe_batch", loaded_modules.probe_or_die)
    with pytest.warns(RuntimeWarning, match="a reader process stopped"):
        read = [r for batch in ingest_module.probe_all(paths, [None] * len(paths), workers=2)
                for r in batch]
    assert read == probe_files(paths, [None] * len(paths))


@pytest.mark.parametrize(("seconds_here", "decoded", "workers", "readers"), [
    (0.3, [640 * 480] * 8, 2, "threads"),    # a few hundred big images: threads start at once
    (0.05, [640 * 480] * 8, 2, "here"),      # a handful: not worth a second thread
    (0.1, [32 * 32] * 8, 2, "here"),         # small images: processes would take longer to start
    (5.0, [32 * 32] * 8, 2, "processes"),
    (5.0, [640 * 480, 32 * 32], 1, "here"),  # one worker asked for
    (5.0, [], 2, "processes"),               # nothing decoded in the sample (all unreadable)
])
def test_readers_chosen_by_image_size_and_work_left(seconds_here, decoded, workers, readers):
    from core.ingest import _readers

    assert _readers(seconds_here, decoded, workers) == readers


@pytest.mark.parametrize("readers", ["processes", "threads"])
def test_probe_all_workers_give_what_this_process_gives(tmp_path, monkeypatch, readers):
    from core import ingest as ingest_module
    from core.imageprobe import probe_files

    paths = [str(p) for p in write_good_images(tmp_path / "good").values()]
    paths += [str(p) for p in write_broken_images(tmp_path / "broken").values()]
    paths.append(str(write_png(tmp_path / "big" / "big_enough_for_matrix_resizes.png", 400, 300,
                               seed=3)))
    paths = paths * 4  # 6 chunks over two workers
    monkeypatch.setattr(ingest_module, "POOL_WORTH_S", 0.0)  # always share the work out
    monkeypatch.setattr(ingest_module, "THREADS_WORTH_S", 0.0)
    monkeypatch.setattr(ingest_module, "THREADS_FROM_PIXELS",
                        0 if readers == "threads" else 1 << 60)
    pooled = [r for batch in ingest_module.probe_all(paths, [None] * len(paths), workers=2)
              for r in batch]
    assert pooled == probe_files(paths, [None] * len(paths))
