"""Bad input loses nothing (tests/badcorpus.py): each broken image and each bad annotation file
or row of every format is recorded with a reason naming it, every good file beside it is
ingested, and no exception escapes; the command line fails only when nothing could be read."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import catalog
from core.ingest import ingest
from tests import badcorpus

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, badcorpus.Case]:
    return badcorpus.write_corpus(tmp_path_factory.mktemp("badcorpus"))


@pytest.fixture(scope="module")
def ingested(corpus, tmp_path_factory) -> dict:
    """Each case ingested into its own catalog: name → (summary, images, problems, events)."""
    folder = tmp_path_factory.mktemp("catalogs")
    results = {}
    for name, case in corpus.items():
        con = catalog.open_catalog(folder / f"{name}.duckdb", program="pytest")
        summary = ingest(con, case.source, fmt=case.fmt, labels=case.labels_path, dataset=name,
                         classes=list(case.classes) if case.classes else None, workers=1)
        images = {row[0]: row[1:] for row in con.execute(
            "SELECT path, status, error, width FROM images").fetchall()}
        problems = con.execute("SELECT file, location, reason FROM ingest_problems").fetchall()
        events = con.execute("SELECT count(*) FROM label_events").fetchall()[0][0]
        con.close()
        results[name] = (summary, images, problems, events)
    return results


def case_names() -> list[str]:
    """The case names, for parametrising (written once into a folder thrown away)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return sorted(badcorpus.write_corpus(folder))


NAMES = case_names()


def test_write_corpus_holds_at_least_30_kinds(corpus):
    assert badcorpus.kinds(corpus) >= 30
    assert {case.fmt for case in corpus.values()} == {"imagefolder", "coco", "voc", "yolo", "csv",
                                                      "labelstudio", "cvat"}


@pytest.mark.parametrize("name", NAMES)
def test_ingest_bad_corpus_records_every_broken_image(corpus, ingested, name):
    case, (summary, images, _, _) = corpus[name], ingested[name]
    for path, reason in case.unreadable.items():
        status, error, width = images[path]
        assert (status, width) == ("unreadable", None), path
        assert reason in error, (path, error)
    assert summary.unreadable == len(case.unreadable)


@pytest.mark.parametrize("name", NAMES)
def test_ingest_bad_corpus_ingests_every_good_image(corpus, ingested, name):
    case, (summary, images, _, _) = corpus[name], ingested[name]
    for path in case.readable:
        status, error, width = images[path]
        assert (status, error) == ("ok", None), path
        assert width > 0
    assert len(images) == summary.files == len(case.readable) + len(case.unreadable)


def _matches(bad: badcorpus.Bad, row: tuple) -> bool:
    file, location, reason = row
    return (file.endswith(bad.file) and bad.reason in reason
            and (location or "").startswith(bad.location or ""))


@pytest.mark.parametrize("name", NAMES)
def test_ingest_bad_corpus_records_every_bad_annotation(corpus, ingested, name):
    case, (summary, _, problems, events) = corpus[name], ingested[name]
    for bad in case.problems:
        assert any(_matches(bad, row) for row in problems), (bad, problems)
    assert len(problems) == len(case.problems), problems  # nothing reported twice or unplanned
    assert all(reason.strip() for _, _, reason in problems)
    assert events == summary.labels_added == case.labels


def run_cli(case: badcorpus.Case, db: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "core", "ingest", str(case.source), "--format", case.fmt,
               "--db", str(db), "--workers", "1"]
    if case.labels_path:
        command += ["--labels", str(case.labels_path)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("name, code", [("images_mixed", 0), ("coco_malformed_json", 0),
                                        ("images_only_broken", 1)])
def test_cli_ingest_fails_only_when_nothing_was_read(corpus, tmp_path, name, code):
    done = run_cli(corpus[name], tmp_path / "catalog.duckdb")
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert "Skipped or flagged" in done.stdout  # the user sees what was skipped and why


def test_badcorpus_main_writes_and_lists_the_cases(tmp_path, capsys):
    assert badcorpus.main([str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(NAMES) + 1 and lines[-1].endswith(f"in {len(NAMES)} cases")
