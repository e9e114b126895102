"""A short load run (bench/load.py): four dashboard sessions browsing pages and saving class
edits at once on one catalog, without a single error; every save is in the catalog."""
from __future__ import annotations

import sys
from pathlib import Path

from core import catalog
from tests.test_edits import build_cells, build_pets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import load  # noqa: E402


def test_run_load_four_sessions_no_error(tmp_path, monkeypatch):
    con = build_cells(tmp_path)
    build_pets(con, tmp_path)
    con.close()
    monkeypatch.setenv("SIEVE_DB", str(tmp_path / "catalog.duckdb"))
    logs = load.run_load(tmp_path / "catalog.duckdb", sessions=4, seconds=10, dataset="pets",
                         min_actions=4)
    assert [log.errors for log in logs] == [[]] * 4
    found = load.summary(logs)
    assert found["errors"] == 0 and found["page views"] >= 4 * 4 and found["saves"] >= 4 * 2
    con = catalog.open_catalog(tmp_path / "catalog.duckdb")  # as the sessions' connection is
    saved = con.execute("SELECT count(*) FROM edit_actions a JOIN annotators USING "
                        "(annotator_id) WHERE name LIKE 'load%'").fetchall()[0][0]
    con.close()
    assert 1 <= saved <= found["saves"]
