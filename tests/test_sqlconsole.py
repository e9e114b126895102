"""The read-only SQL console (core.sqlconsole): reads of the catalog run and return a table;
every write, file read, side effect or hidden second statement is refused and changes nothing."""
from __future__ import annotations

import re

import pytest

from core import catalog, sqlconsole, users

SETUP = """INSERT INTO datasets (name, root) VALUES ('pets', '/data/pets');
INSERT INTO meta VALUES ('colour', 'blue');"""


@pytest.fixture
def con(tmp_path):
    con = catalog.open_catalog(tmp_path / "catalog.duckdb", program="pytest")
    con.execute(SETUP)
    (tmp_path / "secret.csv").write_text("token\nhunter2\n")
    yield con
    con.close()


def state(con) -> tuple:
    """What a refused statement must leave unchanged."""
    return catalog._one(con.execute("""SELECT (SELECT count(*) FROM datasets),
        (SELECT count(*) FROM meta), (SELECT count(*) FROM duckdb_tables()),
        (SELECT count(*) FROM duckdb_databases()), (SELECT count(*) FROM jobs)"""))


def test_run_query_select_returns_rows(con):
    result = sqlconsole.run_query(con, "SELECT name, root FROM datasets")
    assert result.frame.to_dict("records") == [{"name": "pets", "root": "/data/pets"}]
    assert not result.truncated


@pytest.mark.parametrize("sql", [
    "WITH n AS (SELECT name FROM datasets) SELECT upper(name) AS name FROM n",
    "FROM datasets SELECT name", "DESCRIBE datasets", "SUMMARIZE meta", "SHOW TABLES",
    "SELECT count(*) FROM audit_log", "SELECT * FROM range(3)",
    "SELECT table_name FROM information_schema.tables LIMIT 1"])
def test_run_query_other_reads_allowed(con, sql):
    assert len(sqlconsole.run_query(con, sql).frame) >= 1


def test_run_query_row_limit(con):
    result = sqlconsole.run_query(con, "SELECT * FROM range(2500)", max_rows=1000)
    assert len(result.frame) == 1000 and result.truncated
    assert result.frame["range"].iloc[-1] == 999


@pytest.mark.parametrize("sql,reason", [
    ("INSERT INTO meta VALUES ('k', 'v')", "INSERT, not SELECT"),
    ("UPDATE datasets SET root = '/etc'", "UPDATE, not SELECT"),
    ("DELETE FROM meta", "DELETE, not SELECT"),
    ("DROP TABLE meta", "DROP, not SELECT"),
    ("CREATE TABLE t AS SELECT 1", "CREATE, not SELECT"),
    ("COPY datasets TO '{tmp}/out.csv'", "COPY, not SELECT"),
    ("ATTACH '{tmp}/other.duckdb' AS other", "ATTACH, not SELECT"),
    ("PRAGMA enable_checkpoint_on_shutdown", "PRAGMA, not SELECT"),
    ("SET threads = 1", "SET, not SELECT"),
    ("INSTALL httpfs", "LOAD, not SELECT"),
    ("LOAD json", "LOAD, not SELECT"),
    ("EXPLAIN ANALYZE DELETE FROM meta", "EXPLAIN, not SELECT"),
    ("CALL pragma_version()", "CALL, not SELECT"),
    ("SELECT 1; DROP TABLE meta", "the text holds 2"),
    ("SELECT * FROM meta;\nDELETE FROM meta", "the text holds 2"),
    ("SELECT 1; SELECT 2", "the text holds 2"),
    ("SELECT * FROM read_csv('{tmp}/secret.csv')", "read_csv() cannot run here"),
    ("SELECT * FROM '{tmp}/secret.csv'", "is not a table or view of the catalog"),
    ("DESCRIBE '{tmp}/secret.csv'", "is not a table or view of the catalog"),
    ("SELECT * FROM glob('/*')", "glob() cannot run here"),
    ("SELECT * FROM query('SELECT 1')", "query() cannot run here"),
    ("SELECT nextval('seq_job')", "nextval() changes"),
    ("SELECT name, password_hash FROM users", "not open to the console"),
    ("SELECT * FROM datasets d JOIN main.users u ON true", "not open to the console"),
    ("SELECT * FROM other.main.meta", "not the database 'other'"),
    ("SELEC name FROM datasets", "not valid SQL"),
])
def test_run_query_refuses_anything_but_a_read(con, tmp_path, sql, reason):
    before = state(con)
    with pytest.raises(sqlconsole.QueryRefused, match=re.escape(reason)):
        sqlconsole.run_query(con, sql.format(tmp=tmp_path))
    assert state(con) == before
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()


def test_run_query_rolled_back_and_cursor_closed(con):
    sqlconsole.run_query(con, "SELECT * FROM meta")
    con.execute("INSERT INTO meta VALUES ('after', 'console')")  # the main connection still writes
    assert catalog.get_meta(con, "after") == "console"


def test_run_query_timeout_stops_a_long_query(con):
    with pytest.raises(sqlconsole.QueryFailed, match="longer than 0.2 s"):
        sqlconsole.run_query(con, "SELECT count(*) FROM range(100000000000) a", timeout=0.2)
    assert len(sqlconsole.run_query(con, "SELECT 1 AS one").frame) == 1  # the catalog still answers


def test_run_query_error_reported(con):
    with pytest.raises(sqlconsole.QueryFailed, match="no_such_column"):
        sqlconsole.run_query(con, "SELECT no_such_column FROM datasets")


def test_users_table_hidden_even_with_accounts(con):
    users.add_user(con, "root", "admin", by=None, password="a long password")
    names = sqlconsole.run_query(con, "SELECT table_name FROM duckdb_tables()", user="root").frame
    assert "users" in set(names["table_name"])  # its name is no secret; its rows are
    with pytest.raises(sqlconsole.QueryRefused):
        sqlconsole.run_query(con, "SELECT * FROM users", user="root")


def test_run_query_needs_a_lead_once_accounts_exist(con):
    users.add_user(con, "root", "admin", by=None, password="a long password")
    users.add_user(con, "anna", "annotator", by="root", password="a long password")
    users.add_user(con, "leo", "lead", by="root", password="a long password")
    with pytest.raises(users.PermissionDenied, match="needs the lead role"):
        sqlconsole.run_query(con, "SELECT 1", user="anna")
    assert len(sqlconsole.run_query(con, "SELECT 1 AS one", user="leo").frame) == 1


def test_sql_page_runs_a_read_and_refuses_a_write(con, monkeypatch):
    from tests.test_users import open_app

    db = catalog._one(con.execute("""SELECT path FROM duckdb_databases()
        WHERE database_name = current_database()"""))[0]
    at = open_app(db, monkeypatch)  # no accounts: single-user mode
    at.switch_page("pages/sql.py").run()
    at.text_area(key="sql_text").input("SELECT name FROM datasets")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.dataframe[0].value["name"].tolist() == ["pets"]
    at.text_area(key="sql_text").input("DELETE FROM datasets")
    at.button[0].click().run()
    assert at.error[0].value.startswith("Refused: only reads run here")
    assert catalog._one(con.execute("SELECT count(*) FROM datasets"))[0] == 1
