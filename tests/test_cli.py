"""The command line (python -m core): what it prints, its exit status (1: nothing could be
ingested, 2: unusable input, 3: the catalog is held by another writer), and the integration
runs on the real datasets."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from core import catalog
from core.__main__ import main
from tests.fixtures import BROKEN, write_broken_images, write_good_images

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def sieve_home(tmp_path, monkeypatch):
    """Keep the default catalog path (computed by the parser) out of the repository."""
    monkeypatch.setenv("SIEVE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run_cli(*args, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "SIEVE_HOME": str(Path(args[-1]).parent / "home")}
    return subprocess.run([sys.executable, "-m", "core", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- exit status and summary


def test_main_ingest_only_broken_files_exits_1(tmp_path, capsys):
    write_broken_images(tmp_path / "src")
    db = tmp_path / "catalog.duckdb"
    args = ["ingest", str(tmp_path / "src"), "--db", str(db), "--format", "imagefolder",
            "--dataset", "d"]
    assert main(args) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        "dataset d (imagefolder): 5 files, 5 added, 0 unchanged, 0 changed, 5 unreadable; "
        "labels: 0 added, 0 already present", "", "Skipped or flagged (5 skipped):"]
    listed = {line.split()[1].rstrip(":"): line for line in out[3:]}
    assert sorted(listed) == sorted(BROKEN)
    for name, reason in BROKEN.items():
        assert listed[name].startswith(f"   skipped  {name}: {reason}")
    # a second run finds the same files still unreadable: still nothing ingested
    assert main(args) == 1
    assert "0 added, 5 unchanged, 0 changed, 5 unreadable" in capsys.readouterr().out


def test_main_ingest_mixed_exits_0(tmp_path, capsys):
    write_broken_images(tmp_path / "src")
    write_good_images(tmp_path / "src")
    db = tmp_path / "catalog.duckdb"
    code = main(["ingest", str(tmp_path / "src"), "--db", str(db), "--format", "imagefolder",
                 "--dataset", "d", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {k: summary[k] for k in ("files", "added", "unreadable", "problems")} == {
        "files": 12, "added": 12, "unreadable": 5, "problems": {"skipped": 5}}


def test_main_ingest_source_missing_exits_2(tmp_path, capsys):
    code = main(["ingest", str(tmp_path / "missing"), "--db", str(tmp_path / "c.duckdb"),
                 "--format", "imagefolder"])
    assert code == 2
    assert capsys.readouterr().err == f"error: source {tmp_path / 'missing'} is not a folder\n"
    assert not (tmp_path / "c.duckdb").exists()  # a mistyped folder leaves no catalog behind


def test_main_stats_without_catalog_exits_2(tmp_path, capsys):
    assert main(["stats", "--db", str(tmp_path / "none.duckdb")]) == 2
    assert capsys.readouterr().err.startswith(f"error: no catalog at {tmp_path / 'none.duckdb'}")


def test_main_ingest_missing_labels_file_exits_2_before_ingesting(tmp_path, capsys):
    write_good_images(tmp_path / "src")
    db = tmp_path / "c.duckdb"
    assert main(["ingest", str(tmp_path / "src"), "--db", str(db), "--labels",
                 str(tmp_path / "votes.json")]) == 2
    assert capsys.readouterr().err == (
        f"error: the annotation file or folder {tmp_path / 'votes.json'} does not exist\n")
    assert not db.exists()  # refused before a catalog was made for it
    (tmp_path / "votes.tsv").write_text("a.png\tcat\n")
    assert main(["ingest", str(tmp_path / "src"), "--db", str(db), "--labels",
                 str(tmp_path / "votes.tsv")]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: cannot tell the format of the annotations {tmp_path / 'votes.tsv'}: ")
    assert not db.exists()


def test_main_catalog_in_a_missing_folder_or_a_folder_exits_2(tmp_path, capsys):
    assert main(["stats", "--db", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path} is a folder")
    write_good_images(tmp_path / "src")
    assert main(["ingest", str(tmp_path / "src"), "--db", str(tmp_path / "no" / "c.duckdb")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: cannot create the catalog {tmp_path / 'no' / 'c.duckdb'}: the folder "
        f"{tmp_path / 'no'} does not exist")


def test_main_stats_on_an_empty_catalog_says_so(tmp_path, capsys):
    db = tmp_path / "c.duckdb"
    catalog.open_catalog(db).close()
    assert main(["stats", "--db", str(db)]) == 0
    assert capsys.readouterr().out == f"{db}: no dataset yet (add one with `python -m core ingest`)\n"


def test_demo_refuses_to_replace_a_catalog_that_is_not_a_demo(tmp_path, capsys):
    write_good_images(tmp_path / "src")
    db = tmp_path / "mine.duckdb"
    assert main(["ingest", str(tmp_path / "src"), "--db", str(db), "--dataset", "mine",
                 "--format", "imagefolder"]) == 0
    capsys.readouterr()
    assert main(["demo", "--db", str(db)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: {db} is not a demo catalog (it holds mine): give another --db for the demo, or "
        "--force to replace this catalog with it")
    con = catalog.open_catalog(db, read_only=True)
    assert catalog.list_dataset_names(con) == ["mine"]
    con.close()


def test_demo_refuses_to_replace_a_catalog_that_holds_only_accounts(tmp_path, capsys):
    from core import users

    db = tmp_path / "team.duckdb"
    with catalog.open_catalog(db) as con:
        users.add_user(con, "ana", "admin", by=None, password="correct horse battery")
    assert main(["demo", "--db", str(db)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: {db} is not a demo catalog (it holds 1 account(s)): give another --db for the "
        "demo, or --force to replace this catalog with it")
    with catalog.open_catalog(db, read_only=True) as con:
        assert catalog.count_users(con) == 1


def test_json_output_is_strict_json():
    import numpy as np

    from core.__main__ import dumps

    text = dumps({"ratio": float("inf"), "split": float("nan"), "n": np.int64(3),
                  "shares": np.array([0.5, np.nan]), "when": pd.Timestamp("2026-01-02"),
                  "missing": pd.NA})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON")) == {
        "ratio": None, "split": None, "n": 3, "shares": [0.5, None],
        "when": "2026-01-02 00:00:00", "missing": None}


def test_ctrl_c_prints_one_line_exits_130_and_ends_the_job(tmp_path, monkeypatch, capsys):
    from core import ingest, jobs

    write_good_images(tmp_path / "src")
    db = tmp_path / "c.duckdb"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest, "ingest", interrupted)
    assert main(["ingest", str(tmp_path / "src"), "--db", str(db)]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "interrupted: the images and labels written so far are kept; the same command again "
        "adds only what is missing")
    assert "Traceback" not in err
    con = catalog.open_catalog(db, read_only=True)
    assert con.execute("SELECT status, error FROM jobs").fetchall() == [
        ("cancelled", "interrupted (Ctrl-C)")]
    con.close()


def test_ctrl_c_during_demo_does_not_promise_a_resume(tmp_path, monkeypatch, capsys):
    from core import demo

    def interrupted(*args, **kwargs):
        raise RuntimeError("Query interrupted")  # what DuckDB raises for Ctrl-C mid-statement

    monkeypatch.setattr(demo, "build_demo", interrupted)
    assert main(["demo", "--db", str(tmp_path / "d.duckdb")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "interrupted: the catalog was left as it was; `demo` again builds the demo from the "
        "start")


def test_interrupted_tells_ctrl_c_from_other_errors():
    import signal
    import threading

    from core.jobs import interrupted

    con = duckdb.connect()  # a real Ctrl-C (SIGINT) in the middle of a long statement
    # as at a terminal: a shell that starts the tests in the background has them ignore SIGINT
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.3, os.kill, [os.getpid(), signal.SIGINT]).start()
        with pytest.raises(BaseException) as caught:
            con.execute("SELECT count(*) FROM range(100000000000) a").fetchall()
    finally:
        signal.signal(signal.SIGINT, before)
    assert interrupted(caught.value), repr(caught.value)
    assert interrupted(KeyboardInterrupt())
    assert interrupted(RuntimeError("Query interrupted"))
    assert interrupted(duckdb.InterruptException("INTERRUPT Error: Interrupted!"))
    assert not interrupted(RuntimeError("worker interrupted by a signal: see its log"))
    assert not interrupted(OSError("Interrupted system call"))


def test_a_closed_stderr_stops_the_progress_bar_not_the_work(monkeypatch):
    """`python -m core ingest ... |& head`: once head has gone, drawing the bar fails; the
    ingest must go on (and end recorded as done), not stop as a failed job."""
    from core.__main__ import _progress_bar

    class Gone(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stderr", Gone())
    progress = _progress_bar("ingest")
    for done in range(0, 101, 10):
        progress(done, 100, "reading")
    progress.close()


# ---------------------------------------------------------------- one writer

HOLDER = """
import sys, time
from core import catalog
con = catalog.open_catalog(sys.argv[1], program="holder-test --sleep")
print("ready", flush=True)
time.sleep(120)
"""


def test_cli_ingest_catalog_held_exits_3(tmp_path):
    write_good_images(tmp_path / "src")
    db = tmp_path / "catalog.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "ready\n"
        done = run_cli("ingest", tmp_path / "src", "--db", db)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 3
    assert done.stderr.startswith(f"error: the catalog {db} is open in "
                                  f"holder-test --sleep (PID {holder.pid}) since ")
    assert "Only one process can write to it" in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- integration on real data


def test_cli_ingest_bccd_counts(shared_data, tmp_path):
    bccd, db = shared_data / "bccd", tmp_path / "catalog.duckdb"
    done = run_cli("ingest", bccd / "images", "--format", "voc", "--labels", bccd / "annotations",
                   "--dataset", "bccd", "--json", "--db", db)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    keys = ("files", "added", "unreadable", "labels_added", "problems")
    assert {k: summary[k] for k in keys} == {
        "files": 364, "added": 364, "unreadable": 0, "labels_added": 4888,
        "problems": {"flagged": 2}}
    stats = json.loads(run_cli("stats", "--json", "--db", db).stdout)["datasets"]["bccd"]
    assert (stats["images"], stats["unreadable"], stats["labelled"]) == (364, 0, 364)
    assert stats["classes"] == {
        "Platelets": {"labels": 0, "boxes": 361, "polygons": 0, "flagged": 0},
        "RBC": {"labels": 0, "boxes": 4155, "polygons": 0, "flagged": 2},
        "WBC": {"labels": 0, "boxes": 372, "polygons": 0, "flagged": 0}}
    con = catalog.open_catalog(db, read_only=True)
    flagged = con.execute("""SELECT i.path, l.x, l.y, l.w, l.h, l.flag FROM current_labels l
        JOIN images i USING (image_id) WHERE l.flag IS NOT NULL ORDER BY i.path""").fetchall()
    con.close()
    assert flagged == [
        ("BloodImage_00338.jpg", 504.0, 337.0, 0.0, 0.0, "zero-area box (0 x 0 px)"),
        ("BloodImage_00343.jpg", 181.0, 329.0, 0.0, 0.0, "zero-area box (0 x 0 px)")]


def test_cli_ingest_cifar10_test_counts(shared_data, tmp_path):
    table = pd.read_csv(shared_data / "cifar10-test" / "labels.csv")
    labels, db = tmp_path / "labels.csv", tmp_path / "catalog.duckdb"
    pd.DataFrame({"image": [f"{i:05d}.png" for i in table["index"]],
                  "label": table["label_name"]}).to_csv(labels, index=False)
    done = run_cli("ingest", shared_data / "cifar10-test" / "images", "--format", "csv",
                   "--labels", labels, "--dataset", "cifar10-test", "--json", "--db", db)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["added"], summary["unreadable"], summary["labels_added"]) == (10000, 0, 10000)
    stats = json.loads(run_cli("stats", "--json", "--db", db).stdout)["datasets"]["cifar10-test"]
    assert (stats["images"], stats["labelled"]) == (10000, 10000)
    assert {name: c["labels"] for name, c in stats["classes"].items()} == {
        name: 1000 for name in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                "horse", "ship", "truck"]}


def test_engine_ray_keeps_other_programs_output_out_of_the_json():
    """Ray's C++ core and processes write notices to descriptor 1 (a node died); under
    --engine ray they go to stderr and stdout holds only this program's output."""
    script = ("import os\n"
              "from core.__main__ import stdout_for_this_program_only\n"
              "with stdout_for_this_program_only():\n"
              "    os.write(1, b'(raylet) a node died\\n')\n"
              "    print('{\"images\": 3}')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, check=True)
    assert json.loads(done.stdout) == {"images": 3}
    assert "a node died" in done.stderr


@pytest.mark.parametrize("workers", ["0", "-3", "two"])
def test_main_ingest_workers_must_be_positive(tmp_path, capsys, workers):
    with pytest.raises(SystemExit) as exit_:
        main(["ingest", str(tmp_path), "--db", str(tmp_path / "c.duckdb"), "--workers", workers])
    assert exit_.value.code == 2
    assert f"{workers!r} is not a whole number from 1 up" in capsys.readouterr().err


def test_help_writes_nothing_and_the_first_write_makes_sieves_folder(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "SIEVE_HOME": str(home)}
    env.pop("SIEVE_DB", None)
    shown = subprocess.run([sys.executable, "-m", "core", "ingest", "--help"], cwd=REPO, env=env,
                           capture_output=True, text=True)
    assert shown.returncode == 0 and str(home / "demo.duckdb") in "".join(shown.stdout.split())
    assert not home.exists()  # naming the default catalog made no folder
    write_good_images(tmp_path / "src")
    made = subprocess.run([sys.executable, "-m", "core", "ingest", str(tmp_path / "src")],
                          cwd=REPO, env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert (home / "demo.duckdb").exists()
